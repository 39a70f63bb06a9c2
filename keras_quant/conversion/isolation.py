"""Running a step that may crash natively in a child process.

A converter or quantizer written in C++ can abort or segfault (TF 2.21's
calibrator does so on batch-1 LSTM models); in the user's process that is
the end of training. `run_isolated` runs a function in a child Python
process (`python -m keras_quant.conversion.isolation`, not
`multiprocessing`, which would re-import the user's script).

The child is started once and kept: each call sends it the function (by
module and name) and its arguments, pickled through a pipe, and reads the
result back the same way, so what the child imported (ai-edge-quantizer,
LiteRT, TensorFlow for another backend) is imported once per process, not
once per export (decision D48). One child is kept per `environment`. A
crash, a timeout or a child that cannot start becomes an `ExportError` and
ends that child; the next call starts a new one. An exception raised by
the function is raised again here.

A hung child is found by its CPU time (decision D52): one that uses none
for `stall` seconds (30 by default) while it should be working, because
it waits on a lock, sleeps or was stopped, is ended then, not at the
`timeout`, which only bounds a child that keeps computing. Jobs are
written by a thread, so a child that stopped reading cannot block this
process either. Where the CPU time cannot be read (no `/proc`), the
timeout alone applies.

`submit` sends a job and returns at once; the child answers jobs in the
order they were sent, so a caller can send several and work meanwhile
(`export_many` sends its engine modes first, then converts its float
modes while the child quantizes, decision D53).

Nothing is written to disk, and the child cannot outlive this process:
it reads its next job from a pipe whose only writer is this process, and
ends when the pipe closes, as it does when this process ends in any way
(`kill -9` included). A job still running then ends when it tries to
send its result.

Example:

>>> run_isolated(sum, [1, 2, 3])
6
"""

import collections
import importlib
import os
import pickle
import queue
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

from keras_quant.errors import ExportError

# Seconds a child may run one job before it is stopped.
TIMEOUT = 900

# Seconds a child may use no CPU time during a job before it is judged
# hung and stopped.
STALL = 30

# Seconds between two looks at a working child.
_LOOK_EVERY = 0.5

# Each message: its length (8 bytes, big-endian), then the pickle.
_HEADER = struct.Struct(">Q")

# The running children, by the environment they were started with.
_CHILDREN = {}


def run_isolated(
    function, *args, timeout=TIMEOUT, stall=STALL, environment=None
):
    """`function(*args)`, computed in a child process.

    Args:
        function: a module-level function (found again by module and name
            in the child, which imports neither Keras nor TensorFlow unless
            that module does).
        *args: picklable arguments.
        timeout: seconds before the child is stopped. Defaults to 900.
        stall: seconds the child may use no CPU time before it is judged
            hung and stopped. Defaults to 30.
        environment: variables to set in the child's environment (e.g.
            `{"KERAS_BACKEND": "tensorflow"}`), over this process's.

    Raises:
        ExportError: the child crashed, timed out or could not start; the
            message names the signal and ends with what the child printed;
            or it hung.
        Exception: whatever `function` raised, raised again.
    """
    job = submit(function, *args, environment=environment)
    return job.result(timeout=timeout, stall=stall)


def submit(function, *args, environment=None):
    """Sends `function(*args)` to the kept child and returns at once: a
    `Job`, whose `result()` waits for it. The child runs jobs in the order
    they were sent, so a caller can send several and work meanwhile
    (`export_many` converts its float modes while the engine quantizes).

    >>> first, second = submit(sum, [1, 2]), submit(sum, [3, 4])
    >>> second.result(), first.result()
    (7, 3)
    """
    job = Job(function, args, environment)
    job.send()
    return job


