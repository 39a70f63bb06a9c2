"""Checks before and after a conversion: what a mode can hold.

Before: the model is one keras-quant can trace, `keep_float` names real
layers, constant multipliers fit in int8. After: LiteRT can prepare the
result, and an integer-only mode holds no float tensor.
"""

import keras
import numpy as np

from keras_quant.conversion import rewrites
from keras_quant.conversion import scopes
from keras_quant.conversion import tfmot_interop
from keras_quant.conversion.graphs import layer_name
from keras_quant.conversion.graphs import unsplit
from keras_quant.errors import ExportError
from keras_quant.graph import decomposition
from keras_quant.graph import trace as graph_lib
from keras_quant.modes import MODES
from keras_quant.observation.observers import Observer
from keras_quant.runtime import inspection
from keras_quant.runtime import litert

# Largest max/min ratio of a constant multiplier vector. TFLite quantizes
# it per tensor to int8, so the smallest entry is rounded by up to
# `ratio / 254` of itself: 25.4 keeps that within 10 %. (Seen: a
# Normalization adapted per pixel on the digits, multipliers from 2.5 to
# 1e7, turned every output into a constant.)
MAX_MULTIPLIER_SPREAD = 25.4


def check_multipliers(model, keep_float=()):
    """Raises `ExportError` for a constant multiplier int8 cannot hold, in
    a layer not kept float.

    Args:
        model: an observed or QAT model.
        keep_float: names of layers kept float, whose multipliers stay
            float too.
    """
    for layer, low, high in _spread_multipliers(model):
        if layer.name not in keep_float:
            raise ExportError(
                f"Layer '{layer.name}' multiplies by constants from "
                f"{low:.3g} to {high:.3g}; TFLite stores them as one int8 "
                "tensor, which rounds the small ones to zero or far off, "
                "and the quantized model would be wrong. Keep the layer "
                f"float (`keep_float=['{layer.name}']`, or mode='auto'), "
                "normalize or scale the data before the model (or per "
                "channel with a narrower spread), or export a float mode."
            )


def guarded_layers(model):
    """Names of the layers `check_multipliers` refuses in int8: those
    `mode="auto"` keeps float first."""
    return [layer.name for layer, _, _ in _spread_multipliers(model)]


def _spread_multipliers(model):
    """`(layer, smallest, largest)` of each layer whose constant
    multipliers spread wider than int8 can hold."""
    found = []
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
            found.append((layer, magnitudes.min(), magnitudes.max()))
    return found


def check_model(model):
    """Raises `UnsupportedModelError` unless keras-quant can export it."""
    if not tfmot_interop.is_tf_keras_model(model):
        graph_lib.as_functional(model)


def check_options(model, options):
    """Raises ValueError unless the layers `options` keeps float or at 8
    bits are layers of `model`; the mode-level rules were checked when the
    `ConvertOptions` was made."""
    _check_layers(model, "keep_float", options.keep_float)
    _check_layers(model, "keep_8bit", options.keep_8bit)


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


def check_contract(tflite, options):
    """Refuses a result LiteRT cannot prepare, an integer-only result that
    holds a float tensor, and one with ops its deployment target lacks."""
    _check_loads(tflite)
    _check_target_ops(tflite, options)
    mode = options.mode
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


def check_static_shapes(model, options):
    """Raises ValueError for an input whose non-batch dimensions are free
    when the target needs static shapes (the batch is fixed at 1)."""
    if not options.static_batch or tfmot_interop.is_tf_keras_model(model):
        return
    for tensor in model.inputs:
        if any(size is None for size in tensor.shape[1:]):
            raise ValueError(
                f"Input '{tensor.name}' of model '{model.name}' has shape "
                f"{tuple(tensor.shape)}, and {options.deployment.summary} "
                f"(target={options.target!r}) needs static shapes. Give "
                "`keras.Input` a fixed `shape` (a fixed sequence length, "
                "image size, ...), or export without `target`."
            )


def check_target_layers(float_tflite, ops, options):
    """Refuses, before quantizing, a float model with ops the target's
    runtime lacks, naming each layer and its op.

    Args:
        float_tflite: the engine's float model (`scoped_float_graph`).
        ops: the traced ops of its `kq_op<i>` scopes.
        options: the `ConvertOptions`; nothing is checked without a target.

    Raises:
        ExportError: naming `layer (OP)` pairs.
    """
    deployment = options.deployment
    if deployment is None:
        return
    lacking = {}
    for op, names in inspection.summarize(float_tflite).op_tensor_names():
        if not (deployment.runs(op) or rewrites.rewritten(op, options)):
            lacking.setdefault(_layer_of(names, ops), set()).add(op)
    if lacking:
        found = ", ".join(
            f"'{layer}' ({', '.join(sorted(names))})"
            for layer, names in sorted(lacking.items())
        )
        raise ExportError(_lacking_message(options, found))


def _layer_of(tensor_names, ops):
    """The name of the layer whose scope the first of `tensor_names` that
    has one carries (`scopes`), or a phrase saying there is none."""
    for name in tensor_names:
        number = scopes.first_number(name)
        if number is not None:
            return layer_name(ops[number].layer)
    return "an op outside any layer"


def _check_target_ops(tflite, options):
    """The final file holds only ops the target's runtime has."""
    deployment = options.deployment
    if deployment is None:
        return
    missing = deployment.missing(inspection.summarize(tflite).op_names)
    if missing:
        raise ExportError(_lacking_message(options, ", ".join(missing)))


def _lacking_message(options, found):
    deployment = options.deployment
    return (
        f"{deployment.summary} (target={options.target!r}) has no kernel "
        f"for ops of these layers: {found}. Nothing was written. Replace "
        "the layer with one built from ops it has (see the user guide, "
        "'Deploying to a microcontroller'), or export without `target`."
    )
