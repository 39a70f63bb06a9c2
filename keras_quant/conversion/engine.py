"""The quantization engine: a float `.tflite` and ranges in, a quantized
`.tflite` out, through ai-edge-quantizer's public API.

keras-quant converts the float model once (`routes`), maps each observed
range to its TFLite tensor by name (`tensor_map`), and hands both to
`quantize`, which:

1. rewrites float ops that have an exact equivalent the quantizer holds
   in integers (`rewrites`: NEG as MUL by -1, ...);
2. replays the float model in LiteRT on the inputs the observers kept
   (the replay sample, decision D30) to find the ranges of the tensors no
   observer sees (inside LayerNormalization, attention, gelu, recurrent
   cells, Average); observed tensors keep their training-time ranges;
   tensors that take one quantization (a CONCATENATION's inputs and
   output, an average pool's input and output, ...) take the union of
   their ranges (`shared_ranges`), as the TFLite converter gives them;
3. quantizes with the mode's recipe (`RECIPES`): weights int8 per channel
   symmetric, activations int8 asymmetric or int16 symmetric per tensor;
   ops named by `keep_float` and ops LiteRT cannot hold in integers
   (`FLOAT_ONLY`) stay float between QUANTIZE and DEQUANTIZE; int16 ADD
   and SUB take LiteRT's general kernel
   (`rewrites.general_int16_arithmetic`), and 16x8's int64 biases their
   whole value (`rewrites.unclipped_int64_biases`);
4. checks that LiteRT prepares and runs the result.

Neither Keras nor TensorFlow is imported here: `isolation.run_isolated`
runs `quantize` in a child process that starts in well under a second, so
a native crash becomes an `ExportError` rather than the end of training.

Example:

>>> from keras_quant.conversion.converter import run_converter
>>> inputs = keras.Input((4,), name="x")
>>> model = keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs))
>>> float_tflite = run_converter(model, keras_quant.Mode.FLOAT32)
>>> sample = [np.random.default_rng(0).normal(size=(8, 4))]
>>> tflite = quantize(float_tflite, {}, sample, "int16x8")
>>> [op for op in operator_names(tflite) if op != "DEQUANTIZE"][:2]
['QUANTIZE', 'FULLY_CONNECTED']
"""

import copy
import dataclasses
import re
import warnings

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from keras_quant.conversion import integer_io
from keras_quant.conversion import rewrites
from keras_quant.conversion import scopes
from keras_quant.errors import ExportError
from keras_quant.modes import MODES
from keras_quant.observation.ranges import widen_range
from keras_quant.options import ConvertOptions
from keras_quant.runtime import flatbuffer