class Job:
    """One call sent to a child process; `result()` waits for it. A job
    whose child ended before answering it (another job crashed it, or
    timed out) is sent again to a new child when its result is asked."""

    def __init__(self, function, args, environment=None):
        self.function, self.args = function, args
        self.environment = environment
        self.child = None  # the child it was sent to, until it answers
        self.answer = None  # (failed, value)
        self.printed_from = 0  # where the child's log stood when sent

    def send(self):
        self.child = prepare(self.environment)
        self.child.send(self)

    def result(self, timeout=TIMEOUT, stall=STALL):
        """What the function returned; raises what it raised, or
        `ExportError` if the child crashed, hung or took longer than
        `timeout` seconds (then it is ended and replaced)."""
        while self.answer is None:
            if self.child is None:
                self.send()
            child = self.child
            try:
                child.answer(self, _Watch(child, timeout, stall))
            except BaseException:  # a timeout, a hang, Ctrl-C: a fresh child
                _forget(child)
                raise
        failed, value = self.answer
        if failed:
            raise value
        return value


def prepare(environment=None, modules=()):
    """The kept child for `environment`, started if there is none, which
    imports `modules` as it starts: a caller that will need them soon
    starts the child first and works meanwhile (the engine's route
    converts the float model while ai-edge-quantizer loads)."""
    key = _key(environment)
    child = _CHILDREN.get(key)
    if child is not None and not child.alive():
        _forget(child)  # it ended between jobs; what it was sent goes again
        child = None
    if child is None:
        child = _CHILDREN[key] = _Child(environment, modules)
    return child


def child_pid(environment=None):
    """The process id of the kept child for `environment`, or None if
    none runs.

    >>> child_pid({"KERAS_QUANT_EXAMPLE": "never started"}) is None
    True
    """
    child = _CHILDREN.get(_key(environment))
    return child.process.pid if child is not None and child.alive() else None


def _key(environment):
    return tuple(sorted((environment or {}).items()))


def _forget(child):
    """Ends `child` and stops keeping it: the next job starts a new one."""
    for key, kept in list(_CHILDREN.items()):
        if kept is child:
            del _CHILDREN[key]
    child.stop()


def stop_children():
    """Ends every kept child (they also end with this process)."""
    for child in list(_CHILDREN.values()):
        _forget(child)


class _Child:
    """One kept child process, the pipes to it, and the jobs it was sent
    and has not answered, in order.

    A writer thread feeds the job pipe, so that sending a job larger than
    a pipe holds never waits for the child to read it: this process goes
    on while the child works.
    """

    def __init__(self, environment, modules=()):
        job_read, job_write = os.pipe()
        result_read, result_write = os.pipe()
        self.log = tempfile.TemporaryFile()  # what it prints; no name
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(job_read)]
                + [str(result_write), *modules],
                pass_fds=(job_read, result_write),
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=self.log,
                env={**os.environ, **(environment or {})},
            )
        except OSError as error:
            os.close(job_write)
            os.close(result_read)
            raise ExportError(f"The child process cannot start: {error}")
        finally:
            os.close(job_read)
            os.close(result_write)
        # Unbuffered: `select` must see every answer not read yet, and a
        # buffered reader could hold the next one already.
        self.results = os.fdopen(result_read, "rb", buffering=0)
        self.sent = collections.deque()  # jobs not answered yet, in order
        self.outbox = queue.SimpleQueue()  # messages not written yet
        self.writer = threading.Thread(
            target=_write_messages,
            args=(job_write, self.outbox),
            name="keras-quant child writer",
            daemon=True,
        )
        self.writer.start()

    def alive(self):
        return self.process.poll() is None

    def send(self, job):
        message = pickle.dumps(
            (job.function.__module__, job.function.__qualname__, job.args)
        )
        job.printed_from = self.log.seek(0, os.SEEK_END)
        self.sent.append(job)
        self.outbox.put(_HEADER.pack(len(message)) + message)

    def answer(self, job, watch):
        """Reads answers, in the order their jobs were sent, until `job`
        has one; raises `ExportError` if the child hangs or runs out of
        time (`watch`). If the child ends, the first job not answered
        gets the crash as its answer, and the others are sent again."""
        while job.answer is None and job.child is self:
            if not select.select([self.results], [], [], _LOOK_EVERY)[0]:
                watch.check(job.function)
                continue
            message = _receive(self.results)
            first = self.sent.popleft()
            first.child = None
            if message is None:
                crash = self._crash_message(first.function, first.printed_from)
                first.answer = (True, ExportError(crash))
                _forget(self)
                return
            first.answer = pickle.loads(message)

    def stop(self):
        """Ends the child and waits; the jobs it did not answer are sent
        again to the next child when their result is asked."""
        if self.alive():
            self.process.kill()  # first: a write blocked on it ends
        self.process.wait()
        self.outbox.put(None)
        self.writer.join()
        for job in self.sent:
            job.child = None
        self.sent.clear()
        self.results.close()
        self.log.close()

    def _crash_message(self, function, printed_from):
        code = self.process.wait()
        how = (
            f"was killed by {signal.Signals(-code).name}"
            if code < 0
            else f"exited with code {code}"
        )
        self.log.seek(printed_from)
        printed = self.log.read().decode(errors="replace").strip()
        tail = " | ".join(printed.splitlines()[-3:])
        return (
            f"The child process running {function.__qualname__} {how}; this "
            f"process is unharmed. Last lines it printed: {tail or '(none)'}"
        )


