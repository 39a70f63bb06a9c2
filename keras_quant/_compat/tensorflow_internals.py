"""Private parts of TensorFlow that keras-quant uses.

Freezing a concrete function's variables into constants (the converter's
own first step, public only through a SavedModel round trip), and the
converter's error class.
"""

from keras_quant._compat import versions

versions.check("tensorflow")

try:
    from tensorflow.lite.python.convert_phase import ConverterError
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2 as freeze,
    )
except ImportError as error:  # pragma: no cover - depends on TensorFlow
    raise versions.broken("TensorFlow's converter internals", error) from error

__all__ = ["ConverterError", "freeze"]
