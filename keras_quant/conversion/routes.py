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

The other modes convert the float graph (observers dropped): within one
run (`shared_work`), the engine's scoped graph, its scopes then taken out
of the names, so that every mode shares one trace. `ROUTES` maps a mode's
route to its conversion; every result is checked (it loads in LiteRT;
`int8_only` holds no float tensor) before it is returned. `start` sends
the engine's work for several modes ahead, so that the child quantizes
while this process converts the float modes (`export_many`).
"""

from keras_quant.conversion import engine
from keras_quant.conversion import graphs
from keras_quant.conversion import isolation
from keras_quant.conversion import scopes
from keras_quant.conversion import shared_work
from keras_quant.conversion import tensor_map
from keras_quant.conversion import tfmot_interop
from keras_quant.conversion.checks import check_contract
from keras_quant.conversion.checks import check_multipliers
from keras_quant.conversion.checks import check_options
from keras_quant.conversion.checks import check_static_shapes
from keras_quant.conversion.checks import check_target_layers
from keras_quant.conversion.converter import frozen_function
from keras_quant.conversion.converter import quiet
from keras_quant.conversion.converter import run_frozen
from keras_quant.conversion.graphs import fake_quant_graph
from keras_quant.conversion.graphs import float_graph
from keras_quant.errors import ExportError
from keras_quant.modes import MODES
from keras_quant.modes import Mode
from keras_quant.modes import Route
from keras_quant.observation.observed_model import collected_ranges
from keras_quant.observation.observed_model import replay_sample
from keras_quant.observation.qat import is_quantize_aware
from keras_quant.options import ConvertOptions


def convert(model, options, **changes):
    """Converts `model` and checks the result; returns bytes.

    Unlike `export`, writes nothing and computes no report.

    Args:
        model: as for `keras_quant.export`.
        options: a `ConvertOptions`, or a `Mode` or its name for that
            mode's default options.
        **changes: fields of `ConvertOptions` to set (`io_dtype`,
            `keep_float`, `keep_8bit`, `block_size`, `target`).

    >>> inputs = keras.Input((3,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> convert(model, "float16")[4:8]
    b'TFL3'
    """
    options = ConvertOptions.of(options, **changes)
    return shared_work.computed(
        ("convert", id(model), options), lambda: _convert(model, options)
    )


def start(model, options_list):
    """Sends the conversions among `options_list` that the engine does to
    its child now, so that it quantizes while this process converts and
    writes the others; `convert` then waits for them. Within one run
    (`shared_work`) only: outside one, `convert` would send them again.

    Raises nothing: a conversion that cannot be sent (no ranges, a check
    that refuses it) is left to `convert`, which fails the same way at its
    turn, after the modes before it were written.
    """
    for options in options_list:
        if _route(model, options) is not Route.ENGINE:
            continue
        try:
            ranges_for(model, options.mode)
            _check(model, options)
            _engine_job(model, options)
        except Exception:  # noqa: BLE001  raised again by `convert`
            pass


def uses_engine(model, mode):
    """Whether `mode` (a `Mode` or its name, default options) of `model`
    is quantized by the engine, in its child process."""
    return _route(model, ConvertOptions.of(mode)) is Route.ENGINE


def warm_up():
    """Starts the engine's child now, loading the engine; the first
    conversion through the engine will use it."""
    isolation.prepare(modules=ENGINE_MODULES)


def _convert(model, options):
    """`convert`, done."""
    _check(model, options)
    if tfmot_interop.is_tf_keras_model(model):
        tflite = tfmot_interop.convert_tf_keras(model, options, quiet)
    else:
        tflite = ROUTES[_route(model, options)](model, options)
    check_contract(tflite, options)
    return tflite


def _check(model, options):
    """Refuses, before converting, what `options` cannot hold; once per
    run for each `options`."""
    shared_work.computed(
        ("checked", id(model), options), lambda: _checks(model, options)
    )


def _checks(model, options):
    check_options(model, options)
    check_static_shapes(model, options)
    if tfmot_interop.is_tf_keras_model(model):
        return
    if MODES[options.mode].needs_ranges or options.keep_float:
        check_multipliers(model, options.keep_float)


def _route(model, options):
    """The route for `options`: the engine holds layers kept float; None
    for a tf_keras model (tfmot's own conversion)."""
    if tfmot_interop.is_tf_keras_model(model):
        return None
    if options.keep_float:
        return Route.ENGINE
    return MODES[options.mode].route_for(is_quantize_aware(model))


def ranges_for(model, mode):
    """`{point: (min, max)}` that `mode` quantizes with; `{}` for a mode
    that needs no ranges and for tf_keras models (tfmot keeps its own).

    Raises:
        NotCalibratedError: the mode needs ranges the model does not have.
        NonFiniteActivationError: an observer recorded NaN/Inf values.
    """
    if not MODES[mode].needs_ranges or tfmot_interop.is_tf_keras_model(model):
        return {}
    return shared_work.computed(  # read once per run, for every mode
        ("collected ranges", id(model)),
        lambda: collected_ranges(model, f"Mode {mode.value!r}"),
    )


# Each route: (model, options) -> .tflite bytes; the converter's routes
# quantize no weights in blocks (`check_block_size` lets a block size
# reach the engine's modes only).


def _convert_float(model, options):
    """The float graph converted with `options`: from the scoped graph the
    engine converts too, its scopes then taken out, so that one run traces
    and freezes the model once for every mode; from the plain graph when
    the scoped one unrolls a recurrent layer (float modes keep its loop,
    decision D33)."""
    if graphs.unrolls_any(model):
        return run_frozen(_frozen(model, float_graph, options), options)
    return scopes.without_scopes(_scoped_conversion(model, options))


def _convert_fake_quant(model, options):
    return run_frozen(_frozen(model, fake_quant_graph, options), options)


def _frozen(model, graph, options):
    """The frozen serving function of `graph(model)`, traced once per run
    for each shape setting (`shared_work`)."""
    return shared_work.computed(
        (graph.__name__, id(model), options.static_batch),
        lambda: frozen_function(graph(model), options.static_batch),
    )


def _scoped_graph(model, static_batch):
    """`(frozen serving function, ops)` of `graphs.scoped_float_graph`,
    traced once per run for each shape setting."""

    def trace():
        scoped, ops = graphs.scoped_float_graph(model)
        return frozen_function(scoped, static_batch), ops

    return shared_work.computed(
        ("scoped_float_graph", id(model), static_batch), trace
    )


def _scoped_conversion(model, options, for_mode=None):
    """The scoped float graph converted with `options` (a mode of the
    float route, or float32 for the engine), once per run."""
    return shared_work.computed(
        ("scoped conversion", id(model), options),
        lambda: run_frozen(
            _scoped_graph(model, options.static_batch)[0], options, for_mode
        ),
    )


# What the engine's child imports as it starts (`isolation.prepare`).
ENGINE_MODULES = (engine.__name__, "ai_edge_quantizer.quantizer")


def _convert_with_engine(model, options):
    """The float model, converted once with every op in a numbered name
    scope, then quantized by the engine from the observed ranges (and the
    replay sample for tensors no observer sees), in a child process."""
    return _engine_job(model, options).result()


def _engine_job(model, options):
    """The engine's quantization for `options`, sent to its child once per
    run (an `isolation.Job`; one that failed fails the same way when asked
    again in the run)."""
    return shared_work.computed(
        ("engine job", id(model), options),
        lambda: _send_to_engine(model, options),
    )


def _send_to_engine(model, options):
    warm_up()  # the child loads the engine while this process converts
    float_tflite, ops, observed = shared_work.computed(
        ("engine float model", id(model), options.target),
        lambda: _engine_float_model(model, options),
    )
    check_target_layers(float_tflite, ops, options)
    patterns = {
        option: _layer_patterns(
            float_tflite, model, ops, option, getattr(options, option)
        )
        for option in ("keep_float", "keep_8bit")
    }
    return isolation.submit(
        engine.quantize,
        float_tflite,
        observed,
        replay_sample(model),
        options,
        patterns,
    )


def _engine_float_model(model, options):
    """`(float .tflite, traced ops, observed ranges by tensor name)`: the
    float model the engine quantizes, every op in a numbered scope, its
    shapes as static as the target needs. It is the float32 conversion of
    the scoped graph, which the float modes of the same run share."""
    float_options = ConvertOptions(Mode.FLOAT32, target=options.target)
    float_tflite = _scoped_conversion(model, float_options, options.mode)
    _, ops = _scoped_graph(model, float_options.static_batch)
    return (
        float_tflite,
        ops,
        tensor_map.observed_ranges(float_tflite, model, ops),
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
