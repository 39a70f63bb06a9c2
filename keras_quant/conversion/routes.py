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

from keras_quant import modes as modes_lib
from keras_quant.conversion import calibration_stats
from keras_quant.conversion import tfmot_interop
from keras_quant.conversion.checks import check_contract
from keras_quant.conversion.checks import check_keep_float
from keras_quant.conversion.checks import check_multipliers
from keras_quant.conversion.converter import make_converter
from keras_quant.conversion.converter import quiet
from keras_quant.conversion.converter import run_converter
from keras_quant.conversion.graphs import fake_quant_graph
from keras_quant.conversion.graphs import float_graph
from keras_quant.conversion.graphs import float_scopes
from keras_quant.conversion.graphs import layer_name
from keras_quant.graph import trace as graph_lib
from keras_quant.modes import MODES
from keras_quant.modes import Mode
from keras_quant.modes import Route
from keras_quant.observation.layers import Split
from keras_quant.observation.observed_model import collected_ranges
from keras_quant.observation.observers import Observer


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
        tflite = tfmot_interop.convert_tf_keras(model, mode, io_dtype, quiet)
    elif keep_float:
        check_multipliers(model)
        tflite = _convert_int8_keeping_float(model, keep_float)
    else:
        if MODES[mode].needs_ranges:
            check_multipliers(model)
        tflite = ROUTES[MODES[mode].route](model, mode, io_dtype)
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


def _convert_float(model, mode, io_dtype):
    return run_converter(float_graph(model), mode, io_dtype)


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
    scopes = float_scopes(keep_float)
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
        float_graph(model, keep_float), make_converter
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
