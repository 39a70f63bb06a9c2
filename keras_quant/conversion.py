"""Converting a Keras model to `.tflite` bytes in one mode.

The range-based modes (`int8`, `int8_only`, `int16x8`) need no
representative dataset: the observed graph is replayed with each `Observer`
replaced by a `FakeQuant` layer holding its collected range, and the TFLite
converter reads those ranges as it would from a quantization-aware-trained
model (16x8 goes through `calibration_stats`). The other modes convert the
float graph (observers dropped). `ROUTES` maps a mode's route to its
conversion; every result is checked (it loads in LiteRT; `int8_only` holds
no float tensor) before it is returned.
"""

import contextlib
import io
import logging
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras.src import tree
from tensorflow.lite.python.convert_phase import ConverterError
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

from keras_quant import calibration_stats
from keras_quant import decomposition
from keras_quant import graph as graph_lib
from keras_quant import inspection
from keras_quant import litert
from keras_quant import modes as modes_lib
from keras_quant import native_stderr
from keras_quant import tfmot_interop
from keras_quant.errors import ExportError
from keras_quant.layers import FakeQuant
from keras_quant.layers import NameScope
from keras_quant.layers import Split
from keras_quant.modes import MODES
from keras_quant.modes import Mode
from keras_quant.modes import Route
from keras_quant.observed_model import find_observers
from keras_quant.observers import Observer
from keras_quant.qat import QuantizeWeights


def convert(model, mode, io_dtype=None, keep_float=()):
    """Converts `model` in `mode` and checks the result; returns bytes.

    Unlike `export`, writes nothing and computes no report.

    Args:
        model: as for `keras_quant.export`.
        mode: a `Mode` or its name.
        io_dtype: as for `keras_quant.export`.
        keep_float: names of layers whose TFLite ops stay float in `int8`
            mode (their neighbours quantize and dequantize around them).

    >>> inputs = keras.Input((3,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> convert(model, "float16")[4:8]
    b'TFL3'
    """
    mode = modes_lib.parse_mode(mode)
    io_dtype = modes_lib.check_io_dtype(mode, io_dtype)
    keep_float = check_keep_float(model, mode, keep_float)
    if tfmot_interop.is_tf_keras_model(model):
        tflite = tfmot_interop.convert(model, mode, io_dtype, quiet)
    elif keep_float:
        check_multipliers(model)
        tflite = _convert_int8_keeping_float(model, keep_float)
    else:
        if MODES[mode].needs_ranges:
            check_multipliers(model)
        tflite = ROUTES[MODES[mode].route](model, mode, io_dtype)
    _check_contract(tflite, mode)
    return tflite


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
        layer = _unsplit(op.layer)
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


def run_converter(keras_model, mode, io_dtype=None):
    """Converts a plain Keras model (no observers) with `mode`'s settings."""
    converter = make_converter(keras_model)
    modes_lib.configure_converter(converter, mode, io_dtype)
    try:
        with quiet():
            return converter.convert()
    except ConverterError as error:
        reason = str(error).strip().splitlines()[0]
        raise ExportError(
            f"The TFLite converter cannot convert this model (mode "
            f"{mode.value!r}): {reason}"
        ) from error


def make_converter(keras_model):
    """A `TFLiteConverter` for `keras_model`, from a frozen function.

    `from_keras_model` writes and reads back a SavedModel first; freezing
    the serving function in memory gives the same model in about a third
    of the time (0.11 s against 0.35 s on the demo model).
    """

    @tf.function
    def serve(*inputs):
        structured = tree.pack_sequence_as(
            keras_model._inputs_struct, list(inputs)
        )
        return keras_model(structured, training=False)

    specs = [
        tf.TensorSpec(tensor.shape, tensor.dtype, name=_input_name(tensor))
        for tensor in keras_model.inputs
    ]
    frozen = convert_variables_to_constants_v2(
        serve.get_concrete_function(*specs)
    )
    with quiet():
        return tf.lite.TFLiteConverter.from_concrete_functions([frozen])


def _input_name(tensor):
    return tensor._keras_history.operation.name


def _convert_float(model, mode, io_dtype):
    return run_converter(_float_graph(model), mode, io_dtype)


def _convert_fake_quant(model, mode, io_dtype):
    return run_converter(fake_quant_graph(model), mode, io_dtype)


