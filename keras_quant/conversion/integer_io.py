"""Edits of a quantized `.tflite`: uint8 inputs and outputs, and `SHAPE`
ops reading integer tensors.

ai-edge-quantizer gives integer-only models int8 inputs and outputs. For
`io_dtype="uint8"` (older accelerators, camera pipelines), each int8 model
input gets a uint8 tensor in front of it and each int8 output one behind
it, joined by a `QUANTIZE` op, which LiteRT runs as an integer
requantization (the same real values: zero point + 128, same scale), as
the TFLite converter does for `inference_input_type=tf.uint8`. Edits the
model's schema objects (`flatbuffer`).
"""

import copy

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from keras_quant.runtime import flatbuffer

_UINT8_SHIFT = 128


def to_uint8_io(tflite):
    """The model with its int8 inputs and outputs made uint8.

    >>> to_uint8_io(b"not a model")
    Traceback (most recent call last):
    ...
    ValueError: not a TFLite model
    """
    if bytes(tflite[4:8]) != b"TFL3":
        raise ValueError("not a TFLite model")
    model = flatbuffer.read(tflite)
    subgraph = model.subgraphs[0]
    opcode = _quantize_opcode(model)
    renamed = {}
    for position, index in enumerate(subgraph.inputs):
        new = _uint8_twin(model, subgraph, index, "uint8_input")
        subgraph.operators.insert(0, _op(opcode, new, index))
        subgraph.inputs[position] = renamed[index] = new
    for position, index in enumerate(subgraph.outputs):
        new = _uint8_twin(model, subgraph, index, "uint8_output")
        subgraph.operators.append(_op(opcode, index, new))
        subgraph.outputs[position] = renamed[index] = new
    for signature in model.signatureDefs or ():
        for entry in [*signature.inputs, *signature.outputs]:
            entry.tensorIndex = renamed.get(
                entry.tensorIndex, entry.tensorIndex
            )
    return flatbuffer.write(model)


def _uint8_twin(model, subgraph, index, suffix):
    """A new uint8 tensor holding the same real values as int8 `index`."""
    original = subgraph.tensors[index]
    if original.type != schema.TensorType.INT8:
        raise ValueError(
            f"tensor {original.name!r} is not int8; only int8 inputs and "
            "outputs can be made uint8"
        )
    twin = copy.deepcopy(original)
    twin.type = schema.TensorType.UINT8
    twin.name = flatbuffer.tensor_name(original.name) + f"/{suffix}"
    twin.quantization.zeroPoint = (
        np.asarray(original.quantization.zeroPoint) + _UINT8_SHIFT
    )
    buffer = schema.BufferT()
    model.buffers.append(buffer)
    twin.buffer = len(model.buffers) - 1
    subgraph.tensors.append(twin)
    return len(subgraph.tensors) - 1


def _op(opcode, source, target):
    op = schema.OperatorT()
    op.opcodeIndex = opcode
    op.inputs = [source]
    op.outputs = [target]
    return op


def _quantize_opcode(model):
    """The index of the QUANTIZE operator code, added if missing."""
    code = schema.BuiltinOperator.QUANTIZE
    for index, entry in enumerate(model.operatorCodes):
        if entry.builtinCode == code:
            return index
    entry = schema.OperatorCodeT()
    entry.builtinCode = code
    entry.deprecatedBuiltinCode = code
    entry.version = 1
    model.operatorCodes.append(entry)
    return len(model.operatorCodes) - 1


def shape_from_integers(tflite):
    """The model with each `SHAPE` reading the integer tensor itself.

    ai-edge-quantizer leaves a `DEQUANTIZE` in front of the `SHAPE` op a
    dynamic-batch Flatten or transposed convolution reads its input's
    dimensions with: a float tensor in an integer-only model, computed for
    nothing but its shape. `SHAPE` reads any type, so the `DEQUANTIZE` and
    its tensor go.
    """
    model = flatbuffer.read(tflite)
    subgraph = model.subgraphs[0]
    codes = [flatbuffer.op_name(model, op) for op in subgraph.operators]
    readers = {}
    for op, code in zip(subgraph.operators, codes):
        for index in op.inputs:
            readers.setdefault(index, []).append((op, code))
    unused = []
    for op, code in list(zip(subgraph.operators, codes)):
        found = readers.get(op.outputs[0], []) if code == "DEQUANTIZE" else []
        if found and all(reader == "SHAPE" for _, reader in found):
            for reader, _ in found:
                reader.inputs = [op.inputs[0]]
            subgraph.operators.remove(op)
            unused.append(op.outputs[0])
    for index in sorted(unused, reverse=True):  # later indices first
        _remove_tensor(model, subgraph, index)
    return flatbuffer.write(model)


def _remove_tensor(model, subgraph, index):
    """Deletes tensor `index`, renumbering every reference after it."""
    del subgraph.tensors[index]

    def shift(indices):
        return [i - 1 if i > index else i for i in indices]

    for op in subgraph.operators:
        op.inputs, op.outputs = shift(op.inputs), shift(op.outputs)
        if op.intermediates is not None:
            op.intermediates = shift(op.intermediates)
    subgraph.inputs, subgraph.outputs = (
        shift(subgraph.inputs),
        shift(subgraph.outputs),
    )
    for signature in model.signatureDefs or ():
        for entry in [*signature.inputs, *signature.outputs]:
            entry.tensorIndex = shift([entry.tensorIndex])[0]