def _write_messages(descriptor, outbox):
    """The writer thread: writes each message of `outbox` whole to the
    job pipe, until None; then closes the pipe."""
    try:
        while (message := outbox.get()) is not None:
            view = memoryview(message)
            while view:
                view = view[os.write(descriptor, view) :]
    except OSError:
        pass  # the child ended: its exit code says how
    finally:
        os.close(descriptor)


class _Watch:
    """Whether a child at work is still fine: within its `timeout`, and
    using CPU time at least once every `stall` seconds."""

    def __init__(self, child, timeout, stall):
        self.child = child
        self.timeout, self.stall = timeout, stall
        self.started = self.moved = time.monotonic()
        self.cpu = _cpu_seconds(child.process.pid)

    def check(self, function):
        """Raises `ExportError` naming `function` if the child hung or
        ran out of time."""
        now = time.monotonic()
        if now - self.started > self.timeout:
            raise ExportError(
                f"{function.__qualname__} did not finish in {self.timeout} s; "
                "it was stopped."
            )
        cpu = _cpu_seconds(self.child.process.pid)
        if cpu is None or cpu != self.cpu:
            self.cpu, self.moved = cpu, now
        elif now - self.moved > self.stall:
            raise ExportError(
                f"The child process running {function.__qualname__} hung: it "
                f"used no CPU time for {self.stall} s (waiting on a lock, or "
                "stopped). It was ended; the next export starts a new one."
            )


def _cpu_seconds(pid):
    """The CPU time process `pid` used so far (all its threads), or None
    where it cannot be read (no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            fields = stream.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    user, system = int(fields[11]), int(fields[12])  # fields 14 and 15
    return (user + system) / os.sysconf("SC_CLK_TCK")


def _send(stream, payload):
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _receive(stream):
    """The next message's bytes, or None at the end of the stream."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    return _read_exactly(stream, _HEADER.unpack(header)[0])


def _read_exactly(stream, size):
    """`size` bytes of `stream`, or None if it ends before; an unbuffered
    stream may return fewer bytes per read."""
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _serve(job_fd, result_fd, modules=()):
    """The child: imports `modules`, then runs jobs until the parent
    closes the pipe."""
    for module in modules:
        importlib.import_module(module)
    jobs, results = os.fdopen(job_fd, "rb"), os.fdopen(result_fd, "wb")
    while (job := _receive(jobs)) is not None:
        module, name, args = pickle.loads(job)
        function = importlib.import_module(module)
        for part in name.split("."):
            function = getattr(function, part)
        try:
            outcome = (False, function(*args))
        except Exception as error:  # noqa: BLE001  raised again in the parent
            outcome = (True, error)
        try:
            answer = pickle.dumps(outcome)
        except Exception as error:  # noqa: BLE001  say so, stay alive
            answer = pickle.dumps(
                (True, ExportError(f"{name}'s result cannot be sent: {error}"))
            )
        try:
            _send(results, answer)
        except BrokenPipeError:
            return  # the parent is gone


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