def _convert_16x8(model, mode, io_dtype):
    with quiet():
        tflite = calibration_stats.quantize_16x8(_with_statistics(model))
    calibration_stats.check_against_simulation(
        tflite, fake_quant_graph(model, bits=16), _input_ranges(model), mode
    )
    return tflite


def _convert_int8_keeping_float(model, keep_float):
    """int8 with the ops of the `keep_float` layers denylisted, through the
    statistics route: the fake-quant route has no way to leave one op float
    between two quantized neighbours."""
    scopes = _float_scopes(keep_float)
    outputs = {
        position: scopes[name]
        for position, name in enumerate(_output_layers(model))
        if name in scopes
    }
    with quiet():
        calibrated = calibration_stats.name_outputs(
            _with_statistics(model, keep_float), outputs
        )
        nodes = calibration_stats.ops_in_scopes(calibrated, scopes)
        tflite = calibration_stats.quantize_int8(calibrated, nodes)
    simulation = fake_quant_graph(
        model, float_points=_float_points(model, keep_float)
    )
    calibration_stats.check_against_simulation(
        tflite, simulation, _input_ranges(model), Mode.INT8
    )
    return tflite


def _float_points(model, keep_float):
    """Points that stay float when `keep_float` layers are kept float: those
    computed by a kept layer and read by kept layers only (or by nobody:
    a model output)."""
    graph = graph_lib.trace(model)
    points = set()
    for op in graph.ops:
        if isinstance(op.layer, Split) and layer_name(op.layer) in keep_float:
            points.update(o.point for o in op.layer.observers)
        if not isinstance(op.layer, Observer):
            continue
        producer = graph.producer(op.inputs[0])
        readers = graph.consumers(op.outputs[0])
        if producer is not None and all(
            layer_name(o.layer) in keep_float for o in [producer, *readers]
        ):
            points.add(op.layer.point)
    return points


def _with_statistics(model, keep_float=()):
    """The float `.tflite` of `model` carrying the collected int8 ranges as
    calibration statistics (see `calibration_stats`)."""
    int8_model = _convert_fake_quant(model, Mode.INT8, None)
    calibrated = calibration_stats.calibrated_float_model(
        _float_graph(model, keep_float), make_converter
    )
    return calibration_stats.inject_ranges(calibrated, int8_model)


def _output_layers(model):
    """The name of the layer computing each model output (None for an
    output that is a model input)."""
    graph = graph_lib.trace(model)
    names = []
    for key in graph.outputs:
        producer = graph.producer(key)
        while producer is not None and isinstance(producer.layer, Observer):
            producer = graph.producer(producer.inputs[0])
        names.append(None if producer is None else layer_name(producer.layer))
    return names


def _float_scopes(keep_float):
    """`{layer name: name scope}` for layers kept float. The scopes are
    numbered, not named after the layer: TensorFlow suffixes a reused scope
    with `_1`, which would make `dense` look like `dense_1`."""
    return {
        name: f"keras_quant_float_{i}_" for i, name in enumerate(keep_float)
    }


def check_keep_float(model, mode, keep_float):
    """`keep_float` as a tuple of known layer names, or raises ValueError."""
    if isinstance(keep_float, str):
        keep_float = [keep_float]
    keep_float = tuple(dict.fromkeys(keep_float or ()))
    if not keep_float:
        return ()
    if mode is not Mode.INT8:
        raise ValueError(
            "`keep_float` needs mode='int8', the one mode where float ops "
            f"may sit between quantized ones. Received: mode={mode.value!r}."
        )
    if tfmot_interop.is_tf_keras_model(model):
        raise ValueError(
            "`keep_float` needs a Keras 3 model; tfmot decides what a "
            "tf_keras model quantizes (`quantize_annotate_layer`)."
        )
    known = {
        layer_name(op.layer)
        for op in graph_lib.trace(model).ops
        if not isinstance(op.layer, Observer)
    }
    unknown = [name for name in keep_float if name not in known]
    if unknown:
        raise ValueError(
            f"`keep_float` names layers that model '{model.name}' does not "
            f"have: {unknown}. Its layers are: {sorted(known)}."
        )
    return keep_float


def _input_ranges(model):
    graph = graph_lib.trace(model)
    observers = {
        op.inputs[0]: op.layer
        for op in graph.ops
        if isinstance(op.layer, Observer)
    }
    return [observers[key].range() for key in graph.inputs]


