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
`timeout`, which only bounds a child that keeps computing. Sending the
job is watched the same way, so a child that stopped reading cannot
block this process either. Where the CPU time cannot be read (no
`/proc`), the timeout alone applies.

Nothing is written to disk, and the child cannot outlive this process:
it reads its next job from a pipe whose only writer is this process, and
ends when the pipe closes, as it does when this process ends in any way
(`kill -9` included). A job still running then ends when it tries to
send its result.

Example:

>>> run_isolated(sum, [1, 2, 3])
6
"""

import importlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
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
    key = _key(environment)
    child = prepare(environment)
    try:
        failed, value = child.run(function, args, _Watch(child, timeout, stall))
    except BaseException:  # a crash, a timeout, Ctrl-C: a fresh child next
        _CHILDREN.pop(key, None)
        child.stop()
        raise
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
    if child is None or not child.alive():
        child = _CHILDREN[key] = _Child(environment, modules)
    return child


def _key(environment):
    return tuple(sorted((environment or {}).items()))


def stop_children():
    """Ends every kept child (they also end with this process)."""
    for child in _CHILDREN.values():
        child.stop()
    _CHILDREN.clear()


class _Child:
    """One kept child process and the pipes to it."""

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
            raise ExportError(f"The child process cannot start: {error}")
        finally:
            os.close(job_read)
            os.close(result_write)
        self.jobs = os.fdopen(job_write, "wb")
        self.results = os.fdopen(result_read, "rb")

    def alive(self):
        return self.process.poll() is None

    def run(self, function, args, watch):
        """`(failed, value)` of one job; raises `ExportError` if the child
        dies, hangs or does not answer in time (`watch`)."""
        printed_from = self.log.seek(0, os.SEEK_END)
        job = (function.__module__, function.__qualname__, args)
        try:
            self._send(pickle.dumps(job), function, watch)
        except BrokenPipeError:
            pass  # it died before reading: its exit code says how
        while not select.select([self.results], [], [], _LOOK_EVERY)[0]:
            watch.check(function)
        answer = _receive(self.results)
        if answer is None:
            raise ExportError(self._crash_message(function, printed_from))
        return pickle.loads(answer)

    def _send(self, payload, function, watch):
        """Writes one message, a slice at a time as the child reads, so a
        child that stopped reading is seen by `watch`, not waited for."""
        message = memoryview(_HEADER.pack(len(payload)) + payload)
        descriptor = self.jobs.fileno()
        os.set_blocking(descriptor, False)
        while message:
            if not select.select([], [descriptor], [], _LOOK_EVERY)[1]:
                watch.check(function)
                continue
            try:
                message = message[os.write(descriptor, message) :]
            except BlockingIOError:
                continue

    def stop(self):
        """Ends the child (closing its pipe, then killing it) and waits."""
        for stream in (self.jobs, self.results):
            try:
                stream.close()
            except OSError:
                pass
        if self.alive():
            self.process.kill()
        self.process.wait()
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
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    payload = stream.read(_HEADER.unpack(header)[0])
    return payload if len(payload) == _HEADER.unpack(header)[0] else None


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
