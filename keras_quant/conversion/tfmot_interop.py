"""Exporting tf_keras models prepared with tensorflow-model-optimization.

`tfmot.quantization.keras.quantize_model` works on tf_keras (Keras 2)
models only. Such a model already carries its quantization ranges (fake-
quant ops), so `keras_quant.export` converts it directly, in the same modes
and with the same checks and report as a Keras 3 model. tfmot itself is
never imported here: importing it switches TensorFlow to legacy Keras.
"""

import tensorflow as tf

from keras_quant.conversion.converter import configure
from keras_quant.errors import ExportError
from keras_quant.errors import NotCalibratedError
from keras_quant.modes import MODES

# Layers tfmot inserts into a model it prepared for QAT.
TFMOT_LAYERS = ("QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2")


def is_tf_keras_model(model):
    """True for a tf_keras (Keras 2) model, such as tfmot returns."""
    return type(model).__module__.startswith("tf_keras.") and hasattr(
        model, "layers"
    )


def is_quantize_aware(model):
    """True if tfmot's `quantize_model` (or `quantize_apply`) prepared it."""
    return any(type(layer).__name__ in TFMOT_LAYERS for layer in model.layers)


def convert_tf_keras(model, options, quiet):
    """Converts a tf_keras model with `options` (a `ConvertOptions`);
    returns the `.tflite` bytes.

    Raises:
        NotCalibratedError: an integer mode for a model tfmot did not
            prepare (it has no ranges).
        ExportError: `int16x8`, which tfmot's 8-bit ranges cannot give.
    """
    mode = options.mode
    spec = MODES[mode]
    if spec.activation_bits == 16:
        raise ExportError(
            f"Mode {mode.value!r} is not available for tf_keras models: "
            "tfmot trains 8-bit ranges. Use 'int8' or 'int8_only'."
        )
    if spec.needs_ranges and not is_quantize_aware(model):
        raise NotCalibratedError(
            f"Mode {mode.value!r} needs activation ranges, and this tf_keras "
            "model has none. Prepare it with "
            "`tfmot.quantization.keras.quantize_model` and train it, or "
            "rebuild it in Keras 3 and use `keras_quant.observe`."
        )
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    configure(converter, options)
    with quiet():
        return converter.convert()
