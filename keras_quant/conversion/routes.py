"""Converting a Keras model to `.tflite` bytes in one mode.

The range-based modes (`int8`, `int8_only`, `int16x8`) need no
representative dataset. Two routes read the collected ranges:

- `FAKE_QUANT`: the observed graph is replayed with each `Observer`
  replaced by a `FakeQuant` layer holding its range, and the TFLite
  converter reads those ranges as it would from a quantization-aware
  trained model;
- `ENGINE`: the float model is converted once and quantized by
  ai-edge-quantizer from the ranges mapped to its tensors by name
  (`engine`, `tensor_map`), in a child process (`isolation`).

The other modes convert the float graph (observers dropped). `ROUTES` maps
a mode's route to its conversion; every result is checked (it loads in
LiteRT; `int8_only` holds no float tensor) before it is returned.
"""

from keras_quant import modes as modes_lib
from keras_quant.conversion import engine
from keras_quant.conversion import graphs
from keras_quant.conversion import isolation
from keras_quant.conversion import scopes
from keras_quant.conversion import tensor_map
from keras_quant.conversion import tfmot_interop
from keras_quant.conversion.checks import check_contract
from keras_quant.conversion.checks import check_keep_8bit
from keras_quant.conversion.checks import check_keep_float
from keras_quant.conversion.checks import check_multipliers
from keras_quant.conversion.converter import quiet
from keras_quant.conversion.converter import run_converter
from keras_quant.conversion.graphs import fake_quant_graph
from keras_quant.conversion.graphs import float_graph
from keras_quant.errors import ExportError
from keras_quant.modes import MODES
from keras_quant.modes import Mode
from keras_quant.modes import Route
from keras_quant.observation.observed_model import collected_ranges
from keras_quant.observation.observed_model import replay_sample
from keras_quant.observation.qat import is_quantize_aware


def convert(
    model, mode, io_dtype=None, keep_float=(), block_size=None, keep_8bit=()
):
    """Converts `model` in `mode` and checks the result; returns bytes.

    Unlike `export`, writes nothing and computes no report.

    Args:
        model: as for `keras_quant.export`.
        mode: a `Mode` or its name.
        io_dtype: as for `keras_quant.export`.
        keep_float: names of layers whose TFLite ops stay float in `int8`
            mode (their neighbours quantize and dequantize around them).
        block_size: for `dynamic_int4`, input features per weight scale
            (None: per output channel).
        keep_8bit: names of layers whose weights stay int8 in a mode with
            4-bit weights.

    >>> inputs = keras.Input((3,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> convert(model, "float16")[4:8]
    b'TFL3'
    """
    mode = modes_lib.parse_mode(mode)
    io_dtype = modes_lib.check_io_dtype(mode, io_dtype)
    block_size = modes_lib.check_block_size(mode, block_size)
    keep_float = check_keep_float(model, mode, keep_float)
    keep_8bit = check_keep_8bit(model, mode, keep_8bit)
    if tfmot_interop.is_tf_keras_model(model):
        tflite = tfmot_interop.convert_tf_keras(model, mode, io_dtype, quiet)
    elif keep_float:
        check_multipliers(model)
        tflite = _convert_with_engine(model, mode, io_dtype, keep_float)
    else:
        if MODES[mode].needs_ranges:
            check_multipliers(model)
        route = MODES[mode].route_for(is_quantize_aware(model))
        tflite = ROUTES[route](
            model, mode, io_dtype, block_size=block_size, keep_8bit=keep_8bit
        )
    check_contract(tflite, mode)
    return tflite


def ranges_for(model, mode):
    """`{point: (min, max)}` that `mode` quantizes with; `{}` for a mode
    that needs no ranges and for tf_keras models (tfmot keeps its own).

    Raises:
        NotCalibratedError: the mode needs ranges the model does not have.
        NonFiniteActivationError: an observer recorded NaN/Inf values.
    """
    if not MODES[mode].needs_ranges or tfmot_interop.is_tf_keras_model(model):
        return {}
    return collected_ranges(model, f"Mode {mode.value!r}")


# Each route: (model, mode, io_dtype, block_size) -> .tflite bytes; the
# converter's routes quantize no weights in blocks (`check_block_size`
# lets a block size reach the engine's modes only).


def _convert_float(model, mode, io_dtype, block_size=None, keep_8bit=()):
    return run_converter(float_graph(model), mode, io_dtype)


def _convert_fake_quant(model, mode, io_dtype, block_size=None, keep_8bit=()):
    return run_converter(fake_quant_graph(model), mode, io_dtype)


def _convert_with_engine(
    model, mode, io_dtype, keep_float=(), block_size=None, keep_8bit=()
):
    """The float model, converted once with every op in a numbered name
    scope, then quantized by the engine from the observed ranges (and the
    replay sample for tensors no observer sees), in a child process."""
    scoped, ops = graphs.scoped_float_graph(model)
    float_tflite = run_converter(scoped, Mode.FLOAT32)
    observed = tensor_map.observed_ranges(float_tflite, model, ops)
    return isolation.run_isolated(
        engine.quantize,
        float_tflite,
        observed,
        replay_sample(model),
        mode.value,
        _layer_patterns(float_tflite, model, ops, "keep_float", keep_float),
        io_dtype,
        block_size,
        _layer_patterns(float_tflite, model, ops, "keep_8bit", keep_8bit),
    )


def _layer_patterns(float_tflite, model, ops, option, layers):
    """The engine's patterns for the ops of `layers` (named by `option`,
    `keep_float` or `keep_8bit`).

    Raises:
        ExportError: a named layer has no op of its own in TFLite (Dropout,
            a reshape the converter removed): nothing could be kept.
    """
    if not layers:
        return []
    kept = {
        index: graphs.layer_name(op.layer)
        for index, op in enumerate(ops)
        if graphs.layer_name(op.layer) in layers
    }
    present = tensor_map.scopes_with_ops(float_tflite)
    outputs = tensor_map.output_patterns(float_tflite, model, layers)
    with_ops = {name for i, name in kept.items() if i in present}
    empty = sorted(set(kept.values()) - with_ops - set(outputs))
    if empty:
        raise ExportError(
            f"`{option}` names layers with no op of their own in the "
            f"TFLite model: {empty} (the converter removes or fuses them). "
            "Name the layer that computes their input instead."
        )
    inside = [scopes.pattern(i) for i in kept]
    return inside + list(outputs.values())


ROUTES = {
    Route.FLOAT: _convert_float,
    Route.FAKE_QUANT: _convert_fake_quant,
    Route.ENGINE: _convert_with_engine,
}
