"""Writing keras-quant's files so that a failure loses nothing.

Every file keras-quant writes goes through `write_atomically`: a
temporary file in the destination's folder, flushed to disk, renamed over
the destination only when complete. A failed export therefore never
leaves a partial file and never replaces a good one.
"""

import contextlib
import os
import tempfile

import numpy as np

from keras_quant.errors import UnwritablePathError

TFLITE_SUFFIX = ".tflite"


def check_filepath(filepath):
    path = os.fspath(filepath)
    if not path.endswith(TFLITE_SUFFIX):
        raise ValueError(
            f"Expected `filepath` to end in '{TFLITE_SUFFIX}'. "
            f"Received: filepath={path!r}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".kq-check-"):
            pass
    except OSError as error:
        raise UnwritablePathError(
            f"Cannot write to folder {folder!r} ({error.strerror or error}). "
            "Choose a `filepath` in a folder you can write to."
        ) from error
    return path


def write_atomically(filepath, data):
    """Writes `data` to `filepath` through a temporary file and a rename.

    The file gets the permissions a plain `open(filepath, "wb")` would give
    (0666 less the umask), not the private ones of a temporary file.
    """
    folder = os.path.dirname(os.path.abspath(filepath))
    handle, temporary = tempfile.mkstemp(
        dir=folder, prefix=".kq-", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, filepath)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_default(value):
    """`json.dumps` help for NumPy scalars."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Cannot serialize {type(value).__name__}")