# Float input and output: quantized inside, QUANTIZE/DEQUANTIZE at the
# model's boundary (AEQ's own default is integer input and output).
_FLOAT_IO = (
    {"regex": ".*", "operation": "INPUT", "algorithm_key": "no_quantize"},
    {"regex": ".*", "operation": "OUTPUT", "algorithm_key": "no_quantize"},
)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the engine quantizes one mode.

    What the mode itself says (weight bits, whether activations are
    quantized from ranges, integer input and output) is read from its row
    of `modes.MODES`, not repeated here.

    Attributes:
        recipe: the ai-edge-quantizer recipe function; its rules are set to
            the mode's `weight_bits`.
        float_fallback: ops that touch a tensor with no range stay float
            (else the export is refused, naming the tensor). `int8_only`
            falls back too, so that its contract check refuses the model
            naming the float ops, which says more than a tensor name.
    """

    recipe: str
    float_fallback: bool = False


RECIPES = {
    "int8": Recipe("static_wi8_ai8", float_fallback=True),
    "int8_only": Recipe("static_wi8_ai8", float_fallback=True),
    "int16x8": Recipe("static_wi8_ai16"),
    "int4_weights": Recipe("weight_only_wi4_afp32"),
    "dynamic_int4": Recipe("dynamic_wi4c_afp32"),
    "int8x4": Recipe("static_wi8_ai8", float_fallback=True),
}


# Ops that LiteRT cannot run with integer tensors, as AEQ recipe rules
# matched against output tensor names: a recurrent layer's WHILE loop and
# the ops of its body (AEQ quantizes the body, not the loop's inputs).
FLOAT_ONLY = {
    "WHILE": r"(^|/)while(_\d+)?([/;]|\d*$)",
}


def quantize(float_tflite, observed, sample, options, patterns=None):
    """Quantizes a float `.tflite` from ranges; returns the bytes.

    Args:
        float_tflite: the float model's bytes.
        observed: `{tensor name: (min, max)}` collected by observers; these
            win over the replayed ranges.
        sample: one array per model input to replay, or None.
        options: a `ConvertOptions` (or a mode's name, for its default
            options) of a mode of `RECIPES`; its `target` adds that
            target's rewrites.
        patterns: `{"keep_float": [...], "keep_8bit": [...]}`, regular
            expressions of output-tensor names whose ops stay float
            (`int8` only) or keep int8 weights per channel (a mode with
            4-bit weights). Defaults to none.

    Raises:
        ExportError: a tensor has no range (`int8_only`, `int16x8`), or
            ai-edge-quantizer or LiteRT refuse the model; the message names
            the tensor or op.
    """
    if bytes(float_tflite[4:8]) != b"TFL3":
        raise ExportError(
            "The engine was given bytes that are not a TFLite model."
        )
    options = ConvertOptions.of(options)
    patterns = patterns or {}
    mode = options.mode
    spec, mode_spec = RECIPES[mode.value], MODES[mode]
    float_tflite = rewrites.apply(float_tflite, options)
    ranges = {}
    if mode_spec.needs_ranges:
        ranges = replayed_ranges(float_tflite, sample) if sample else {}
        ranges.update(observed)
    keep_float = list(patterns.get("keep_float", ()))
    if spec.float_fallback:  # ops touching a tensor with no range: float
        keep_float += _ops_without_ranges(float_tflite, ranges)
    ranges = shared_ranges(float_tflite, ranges, keep_float)
    rules = _rules(
        spec,
        mode_spec,
        keep_float,
        options.block_size,
        patterns.get("keep_8bit", ()),
    )
    tflite = _quantize(float_tflite, ranges, rules, sample)
    tflite = rewrites.unclipped_int64_biases(tflite, float_tflite)
    tflite = rewrites.quantize_unused_outputs(tflite)
    tflite = rewrites.general_int16_arithmetic(tflite)
    if mode_spec.needs_ranges:  # activations are integers
        tflite = integer_io.moves_in_integers(tflite)
    tflite = integer_io.shape_from_integers(tflite)
    if mode_spec.integer_io and options.io_dtype == "uint8":
        tflite = integer_io.to_uint8_io(tflite)
    tflite = scopes.without_scopes(tflite)
    _check_runs(tflite)
    return tflite


def _rules(spec, mode_spec, keep_float, block_size, keep_8bit=()):
    """The ai-edge-quantizer recipe of `spec`: its recipe function's rules
    at the mode's `weight_bits` (in blocks of `block_size` input features
    if given), the same rules at 8 bits per channel for the ops matching
    `keep_8bit`, then the rules keeping ops float (ai-edge-quantizer lets
    a later rule override an earlier one for the ops it matches)."""
    from ai_edge_quantizer import recipe as recipes

    granularity = None if block_size is None else f"BLOCKWISE_{block_size}"
    base = list(getattr(recipes, spec.recipe)())
    rules = _with_weights(base, mode_spec.weight_bits, granularity)
    for pattern in keep_8bit:
        rules += _with_weights(base, 8, "CHANNELWISE", regex=pattern)
    rules += [_float_rule(pattern) for pattern in FLOAT_ONLY.values()]
    rules += [_float_rule(pattern) for pattern in keep_float]
    if mode_spec.needs_ranges and not mode_spec.integer_io:
        rules += [dict(rule) for rule in _FLOAT_IO]
    return rules


def _quantize(float_tflite, ranges, rules, sample):
    """ai-edge-quantizer's quantization with `rules` and `ranges`."""
    from ai_edge_quantizer import quantizer

    calibration = {
        name: {
            "min": np.array([low], "float32"),
            "max": np.array([high], "float32"),
        }
        for name, (low, high) in ranges.items()
    }
    try:
        with warnings.catch_warnings():  # its own debugging interpreter
            warnings.simplefilter("ignore")
            result = quantizer.Quantizer(
                bytearray(float_tflite), rules
            ).quantize(calibration or None, enable_progress_report=False)
    except Exception as error:  # any refusal: one message naming it
        raise ExportError(_refusal(error, sample)) from error
    return bytes(result.quantized_model)


