"""Float-graph rewrites that let the engine hold more ops in integers.

Some float ops have an exact equivalent that ai-edge-quantizer quantizes
where it leaves the original float. The engine applies `REWRITES` to the
float `.tflite` before it replays and quantizes it; each rewrite keeps the
op's output tensor (name and all), so observed ranges and `keep_float`
patterns still find it.

- `NEG` (the mean subtraction of LayerNormalization's decomposition) becomes
  `MUL` by a constant -1, which LiteRT runs in int8 and int16;
- for int16 activations, `SQUARED_DIFFERENCE` (LayerNormalization's
  variance) becomes `SUB` then `MUL` of the difference by itself, both of
  which have int16 kernels (int8 keeps the fused op, which has one);
- for `target="micro"`, `GELU`, which TFLM lacks, becomes its tanh form
  written with ops TFLM has (`x * LOGISTIC(...)`, decision D47).

The new tensors (the -1, the difference, GELU's steps) are named after
the op's output with a `/kq_` suffix; the replay sample measures the
ranges of those that carry activations.

After quantization, `quantize_unused_outputs` gives an op's outputs that
nothing reads (the forget gate a SPLIT produces at an unrolled LSTM's first
step, where the cell state is zero) the type and quantization of the op's
other outputs: ai-edge-quantizer leaves them float, and LiteRT's XNNPACK
delegate refuses a SPLIT with mixed outputs. Decision D33.

`general_int16_arithmetic` then clears `pot_scale_int16` on every int16
ADD and SUB, as the TFLite converter's 16x8 quantizer does: with the flag
set (the schema's default, which ai-edge-quantizer keeps), LiteRT runs an
ADD whose three scales all happen to be powers of two (within 0.07 %) and
zero points 0 with its power-of-two kernel, which only shifts an input
right: an input scale above the output's fails to prepare
(`add.cc: input1_shift <= 0`). Symmetric int16 scales are `bound / 32767`,
so a bound of exactly 1 or 2 gives one: `Rescaling(1 / 127.5, offset=-1)`
on [0, 255] images (MobileNetV3's preprocessing) adds the constant -1
(scale 2**-15) to a product in [0, 2] (2**-14) giving [-1, 1] (2**-15).
The general kernel takes any scales.

`unclipped_int64_biases` gives back to 16x8's int64 biases the values
ai-edge-quantizer clipped to int32's range (it quantizes every bias with
32 bits): hard-sigmoid's `x + 3`, folded into the bias of the
squeeze-excite convolution before it, is 4.2e9 steps of a bias scale
(input scale times weight scale) of 7e-10 when the int16 input is small,
and was cut to 2**31 - 1, half of it lost. LiteRT and TFLM accumulate
16x8 convolutions in int64, so the engine writes the whole value,
quantized again from the float model's bias.

>>> from keras_quant.conversion.converter import run_converter
>>> from keras_quant.conversion.engine import operator_names
>>> inputs = keras.Input((5, 7))
>>> norm = keras.Model(inputs, keras.layers.LayerNormalization()(inputs))
>>> float_tflite = run_converter(norm, keras_quant.Mode.FLOAT32)
>>> operator_names(float_tflite)[:3]
['MEAN', 'NEG', 'SQUARED_DIFFERENCE']
>>> operator_names(apply(float_tflite, "int16x8"))[:4]
['MEAN', 'MUL', 'SUB', 'MUL']
"""

import dataclasses

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from keras_quant.options import ConvertOptions
from keras_quant.runtime import flatbuffer

_MINUS_ONE_SUFFIX = "/kq_minus_one"
_FLOAT = schema.TensorType.FLOAT32


def _negation_as_multiplication(model, subgraph, op):
    """`NEG(x)` as `MUL(x, -1)`, the -1 a float32 scalar constant."""
    (operand,) = op.inputs
    output_name = flatbuffer.tensor_name(subgraph.tensors[op.outputs[0]].name)
    minus_one = _add_constant(
        model, subgraph, output_name + _MINUS_ONE_SUFFIX, np.float32(-1.0)
    )
    op.opcodeIndex = flatbuffer.opcode_index(model, schema.BuiltinOperator.MUL)
    op.inputs = [operand, minus_one]
    op.builtinOptionsType = schema.BuiltinOptions.MulOptions
    op.builtinOptions = schema.MulOptionsT()


def _squared_difference_as_product(model, subgraph, op):
    """`SQUARED_DIFFERENCE(a, b)` as `d = SUB(a, b)` then `MUL(d, d)`."""
    difference = _like(subgraph, op.outputs[0], "/kq_difference")
    _insert(
        model, subgraph, op, schema.BuiltinOperator.SUB, op.inputs, difference
    )
    op.opcodeIndex = flatbuffer.opcode_index(model, schema.BuiltinOperator.MUL)
    op.inputs = [difference, difference]
    op.builtinOptionsType = schema.BuiltinOptions.MulOptions
    op.builtinOptions = schema.MulOptionsT()


