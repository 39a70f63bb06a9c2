"""A step that crashes natively costs an ExportError, not the process."""

import ctypes
import os
import signal
import subprocess
import sys
import time

import pytest

from keras_quant.conversion import engine
from keras_quant.conversion import isolation
from keras_quant.conversion.isolation import run_isolated
from keras_quant.conversion.isolation import submit
from keras_quant.errors import ExportError


def test_a_native_crash_becomes_an_export_error_and_this_process_lives():
    with pytest.raises(ExportError, match="SIGSEGV; this process is unharmed"):
        run_isolated(ctypes.string_at, 0)  # reads address 0: a real segfault
    assert run_isolated(sum, [1, 2]) == 3  # and the next call works


def test_an_abort_is_named_with_its_signal():
    with pytest.raises(ExportError, match="SIGABRT"):
        run_isolated(os.abort)


def test_the_functions_own_error_is_raised_again():
    with pytest.raises(ExportError, match="not a TFLite model"):
        run_isolated(engine.quantize, b"not a model", {}, None, "int8")


def test_one_child_serves_every_call_of_a_process():
    first = run_isolated(os.getpid)
    assert first != os.getpid()
    assert run_isolated(os.getpid) == first


def test_a_job_past_its_timeout_ends_its_child_and_the_next_call_works():
    before = run_isolated(os.getpid)
    with pytest.raises(ExportError, match="did not finish in 1 s"):
        run_isolated(time.sleep, 30, timeout=1)
    assert not _running(before)
    assert run_isolated(sum, [2, 3]) == 5


def test_a_job_that_uses_no_cpu_is_judged_hung_long_before_its_timeout():
    before = run_isolated(os.getpid)
    with pytest.raises(ExportError, match="hung: it used no CPU time for 1 s"):
        run_isolated(time.sleep, 600, stall=1)  # waits, as on a lock
    assert not _running(before)
    assert run_isolated(sum, [2, 3]) == 5


def test_a_stopped_child_cannot_block_sending_it_a_large_job():
    # The job is larger than a pipe holds: unwatched, the write would
    # wait for a reader that never reads.
    stopped = run_isolated(os.getpid)
    os.kill(stopped, signal.SIGSTOP)
    with pytest.raises(ExportError, match="hung"):
        run_isolated(len, b"x" * 10_000_000, stall=1)
    assert not _running(stopped)
    assert run_isolated(len, b"x" * 10_000_000) == 10_000_000


def test_a_child_that_keeps_computing_is_not_judged_hung():
    count = 150_000_000  # a few seconds of CPU, more than `stall`
    assert run_isolated(sum, range(count), stall=1) == count * (count - 1) // 2


def test_jobs_sent_ahead_are_answered_each_with_its_own_result():
    jobs = [submit(sum, [n, n]) for n in range(5)]
    assert [job.result() for job in reversed(jobs)] == [8, 6, 4, 2, 0]


def test_sending_a_large_job_does_not_wait_for_the_child_to_read_it():
    child = isolation.prepare()
    os.kill(child.process.pid, signal.SIGSTOP)  # it reads nothing now
    job = submit(len, b"x" * 10_000_000)  # returns: a thread writes it
    assert job.answer is None
    os.kill(child.process.pid, signal.SIGCONT)
    assert job.result() == 10_000_000


def test_a_crash_fails_its_own_job_and_the_next_is_sent_again():
    crashing, after = submit(os.abort), submit(sum, [4, 5])
    with pytest.raises(ExportError, match="SIGABRT"):
        crashing.result()
    assert after.result() == 9


def _running(pid):
    """Whether process `pid` runs (a zombie waiting to be reaped does
    not)."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_the_child_ends_when_its_parent_is_killed(tmp_path):
    # kill -9 of the exporting process leaves no child and no file behind.
    script = (
        "import os, sys, time\n"
        "from keras_quant.conversion.isolation import run_isolated\n"
        "print(run_isolated(os.getpid), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    child = int(parent.stdout.readline())
    assert _running(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(child)
    assert list(tmp_path.iterdir()) == []
