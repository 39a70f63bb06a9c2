"""Running a step that may crash natively in a child process.

A converter or quantizer written in C++ can abort or segfault (TF 2.21's
calibrator does so on batch-1 LSTM models); in the user's process that is
the end of training. `run_isolated` runs a function in a fresh Python
process started for it (`python -m keras_quant.conversion.isolation`, not
`multiprocessing`, which would re-import the user's script), passing
arguments and result by pickle through a temporary file. A crash, a
timeout or a child that cannot start becomes an `ExportError`; an
exception raised by the function is raised again here.

Example:

>>> run_isolated(sum, [1, 2, 3])
6
"""

import importlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile

from keras_quant.errors import ExportError

# Seconds a child may run before it is stopped.
TIMEOUT = 900


def run_isolated(function, *args, timeout=TIMEOUT, environment=None):
    """`function(*args)`, computed in a child process.

    Args:
        function: a module-level function (found again by module and name
            in the child, which imports neither Keras nor TensorFlow unless
            that module does).
        *args: picklable arguments.
        timeout: seconds before the child is stopped. Defaults to 900.
        environment: variables to set in the child's environment (e.g.
            `{"KERAS_BACKEND": "tensorflow"}`), over this process's.

    Raises:
        ExportError: the child crashed, timed out or could not start; the
            message names the signal and ends with what the child printed.
        Exception: whatever `function` raised, raised again.
    """
    with tempfile.TemporaryDirectory(prefix="keras-quant-") as folder:
        job, result = (os.path.join(folder, n) for n in ("job", "result"))
        with open(job, "wb") as stream:
            pickle.dump(
                (function.__module__, function.__qualname__, args), stream
            )
        try:
            done = subprocess.run(
                [sys.executable, "-m", __name__, job, result],
                capture_output=True,
                timeout=timeout,
                check=False,
                env={**os.environ, **(environment or {})},
            )
        except subprocess.TimeoutExpired as error:
            raise ExportError(
                f"{function.__qualname__} did not finish in {timeout} s; it "
                "was stopped."
            ) from error
        if done.returncode != 0 or not os.path.exists(result):
            raise ExportError(_crash_message(function, done))
        with open(result, "rb") as stream:
            failed, value = pickle.load(stream)
    if failed:
        raise value
    return value


def _crash_message(function, done):
    code = done.returncode
    how = (
        f"was killed by {signal.Signals(-code).name}"
        if code < 0
        else f"exited with code {code}"
    )
    printed = done.stderr.decode(errors="replace").strip().splitlines()
    tail = " | ".join(printed[-3:])
    return (
        f"The child process running {function.__qualname__} {how}; this "
        f"process is unharmed. Last lines it printed: {tail or '(none)'}"
    )


def _child(job, result):
    with open(job, "rb") as stream:
        module, name, args = pickle.load(stream)
    function = importlib.import_module(module)
    for part in name.split("."):
        function = getattr(function, part)
    try:
        outcome = (False, function(*args))
    except Exception as error:  # noqa: BLE001  raised again in the parent
        outcome = (True, error)
    with open(result, "wb") as stream:
        pickle.dump(outcome, stream)


if __name__ == "__main__":
    _child(*sys.argv[1:3])