def _gelu_as_logistic(model, subgraph, op):
    """`GELU(x)` as `x * LOGISTIC(x * (a + b * x * x))`, the tanh form of
    GELU (`0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3)))`) written with
    `0.5 (1 + tanh(z)) = sigmoid(2 z)`: five MULs, an ADD and a LOGISTIC,
    ops TFLM has in int8 and int16. It is GELU's `approximate=True`
    exactly, and differs from the erf form by at most 4.8e-4.
    """
    (x,) = op.inputs[:1]
    output = op.outputs[0]
    name = flatbuffer.tensor_name(subgraph.tensors[output].name)
    scale = 2 * np.sqrt(2 / np.pi)

    def constant(suffix, value):
        return _add_constant(model, subgraph, name + suffix, np.float32(value))

    def step(builtin, inputs, suffix=None):
        result = output if suffix is None else _like(subgraph, output, suffix)
        _insert(model, subgraph, op, builtin, inputs, result)
        return result

    mul, add = schema.BuiltinOperator.MUL, schema.BuiltinOperator.ADD
    square = step(mul, [x, x], "/kq_square")
    cubic = step(mul, [square, constant("/kq_b", scale * 0.044715)], "/kq_bx2")
    factor = step(add, [cubic, constant("/kq_a", scale)], "/kq_factor")
    argument = step(mul, [x, factor], "/kq_argument")
    gate = step(schema.BuiltinOperator.LOGISTIC, [argument], "/kq_gate")
    step(mul, [x, gate])
    subgraph.operators.remove(op)


def _like(subgraph, index, suffix):
    """A new float tensor shaped like tensor `index`, named after it."""
    tensor = subgraph.tensors[index]
    return _add_tensor(
        subgraph,
        flatbuffer.tensor_name(tensor.name) + suffix,
        tensor.shape,
        tensor.shapeSignature,
    )


_OPTIONS = {
    schema.BuiltinOperator.MUL: ("MulOptions", schema.MulOptionsT),
    schema.BuiltinOperator.ADD: ("AddOptions", schema.AddOptionsT),
    schema.BuiltinOperator.SUB: ("SubOptions", schema.SubOptionsT),
    schema.BuiltinOperator.LOGISTIC: (None, None),
}


def _insert(model, subgraph, before, builtin, inputs, output):
    """Inserts a `builtin` op computing `output` from `inputs` in front
    of op `before`."""
    new = schema.OperatorT()
    new.opcodeIndex = flatbuffer.opcode_index(model, builtin)
    new.inputs = list(inputs)
    new.outputs = [output]
    kind, options = _OPTIONS[builtin]
    if kind is not None:
        new.builtinOptionsType = getattr(schema.BuiltinOptions, kind)
        new.builtinOptions = options()
    subgraph.operators.insert(subgraph.operators.index(before), new)


@dataclasses.dataclass(frozen=True)
class Rewrite:
    """A rewrite, editing `(model, subgraph, op)` in place, and when it
    applies: for these modes, or for these deployment targets."""

    function: object
    modes: frozenset = frozenset()
    targets: frozenset = frozenset()

    def applies(self, options):
        return (
            options.mode.value in self.modes or options.target in self.targets
        )


REWRITES = {
    "NEG": Rewrite(
        _negation_as_multiplication, frozenset({"int8", "int8_only", "int16x8"})
    ),
    "SQUARED_DIFFERENCE": Rewrite(
        _squared_difference_as_product, frozenset({"int16x8"})
    ),
    # TFLM has no GELU kernel.
    "GELU": Rewrite(_gelu_as_logistic, targets=frozenset({"micro"})),
}


def rewritten(op, options):
    """Whether `apply` rewrites builtin `op` for `options`."""
    rewrite = REWRITES.get(op)
    return rewrite is not None and rewrite.applies(options)


def apply(tflite, options):
    """The bytes of `tflite` with every op `REWRITES` has for `options` (a
    `ConvertOptions`, or a mode's name) rewritten; the same bytes when
    there is none."""
    options = ConvertOptions.of(options)
    model = flatbuffer.read(tflite)
    count = 0
    for subgraph in model.subgraphs:
        for op in list(subgraph.operators):
            name = flatbuffer.op_name(model, op)
            if rewritten(name, options):
                REWRITES[name].function(model, subgraph, op)
                count += 1
    return flatbuffer.write(model) if count else tflite


def _add_constant(model, subgraph, name, value):
    """Appends a float32 scalar constant tensor; returns its index."""
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(np.float32(value).tobytes(), np.uint8)
    model.buffers.append(buffer)
    return _add_tensor(
        subgraph, name, np.array([], np.int32), buffer=len(model.buffers) - 1
    )