ROUTES = {
    Route.FLOAT: _convert_float,
    Route.FAKE_QUANT: _convert_fake_quant,
    Route.STATISTICS: _convert_16x8,
}


def fake_quant_graph(model, bits=8, record=None, float_points=()):
    """The graph TFLite will compute: split layers as their steps, and a
    fake-quant with its collected range in place of each observer.

    With `bits=16` the ranges are made symmetric, as int16 activations are:
    a simulation of the 16x8 model in Keras. With `bits=None` nothing is
    quantized: the float graph, step by step.

    Args:
        model: an observed model.
        bits: see above.
        record: a dict that, if given, receives `{point: tensor}` for every
            quantization point, in graph order (see `sensitivity`).
        float_points: points left float (layers kept float).
    """

    def fake_quant(observer, value):
        low, high = observer.range()
        if observer.point in float_points:
            pass
        elif bits == 16:
            bound = max(-low, high)
            value = FakeQuant(-bound, bound, 16, narrow_range=True)(value)
        elif bits == 8:
            value = FakeQuant(low, high)(value)
        if record is not None:
            record[observer.point] = value
        return value

    def call_op(op, args, kwargs):
        if isinstance(op.layer, Observer):
            return fake_quant(op.layer, args[0])
        if isinstance(op.layer, Split):
            value = args[0]
            for step, part in decomposition.plan(
                op.layer.layer, op.layer.parts
            ):
                value = decomposition.LayerStep(op.layer.layer, step)(value)
                if part is not None:
                    value = fake_quant(op.layer.observer_for(part), value)
            return value
        return _float_layer(op.layer)(*args, **kwargs)

    return _rebuild(model, call_op)


def _float_graph(model, keep_float=()):
    """The float graph: observers dropped; each layer named in `keep_float`
    called in a `NameScope` that marks its ops."""
    if not find_observers(model) and not keep_float:
        return model
    scopes = _float_scopes(keep_float)

    def call_op(op, args, kwargs):
        if isinstance(op.layer, Observer):
            return args[0]
        layer = _float_layer(_unsplit(op.layer))
        if layer.name in scopes:
            layer = NameScope(layer, scopes[layer.name])
        if isinstance(op.layer, Split):
            return layer(*args)
        return layer(*args, **kwargs)

    return _rebuild(model, call_op)


def layer_name(layer):
    """The name of the user's layer behind an op (unwrapping keras-quant's
    `Split` and QAT wrappers)."""
    return _float_layer(_unsplit(layer)).name


def _unsplit(layer):
    return layer.layer if isinstance(layer, Split) else layer


def _float_layer(layer):
    """The layer itself, or the float layer a QAT wrapper fake-quantizes:
    the converter quantizes its weights as `QuantizeWeights` simulates."""
    return layer.layer if isinstance(layer, QuantizeWeights) else layer


def _rebuild(model, call_op):
    return graph_lib.trace(model).rebuild(call_op, name=model.name)


def _check_contract(tflite, mode):
    _check_loads(tflite)
    if not MODES[mode].integer_io:
        return
    float_ops = inspection.summarize(tflite).float_ops()
    if float_ops:
        raise ExportError(
            f"Mode {mode.value!r} must give a model with no float tensor, "
            f"but these ops still compute in float: {sorted(set(float_ops))}. "
            "keras-quant places no range on the layers behind them. Use "
            "mode='int8' (float fallback), or replace those layers with "
            "ones TFLite quantizes."
        )


def _check_loads(tflite):
    """Refuses a model LiteRT (with its default XNNPACK delegate) cannot
    prepare, rather than writing a file that fails on the device."""
    try:
        litert.interpreter(tflite).allocate_tensors()
    except (RuntimeError, ValueError) as error:
        raise ExportError(
            f"LiteRT cannot prepare the converted model: {error}. Check the "
            "ranges in the report for degenerate points, or export 'int8'."
        ) from error


@contextlib.contextmanager
def quiet():
    """Silences the converter's prints, warnings and absl log lines.

    Among them: absl's note that a concrete function converted without its
    trackable object takes the "deprecated conversion path" (decision D13),
    and the quantizer's "fully_quantize: ..." line on native stderr.
    """
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with (
                contextlib.redirect_stdout(io.StringIO()),
                native_stderr.captured(),
            ):
                yield
    finally:
        absl.setLevel(level)
