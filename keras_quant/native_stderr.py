"""Hiding what native code writes to the process's stderr.

TensorFlow's C++ logs lines at import (oneDNN, CUDA, CPU features), and
TFLite's quantizer prints a "fully_quantize: ..." line, straight to file
descriptor 2, where Python's `sys.stderr` redirection does not reach and
`TF_CPP_MIN_LOG_LEVEL` no longer helps (TF 2.21). `captured` sends that
descriptor to a temporary file for the duration of a block, and shows what
was written if the block raises, so no error message is lost.
`python_only` discards native writes and keeps Python's, for the command
line.
"""

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def captured(enabled=True):
    """Sends file descriptor 2 to a temporary file inside the block.

    Args:
        enabled: if False, does nothing.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        else:
            _restore(saved)


@contextlib.contextmanager
def captured_text():
    """Sends file descriptor 2 to a temporary file inside the block, which
    reads it with the callable it is given; nothing is shown afterwards.
    For native code that prints its reason and raises a bare error (TFLM:
    "Didn't find op for builtin opcode 'GELU'", then "failed to allocate
    tensors").

    >>> with captured_text() as printed:
    ...     _ = os.write(2, b"from C")
    ...     printed()
    'from C'
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)

        def printed():
            capture.seek(0)
            return capture.read().decode(errors="replace")

        try:
            yield printed
        finally:
            _restore(saved)


def _restore(saved):
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


@contextlib.contextmanager
def python_only():
    """Inside the block, only Python's `sys.stderr` reaches the terminal.

    Native code's writes to file descriptor 2 (TensorFlow's device and
    graph logs, LiteRT's delegate notice) are discarded; `sys.stderr` is
    re-pointed at the original stream, so Python's messages, warnings and
    progress bars still show. For the command line.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    discard = os.open(os.devnull, os.O_WRONLY)
    os.dup2(discard, 2)
    os.close(discard)
    original = sys.stderr
    forwarding = _Forwarding(os.dup(saved))
    sys.stderr = forwarding
    try:
        yield
    finally:
        forwarding.close_own()
        sys.stderr = original
        _restore(saved)


class _Forwarding:
    """`sys.stderr` inside `python_only`: writes to the original stderr
    descriptor while the block runs and, once it ended, to whatever
    `sys.stderr` is then. A logging handler created inside the block (it
    keeps the `sys.stderr` of that moment) so never writes to a closed
    file."""

    def __init__(self, descriptor):
        self._own = os.fdopen(
            descriptor, "w", buffering=1, errors="backslashreplace"
        )

    def close_own(self):
        self._own.flush()
        self._own.close()

    def _target(self):
        if not self._own.closed:
            return self._own
        return sys.stderr if sys.stderr is not self else sys.__stderr__

    def write(self, text):
        return self._target().write(text)

    def flush(self):
        self._target().flush()

    def __getattr__(self, name):  # fileno, isatty, encoding, ...
        return getattr(self._target(), name)
