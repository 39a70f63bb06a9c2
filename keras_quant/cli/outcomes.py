"""How a `keras-quant` command ends: its exit codes, the two failures
every command may raise, and which exit code any other exception earns
(`ENDINGS`)."""

from keras_quant.errors import ExportError
from keras_quant.errors import KerasQuantError

EXIT_CODES = {"ok": 0, "failed": 1, "usage": 2, "interrupted": 130}


class UsageError(Exception):
    """The command cannot run as given (exit code 2)."""


class CheckFailed(Exception):
    """The command ran and its check failed (exit code 1)."""


# How an exception ends a command: the kind of the first row it is an
# instance of. Input the command cannot use is a usage error; work that
# ran and failed is a failure, and so is anything unexpected (a bug).
ENDINGS = (
    (CheckFailed, "failed"),
    (ExportError, "failed"),
    (UsageError, "usage"),
    (KerasQuantError, "usage"),  # no ranges, NaN ranges, unwritable path
    (ValueError, "usage"),
    (TypeError, "usage"),
    (OSError, "usage"),  # a file or folder that cannot be read or written
    (Exception, "unexpected"),
)

# The exit code of each kind of ending.
KIND_CODES = {"failed": "failed", "usage": "usage", "unexpected": "failed"}


def ending(error):
    """`error`'s kind: "failed", "usage" or "unexpected"."""
    return next(kind for types, kind in ENDINGS if isinstance(error, types))


def exit_code(kind):
    """The exit code of an ending of `kind`."""
    return EXIT_CODES[KIND_CODES[kind]]