def _add_tensor(subgraph, name, shape, signature=None, buffer=0):
    """Appends a float32 tensor (an activation unless `buffer` holds its
    values); returns its index."""
    tensor = schema.TensorT()
    tensor.shape = shape
    tensor.shapeSignature = signature
    tensor.hasRank = True
    tensor.type = _FLOAT
    tensor.buffer = buffer
    tensor.name = name.encode()
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def quantize_unused_outputs(tflite):
    """The bytes of a quantized `tflite` where every float output nothing
    reads, of an op with integer outputs, takes its sibling's type and
    quantization; the same bytes when there is none."""
    model = flatbuffer.read(tflite)
    repaired = 0
    for subgraph in model.subgraphs:
        read = {i for op in subgraph.operators for i in op.inputs}
        read.update(subgraph.outputs)
        for op in subgraph.operators:
            outputs = [subgraph.tensors[i] for i in op.outputs]
            integer = [t for t in outputs if t.type != _FLOAT]
            for index, tensor in zip(op.outputs, outputs):
                if integer and index not in read and tensor.type == _FLOAT:
                    tensor.type = integer[0].type
                    tensor.quantization = integer[0].quantization
                    repaired += 1
    return flatbuffer.write(model) if repaired else tflite


# The options of the int16 ops whose LiteRT kernel has a power-of-two path.
_POT_SCALE_OPTIONS = {
    schema.BuiltinOperator.ADD: ("AddOptions", schema.AddOptionsT),
    schema.BuiltinOperator.SUB: ("SubOptions", schema.SubOptionsT),
}


def general_int16_arithmetic(tflite):
    """The bytes of a quantized `tflite` with `pot_scale_int16` false on
    every ADD and SUB computing int16: LiteRT's general int16 kernel,
    which takes any input and output scales; the same bytes when there is
    none to change."""
    model = flatbuffer.read(tflite)
    changed = 0
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if builtin not in _POT_SCALE_OPTIONS or not len(op.outputs):
                continue
            output = subgraph.tensors[op.outputs[0]]
            if output.type != schema.TensorType.INT16:
                continue
            kind, options = _POT_SCALE_OPTIONS[builtin]
            if op.builtinOptions is None:
                op.builtinOptionsType = getattr(schema.BuiltinOptions, kind)
                op.builtinOptions = options()
            if op.builtinOptions.potScaleInt16:
                op.builtinOptions.potScaleInt16 = False
                changed += 1
    return flatbuffer.write(model) if changed else tflite


# The bias input of each op that has one, by position.
_BIAS_INPUT = {
    "CONV_2D": 2,
    "DEPTHWISE_CONV_2D": 2,
    "FULLY_CONNECTED": 2,
    "TRANSPOSE_CONV": 3,
}
_INT32_LIMIT = 2**31 - 1


def unclipped_int64_biases(tflite, float_tflite):
    """The bytes of a quantized `tflite` whose int64 biases clipped at
    int32's limits are quantized again, unclipped, from the biases of
    `float_tflite` (the model it was quantized from: its weighted ops are
    the same, in the same order); the same bytes when none was clipped."""
    model = flatbuffer.read(tflite)
    source = flatbuffer.read(float_tflite)
    changed = 0
    for subgraph, original in zip(model.subgraphs, source.subgraphs):
        pairs = _weighted_ops(model, subgraph), _weighted_ops(source, original)
        if [name for name, _ in pairs[0]] != [name for name, _ in pairs[1]]:
            continue
        for (name, op), (_, float_op) in zip(*pairs):
            position = _BIAS_INPUT[name]
            if len(op.inputs) <= position or op.inputs[position] < 0:
                continue
            bias = subgraph.tensors[op.inputs[position]]
            data = model.buffers[bias.buffer].data
            if bias.type != schema.TensorType.INT64 or data is None:
                continue
            values = np.frombuffer(bytes(data), np.int64)
            if not np.any(np.abs(values) >= _INT32_LIMIT):
                continue
            float_bias = original.tensors[float_op.inputs[position]]
            real = np.frombuffer(
                bytes(source.buffers[float_bias.buffer].data), np.float32
            )
            scale = np.asarray(bias.quantization.scale, np.float64)
            wide = np.round(real / scale).astype(np.int64)
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(wide.tobytes(), np.uint8)
            model.buffers.append(buffer)  # the old one may be shared
            bias.buffer = len(model.buffers) - 1
            changed += 1
    return flatbuffer.write(model) if changed else tflite


def _weighted_ops(model, subgraph):
    """`(name, op)` of the ops of `subgraph` that have a bias input."""
    named = [(flatbuffer.op_name(model, op), op) for op in subgraph.operators]
    return [(name, op) for name, op in named if name in _BIAS_INPUT]