# Ops whose tensors ai-edge-quantizer quantizes alike (its
# `SAME_AS_INPUT_SCALE` and `SAME_AS_OUTPUT_SCALE` constraints): every
# activation input and output of one of these ops takes one quantization.
SAME_SCALE = frozenset(
    {
        # The inputs take the output's quantization.
        "CONCATENATION",
        "PACK",
        "MAXIMUM",
        "PADV2",
        "SELECT",
        "SELECT_V2",
        "DYNAMIC_UPDATE_SLICE",
        # The outputs take the input's.
        "AVERAGE_POOL_2D",
        "MAX_POOL_2D",
        "RESHAPE",
        "TRANSPOSE",
        "SLICE",
        "STRIDED_SLICE",
        "SPLIT",
        "UNPACK",
        "PAD",
        "MIRROR_PAD",
        "SPACE_TO_DEPTH",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "GATHER",
        "GATHER_ND",
        "BROADCAST_TO",
        "REDUCE_MIN",
    }
)


def shared_ranges(float_tflite, ranges, keep_float=()):
    """`ranges` with the tensors that must share one quantization given
    one range: the union of their ranges.

    ai-edge-quantizer gives a CONCATENATION's inputs the output's scale
    and zero point, and an AVERAGE_POOL_2D's (MAX_POOL_2D's, RESHAPE's,
    ...) output its input's (`SAME_SCALE`). Where a tensor's own range
    differs (a DenseNet block's concatenations feed one another, a
    transition's average pool feeds the next block's first one), it
    inserts a QUANTIZE that requantizes the tensor. A requantization
    between nearly equal scales is not noise but a gain error: every small
    value rounds back to the same integer, so `0.0498 -> 0.0504` scales
    the values within 42 steps of the zero point by 1.012, on every
    pixel alike; the error survives average pooling and adds up over
    chained concatenations (DenseNet121 int8: 19 such QUANTIZE ops, 2 to
    3 dB below the converter). The
    TFLite converter gives each connected group one scale, as here: the
    groups are joined through every op of `SAME_SCALE` (activation
    tensors only; ops matching `keep_float` stay float and join nothing).
    """
    model = flatbuffer.read(float_tflite)
    parent = {}

    def root(name):
        while parent.setdefault(name, name) != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for subgraph in model.subgraphs:
        names = [
            flatbuffer.tensor_name(tensor.name) for tensor in subgraph.tensors
        ]
        for op in subgraph.operators:
            if flatbuffer.op_name(model, op) not in SAME_SCALE:
                continue
            outputs = [names[i] for i in op.outputs if i >= 0]
            scope = "".join(f"{name};" for name in outputs)
            if any(re.search(pattern, scope) for pattern in keep_float):
                continue
            tensors = [
                names[i]
                for i in [*op.inputs, *op.outputs]
                if i >= 0 and names[i] in ranges
            ]
            for name in tensors[1:]:
                parent[root(name)] = root(tensors[0])
    groups = {}
    for name in parent:
        groups.setdefault(root(name), []).append(name)
    shared = dict(ranges)
    for members in groups.values():
        low = min(ranges[name][0] for name in members)
        high = max(ranges[name][1] for name in members)
        shared.update({name: (low, high) for name in members})
    return shared


def _ops_without_ranges(float_tflite, ranges):
    """Patterns naming the ops that read or write a float activation
    tensor with no range: with float fallback they stay float."""
    model = flatbuffer.read(float_tflite)
    patterns = []
    for subgraph in model.subgraphs:
        names = [
            flatbuffer.tensor_name(tensor.name) for tensor in subgraph.tensors
        ]
        constant = [_is_constant(model, tensor) for tensor in subgraph.tensors]
        floating = [
            tensor.type == schema.TensorType.FLOAT32
            for tensor in subgraph.tensors
        ]
        for op in subgraph.operators:
            touched = [i for i in [*op.inputs, *op.outputs] if i >= 0]
            if len(op.outputs) and any(
                floating[i] and not constant[i] and names[i] not in ranges
                for i in touched
            ):
                patterns.append(output_named(names[op.outputs[0]]))
    return patterns


