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


def _converter_internals():
    """The converter's calibration and quantization modules, imported on
    first use (the statistics route only)."""
    try:
        from tensorflow.lite.python import convert
        from tensorflow.lite.python.optimize import calibrator
        from tensorflow.lite.tools import flatbuffer_utils
    except ImportError as error:  # pragma: no cover - depends on TensorFlow
        raise versions.broken("TensorFlow's calibration API", error) from error
    return convert, calibrator, flatbuffer_utils


def calibrate_only(converter):
    """Converts to a float model whose tensors carry min/max statistics
    (the converter's `_experimental_calibrate_only`)."""
    converter._experimental_calibrate_only = True
    return converter.convert()


def mlir_quantize(calibrated, denylisted_nodes=()):
    """Quantizes a model with statistics to int8, float I/O, leaving the
    `denylisted_nodes` ops float."""
    convert, _, _ = _converter_internals()
    return convert.mlir_quantize(
        calibrated, denylisted_nodes=set(denylisted_nodes)
    )


def quantize_16x8(calibrated):
    """Quantizes a model with statistics to int16 activations and int8
    weights (int64 biases), float I/O, with the calibrator's quantizer."""
    import numpy as np

    _, calibrator, _ = _converter_internals()
    wrapper = calibrator.Calibrator(calibrated)._calibrator
    return bytes(
        wrapper.QuantizeModel(
            np.dtype("float32").num,
            np.dtype("float32").num,
            True,
            np.dtype("int16").num,
            np.dtype("int64").num,
            False,
            False,
        )
    )


def read_flatbuffer(tflite):
    """A `.tflite` as the schema's mutable object tree."""
    _, _, flatbuffer_utils = _converter_internals()
    return flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))


def write_flatbuffer(model):
    """The bytes of an object tree from `read_flatbuffer`."""
    _, _, flatbuffer_utils = _converter_internals()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def opcode_name(model, opcode_index):
    """The builtin op name of an opcode index of an object tree."""
    _, _, flatbuffer_utils = _converter_internals()
    return flatbuffer_utils.opcode_to_name(model, opcode_index)
