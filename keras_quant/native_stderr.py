"""Hiding what native code writes to the process's stderr.

TensorFlow's C++ logs lines at import (oneDNN, CUDA, CPU features), and
TFLite's quantizer prints a "fully_quantize: ..." line, straight to file
descriptor 2, where Python's `sys.stderr` redirection does not reach and
`TF_CPP_MIN_LOG_LEVEL` no longer helps (TF 2.21). `captured` sends that
descriptor to a temporary file for the duration of a block, and shows what
was written if the block raises, so no error message is lost.
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


def _restore(saved):
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
