"""How a `keras-quant` command ends: its exit codes and the two failures
every command may raise."""

EXIT_CODES = {"ok": 0, "failed": 1, "usage": 2}


class UsageError(Exception):
    """The command cannot run as given (exit code 2)."""


class CheckFailed(Exception):
    """The command ran and its check failed (exit code 1)."""
