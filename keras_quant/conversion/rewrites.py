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
  which have int16 kernels (int8 keeps the fused op, which has one).

The new tensors (the -1, the difference) are named after the op's output
with a `/kq_` suffix; the replay sample measures the difference's range.

After quantization, `quantize_unused_outputs` gives an op's outputs that
nothing reads (the forget gate a SPLIT produces at an unrolled LSTM's first
step, where the cell state is zero) the type and quantization of the op's
other outputs: ai-edge-quantizer leaves them float, and LiteRT's XNNPACK
delegate refuses a SPLIT with mixed outputs. Decision D33.

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

import numpy as np
from ai_edge_litert import schema_py_generated as schema

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
    op.opcodeIndex = _opcode_index(model, schema.BuiltinOperator.MUL)
    op.inputs = [operand, minus_one]
    op.builtinOptionsType = schema.BuiltinOptions.MulOptions
    op.builtinOptions = schema.MulOptionsT()


def _squared_difference_as_product(model, subgraph, op):
    """`SQUARED_DIFFERENCE(a, b)` as `d = SUB(a, b)` then `MUL(d, d)`."""
    output = subgraph.tensors[op.outputs[0]]
    difference = _add_tensor(
        subgraph,
        flatbuffer.tensor_name(output.name) + "/kq_difference",
        output.shape,
        output.shapeSignature,
    )
    subtraction = schema.OperatorT()
    subtraction.opcodeIndex = _opcode_index(model, schema.BuiltinOperator.SUB)
    subtraction.inputs = list(op.inputs)
    subtraction.outputs = [difference]
    subtraction.builtinOptionsType = schema.BuiltinOptions.SubOptions
    subtraction.builtinOptions = schema.SubOptionsT()
    subgraph.operators.insert(subgraph.operators.index(op), subtraction)
    op.opcodeIndex = _opcode_index(model, schema.BuiltinOperator.MUL)
    op.inputs = [difference, difference]
    op.builtinOptionsType = schema.BuiltinOptions.MulOptions
    op.builtinOptions = schema.MulOptionsT()


# Builtin op name -> (rewrite(model, subgraph, op) editing in place, the
# modes it applies to).
REWRITES = {
    "NEG": (_negation_as_multiplication, {"int8", "int8_only", "int16x8"}),
    "SQUARED_DIFFERENCE": (_squared_difference_as_product, {"int16x8"}),
}


def apply(tflite, mode):
    """The bytes of `tflite` with every op `REWRITES` has for `mode`
    rewritten; the same bytes when there is none."""
    model = flatbuffer.read(tflite)
    rewritten = 0
    for subgraph in model.subgraphs:
        for op in list(subgraph.operators):
            rewrite, modes = REWRITES.get(
                flatbuffer.op_name(model, op), (None, ())
            )
            if mode in modes:
                rewrite(model, subgraph, op)
                rewritten += 1
    return flatbuffer.write(model) if rewritten else tflite


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


def _opcode_index(model, builtin):
    """The index of `builtin`'s operator code, added if the model has none."""
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


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
