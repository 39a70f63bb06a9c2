"""kill -9 of a JAX process while it exports through its TensorFlow
child leaves no file behind: no copy of the model and its replay rows,
no partial `.tflite` (decision D52)."""

import os
import signal
import subprocess
import sys
import time

import pytest

CHILD = os.path.join(os.path.dirname(__file__), "children", "killed_export.py")
REPOSITORY = os.path.dirname(os.path.dirname(__file__))


def children_of(pid):
    """The pids of the processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_export_on_jax_leaves_no_file(tmp_path):
    pytest.importorskip("jax")  # the [backends] extra
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    output = tmp_path / "out" / "m.tflite"
    output.parent.mkdir()
    process = subprocess.Popen(
        [sys.executable, CHILD, str(output)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPOSITORY,
        env={
            **os.environ,
            "KERAS_BACKEND": "jax",
            "TMPDIR": str(temporary),
            "PYTHONPATH": REPOSITORY,
        },
    )
    try:
        assert process.stdout.readline() == "exporting\n"
        wait_for(lambda: children_of(process.pid), 60, "the TensorFlow child")
        tensorflow_child = children_of(process.pid)[0]
        # Its job runs once TensorFlow is imported: then the folder the
        # files are made in exists, and the export is under way.
        wait_for(lambda: os.listdir(temporary), 120, "the export's folder")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    wait_for(lambda: not running(tensorflow_child), 120, "the child to end")
    assert os.listdir(temporary) == []
    assert os.listdir(output.parent) == []