def _with_weights(rules, bits, granularity=None, **changes):
    """Copies of `rules` whose weights take `bits` (and `granularity` if
    given), with `changes` (e.g. another `regex`) applied to each."""
    copies = []
    for rule in copy.deepcopy(rules):
        weights = rule.get("op_config", {}).get("weight_tensor_config")
        if weights is not None:
            weights["num_bits"] = bits
            if granularity is not None:
                weights["granularity"] = granularity
        copies.append({**rule, **changes})
    return copies


def _float_rule(pattern):
    return {"regex": pattern, "operation": "*", "algorithm_key": "no_quantize"}


def _refusal(error, sample):
    reason = " ".join(str(error).split())[:400]
    if sample is None and "not found" in reason:
        return (
            f"{reason}. No observer sees this tensor, and the model keeps no "
            "replay sample to measure it: observe the model with "
            "`replay_samples` > 0 (the default) and calibrate again."
        )
    return f"ai-edge-quantizer cannot quantize this model: {reason}"


def replayed_ranges(float_tflite, sample):
    """`{tensor name: (min, max)}` of every float activation tensor, over
    `sample` run through the float model in LiteRT."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.interpreter import OpResolverType

    constants = constant_names(float_tflite)
    lows, highs = {}, {}
    with warnings.catch_warnings():  # "for debugging purposes only"
        warnings.simplefilter("ignore")
        runner = Interpreter(
            model_content=bytes(float_tflite),
            experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=(
                OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            ),
        )
        for _ in _batches(runner, sample):
            for name, values in _float_tensors(runner):
                if name in constants:
                    continue
                lows[name] = min(lows.get(name, np.inf), float(values.min()))
                highs[name] = max(highs.get(name, -np.inf), float(values.max()))
    return {name: widen_range(lows[name], highs[name]) for name in lows}


def _batches(runner, sample):
    """Runs `runner` on `sample`, whole if the model's batch can change,
    else one sample at a time; yields after each run."""
    details = runner.get_input_details()
    count = len(sample[0])
    fixed = any(d["shape_signature"][0] != -1 for d in details)
    size = 1 if fixed else count
    for start in range(0, count, size):
        for detail, values in zip(details, sample):
            batch = np.asarray(values[start : start + size])
            runner.resize_tensor_input(detail["index"], batch.shape)
        runner.allocate_tensors()
        for detail, values in zip(details, sample):
            batch = np.asarray(values[start : start + size])
            runner.set_tensor(detail["index"], batch.astype(detail["dtype"]))
        runner.invoke()
        yield start


def _float_tensors(runner):
    """`(name, values)` of every float32 tensor holding data after a run,
    in every subgraph (a recurrent layer's loop body is one)."""
    for subgraph in range(runner.num_subgraphs()):
        for detail in runner.get_tensor_details(subgraph):
            if detail["dtype"] != np.float32 or not detail["name"]:
                continue
            try:
                values = runner.get_tensor(detail["index"], subgraph)
            except ValueError:
                continue
            if values.size and np.all(np.isfinite(values)):
                yield detail["name"], values


def constant_names(tflite):
    """Names of the tensors whose values are stored in the model (weights,
    biases, constants): never given a range, or AEQ would quantize them
    per tensor with it."""
    model = flatbuffer.read(tflite)
    return {
        flatbuffer.tensor_name(tensor.name)
        for subgraph in model.subgraphs
        for tensor in subgraph.tensors
        if _is_constant(model, tensor)
    }


def _is_constant(model, tensor):
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def _check_runs(tflite):
    """Refuses a model LiteRT cannot prepare, rather than writing it."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        runner = Interpreter(model_content=tflite)
        runner.allocate_tensors()
    except (RuntimeError, ValueError) as error:
        raise ExportError(
            f"LiteRT cannot prepare the quantized model: {error}"
        ) from error


def operator_names(tflite):
    """The builtin op names of a `.tflite`'s main graph, in order."""
    model = flatbuffer.read(tflite)
    return [
        flatbuffer.op_name(model, op) for op in model.subgraphs[0].operators
    ]


def output_named(name):
    """A regular expression matching the op whose first output is `name`:
    ai-edge-quantizer matches an op's output names joined by `;`, with a
    `;` at the end."""
    return rf"^{re.escape(name)};"
