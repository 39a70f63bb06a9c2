"""Edits of a quantized `.tflite`: uint8 inputs and outputs, data
movement kept in integers, and `SHAPE` ops reading integer tensors.

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
    opcode = flatbuffer.opcode_index(model, schema.BuiltinOperator.QUANTIZE)
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


# Ops whose outputs are values of their data input, moved or repeated:
# in integers they keep the input's scale and zero point exactly.
# ai-edge-quantizer 0.10 leaves them float (no policy for them), between
# a DEQUANTIZE and a QUANTIZE; the converter quantizes them.
VALUE_MOVES = ("EXPAND_DIMS", "SQUEEZE", "TILE", "BROADCAST_TO")

_INTEGER = (
    schema.TensorType.INT8,
    schema.TensorType.INT16,
    schema.TensorType.UINT8,
)


def moves_in_integers(tflite):
    """The model with data movement between quantized tensors computed
    in integers, as the TFLite converter computes it.

    - an op of `VALUE_MOVES` that reads a dequantized tensor, or whose
      every reader quantizes its output the same way, reads the integer
      tensor and writes an integer one with the same quantization; a
      QUANTIZE behind it to the same quantization goes, one to another
      becomes a requantization, and a reader that needs float gets a
      DEQUANTIZE of its own;
    - a `FILL` of a constant whose every reader quantizes it the same way
      fills with the quantized constant (the zero initial state of a
      recurrent layer with a free batch size).

    Dynamic-batch UpSampling2D (`EXPAND_DIMS`, `TILE`) and a GRU's zero
    state (`FILL`) then leave no float tensor in an integer-only model.
    The same bytes are returned when there is nothing to move.
    """
    model = flatbuffer.read(tflite)
    subgraph = model.subgraphs[0]
    moved = 0
    while _move_one(model, subgraph):
        moved += 1
    if not moved:
        return tflite
    _drop_unread_dequantizes(model, subgraph)
    return flatbuffer.write(model)


def _move_one(model, subgraph):
    """Moves the first op that can compute in integers; whether one did."""
    graph = _Graph(model, subgraph)
    for op in subgraph.operators:
        name = graph.name(op)
        output = op.outputs[0] if op.outputs else -1
        if output < 0 or graph.is_integer(output) or graph.is_output(output):
            continue
        if name in VALUE_MOVES:
            source = graph.integer_source(op.inputs[0], output)
            if source is not None:
                op.inputs[0] = source
                graph.make_integer(output, source)
                return True
        if name == "FILL" and graph.is_constant(op.inputs[1]):
            target = graph.common_quantize(output)
            if target is not None:
                op.inputs[1] = graph.quantized_constant(op.inputs[1], target)
                graph.make_integer(output, target)
                return True
    return False


class _Graph:
    """Who writes and who reads each tensor of a subgraph, and the edits
    `moves_in_integers` makes."""

    def __init__(self, model, subgraph):
        self.model, self.subgraph = model, subgraph
        self.writer = {i: op for op in subgraph.operators for i in op.outputs}
        self.readers = {}
        for op in subgraph.operators:
            for index in op.inputs:
                self.readers.setdefault(index, []).append(op)

    def name(self, op):
        return flatbuffer.op_name(self.model, op)

    def tensor(self, index):
        return self.subgraph.tensors[index]

    def is_integer(self, index):
        return self.tensor(index).type in _INTEGER

    def is_output(self, index):
        return index in self.subgraph.outputs

    def is_constant(self, index):
        writer = self.writer.get(index)
        buffer = self.model.buffers[self.tensor(index).buffer]
        return writer is None and buffer.data is not None

    def integer_source(self, index, output):
        """An integer tensor to read instead of float `index`: the input
        of the DEQUANTIZE that writes it, else a new QUANTIZE of it to
        what every reader of `output` quantizes to; None if neither."""
        writer = self.writer.get(index)
        if writer is not None and self.name(writer) == "DEQUANTIZE":
            if self.is_integer(writer.inputs[0]):
                return writer.inputs[0]
        target = self.common_quantize(output)
        if target is None:
            return None
        return self.quantized_copy(index, target, before=self.readers[index])

    def common_quantize(self, index):
        """The output of the QUANTIZE ops reading `index`, if they are all
        its readers and quantize it the same way; else None."""
        readers = self.readers.get(index, [])
        if not readers or any(self.name(r) != "QUANTIZE" for r in readers):
            return None
        targets = [r.outputs[0] for r in readers]
        first = self.tensor(targets[0])
        if all(_same_quantization(first, self.tensor(t)) for t in targets):
            return targets[0]
        return None

    def quantized_copy(self, index, like, before):
        """A new QUANTIZE of `index` to tensor `like`'s type and
        quantization, placed before the first of the ops `before`."""
        copy_index = self._twin(index, like, "/kq_quantized")
        self._insert(schema.BuiltinOperator.QUANTIZE, index, copy_index, before)
        return copy_index

    def quantized_constant(self, index, like):
        """A new constant holding constant `index` quantized as `like`."""
        tensor, target = self.tensor(index), self.tensor(like)
        values = np.frombuffer(
            bytes(self.model.buffers[tensor.buffer].data), np.float32
        )
        scale = np.float32(target.quantization.scale[0])
        zero = int(target.quantization.zeroPoint[0])
        dtype = _NUMPY[target.type]
        limits = np.iinfo(dtype)
        integers = np.clip(
            np.round(values / scale) + zero, limits.min, limits.max
        ).astype(dtype)
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(integers.tobytes(), np.uint8)
        self.model.buffers.append(buffer)
        new = self._twin(index, like, "/kq_quantized")
        self.tensor(new).buffer = len(self.model.buffers) - 1
        return new

    def make_integer(self, index, like):
        """Tensor `index` takes `like`'s type and quantization; each of its
        readers is served: a QUANTIZE to the same quantization is removed,
        one to another requantizes, any other reader gets a DEQUANTIZE."""
        float_twin = None
        readers = list(self.readers.get(index, []))
        tensor = self.tensor(index)
        tensor.type = self.tensor(like).type
        tensor.quantization = copy.deepcopy(self.tensor(like).quantization)
        for reader in readers:
            if self.name(reader) != "QUANTIZE":
                if float_twin is None:
                    float_twin = self._float_twin(index, readers)
                reader.inputs = [
                    float_twin if i == index else i for i in reader.inputs
                ]
            elif _same_quantization(tensor, self.tensor(reader.outputs[0])):
                self._bypass(reader, index)

    def _bypass(self, quantize, index):
        """Removes `quantize`, its readers reading `index` instead."""
        removed = quantize.outputs[0]
        if self.is_output(removed):
            return  # a model output keeps its tensor: a requantization
        for op in self.subgraph.operators:
            op.inputs = [index if i == removed else i for i in op.inputs]
        self.subgraph.operators.remove(quantize)

    def _float_twin(self, index, readers):
        twin = self._twin(index, None, "/kq_dequantized")
        self._insert(schema.BuiltinOperator.DEQUANTIZE, index, twin, readers)
        return twin

    def _twin(self, index, like, suffix):
        """A new tensor shaped like `index`, typed and quantized like
        tensor `like` (float32 and unquantized if None)."""
        twin = copy.deepcopy(self.tensor(index))
        twin.name = flatbuffer.tensor_name(twin.name) + suffix
        twin.buffer = 0
        if like is None:
            twin.type, twin.quantization = schema.TensorType.FLOAT32, None
        else:
            twin.type = self.tensor(like).type
            twin.quantization = copy.deepcopy(self.tensor(like).quantization)
        self.subgraph.tensors.append(twin)
        return len(self.subgraph.tensors) - 1

    def _insert(self, builtin, source, target, before):
        """A `builtin` op from `source` to `target`, before the first of
        the ops `before`."""
        op = schema.OperatorT()
        op.opcodeIndex = flatbuffer.opcode_index(self.model, builtin)
        op.inputs, op.outputs = [source], [target]
        operators = self.subgraph.operators
        operators.insert(min(operators.index(b) for b in before), op)


_NUMPY = {
    schema.TensorType.INT8: np.int8,
    schema.TensorType.INT16: np.int16,
    schema.TensorType.UINT8: np.uint8,
}


def _same_quantization(first, second):
    """Whether two tensors have one type, scales and zero points."""
    a, b = first.quantization, second.quantization
    if first.type != second.type or a is None or b is None:
        return False
    return np.array_equal(
        np.asarray(a.scale), np.asarray(b.scale)
    ) and np.array_equal(np.asarray(a.zeroPoint), np.asarray(b.zeroPoint))


def _drop_unread_dequantizes(model, subgraph):
    """Removes the DEQUANTIZE ops nothing reads any more, and their
    tensors."""
    read = {i for op in subgraph.operators for i in op.inputs}
    read.update(subgraph.outputs)
    unused = []
    for op in list(subgraph.operators):
        name = flatbuffer.op_name(model, op)
        if name == "DEQUANTIZE" and op.outputs[0] not in read:
            subgraph.operators.remove(op)
            unused.append(op.outputs[0])
    for index in sorted(unused, reverse=True):  # later indices first
        _remove_tensor(model, subgraph, index)


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
