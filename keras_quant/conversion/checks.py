"""Checks before and after a conversion: what a mode can hold.

Before: the model is one keras-quant can trace, `keep_float` names real
layers, constant multipliers fit in int8. After: LiteRT can prepare the
result, and an integer-only mode holds no float tensor.
"""

import keras
import numpy as np

from keras_quant.conversion import tfmot_interop
from keras_quant.conversion.graphs import layer_name
from keras_quant.conversion.graphs import unsplit
from keras_quant.errors import ExportError
from keras_quant.graph import decomposition
from keras_quant.graph import trace as graph_lib
from keras_quant.modes import MODES
from keras_quant.modes import Mode
from keras_quant.observation.observers import Observer
from keras_quant.runtime import inspection
from keras_quant.runtime import litert

# Largest max/min ratio of a constant multiplier vector. TFLite quantizes
# it per tensor to int8, so the smallest entry is rounded by up to
# `ratio / 254` of itself: 25.4 keeps that within 10 %. (Seen: a
# Normalization adapted per pixel on the digits, multipliers from 2.5 to
# 1e7, turned every output into a constant.)
MAX_MULTIPLIER_SPREAD = 25.4


def check_multipliers(model):
    """Raises `ExportError` for a constant multiplier int8 cannot hold.

    Args:
        model: an observed or QAT model.
    """
    for op in graph_lib.trace(model).ops:
        layer = unsplit(op.layer)
        multiplier = decomposition.constant_multiplier(layer)
        if multiplier is None:
            continue
        magnitudes = np.abs(np.asarray(keras.ops.convert_to_numpy(multiplier)))
        magnitudes = magnitudes[magnitudes > 0]
        if magnitudes.size and magnitudes.max() > (
            MAX_MULTIPLIER_SPREAD * magnitudes.min()
        ):
            raise ExportError(
                f"Layer '{layer.name}' multiplies by constants from "
                f"{magnitudes.min():.3g} to {magnitudes.max():.3g}; TFLite "
                "stores them as one int8 tensor, which rounds the small ones "
                "to zero or far off, and the quantized model would be "
                "wrong. Normalize or scale the data before the model (or "
                "per channel with a narrower spread), or export a float mode."
            )


def check_model(model):
    """Raises `UnsupportedModelError` unless keras-quant can export it."""
    if not tfmot_interop.is_tf_keras_model(model):
        graph_lib.as_functional(model)


def check_keep_float(model, mode, keep_float):
    """`keep_float` as a tuple of known layer names, or raises ValueError."""
    keep_float = _layer_names(keep_float)
    if keep_float and mode is not Mode.INT8:
        raise ValueError(
            "`keep_float` needs mode='int8', the one mode where float ops "
            f"may sit between quantized ones. Received: mode={mode.value!r}."
        )
    return _check_layers(model, "keep_float", keep_float)


def check_keep_8bit(model, mode, keep_8bit):
    """`keep_8bit` as a tuple of known layer names, or raises ValueError.

    `keep_8bit` names the layers whose weights stay int8 in a mode that
    stores the others in 4 bits.
    """
    keep_8bit = _layer_names(keep_8bit)
    if keep_8bit and MODES[mode].weight_bits != 4:
        four_bit = [
            m.value for m, spec in MODES.items() if spec.weight_bits == 4
        ]
        raise ValueError(
            "`keep_8bit` keeps layers at 8 bits in a mode with 4-bit "
            f"weights: one of {four_bit}. Received: mode={mode.value!r}."
        )
    return _check_layers(model, "keep_8bit", keep_8bit)


def _layer_names(names):
    """`names` (one name or several) as a tuple without repeats."""
    if isinstance(names, str):
        names = [names]
    return tuple(dict.fromkeys(names or ()))


def _check_layers(model, option, names):
    """`names`, if they are layers of Keras 3 `model`; else ValueError
    naming `option`."""
    if not names:
        return ()
    if tfmot_interop.is_tf_keras_model(model):
        raise ValueError(
            f"`{option}` needs a Keras 3 model; tfmot decides what a "
            "tf_keras model quantizes (`quantize_annotate_layer`)."
        )
    known = {
        layer_name(op.layer)
        for op in graph_lib.trace(model).ops
        if not isinstance(op.layer, Observer)
    }
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"`{option}` names layers that model '{model.name}' does not "
            f"have: {unknown}. Its layers are: {sorted(known)}."
        )
    return names


def check_contract(tflite, mode):
    _check_loads(tflite)
    if not MODES[mode].integer_io:
        return
    float_ops = inspection.summarize(tflite).float_ops()
    if float_ops:
        raise ExportError(
            f"Mode {mode.value!r} must give a model with no float tensor, "
            f"but these ops still compute in float: {sorted(set(float_ops))}. "
            "Either the quantizer holds them only in float (WHILE is the "
            "loop of a recurrent layer over a variable number of steps: "
            "give its input a fixed length to have it unrolled), or no "
            "range exists for their tensors (the model keeps no replay "
            "sample: observe it with `replay_samples` > 0 and calibrate "
            "again). Use mode='int8' (float fallback) to keep them float."
        )


def _check_loads(tflite):
    """Refuses a model LiteRT (with its default XNNPACK delegate) cannot
    prepare, rather than writing a file that fails on the device."""
    try:
        litert.allocate(litert.interpreter(tflite))
    except (RuntimeError, ValueError) as error:
        raise ExportError(
            f"LiteRT cannot prepare the converted model: {error}. Check the "
            "ranges in the report for degenerate points, or export 'int8'."
        ) from error
