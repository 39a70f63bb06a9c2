"""Exceptions raised by keras-quant.

Every error a user may want to catch derives from `KerasQuantError`, so
`except keras_quant.KerasQuantError` catches them all; each one also derives
from the built-in exception it refines (`ValueError`, `RuntimeError`, ...), so
code written against the built-ins keeps working.
"""


class KerasQuantError(Exception):
    """Base class of every keras-quant error."""


class UnsupportedModelError(KerasQuantError, TypeError):
    """The object is not a model keras-quant can place observers in.

    Example: a subclassed `keras.Model`, whose graph is hidden in Python code.
    """


class NotCalibratedError(KerasQuantError, RuntimeError):
    """A mode that needs activation ranges was asked of a model without them.

    Modelled on scikit-learn's `NotFittedError`. The message names the
    quantization points that have no range yet.
    """


class NonFiniteActivationError(KerasQuantError, ValueError):
    """Observers saw NaN or infinite activations while collecting ranges."""


class ExportError(KerasQuantError, RuntimeError):
    """The TFLite model could not be written or does not meet its mode."""


class UnwritablePathError(KerasQuantError, OSError):
    """The export destination cannot be written (checked before converting)."""
