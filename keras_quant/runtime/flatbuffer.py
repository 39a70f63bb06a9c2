"""A `.tflite` as the schema's mutable objects, read and written back.

The engine, the tensor map and the integer-I/O edits read models through
`ai_edge_litert.tools.flatbuffer_utils` (LiteRT's own tool module, the one
ai-edge-quantizer uses; it resolves buffers stored by offset, which
ai-edge-quantizer writes).

>>> tensor_name(b"dense/MatMul")
'dense/MatMul'
"""

from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils


def read(tflite):
    """The model's object tree, from its bytes."""
    return flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))


def write(model):
    """The bytes of an object tree from `read`."""
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def tensor_name(name):
    """A tensor's name as text (the schema stores bytes)."""
    return name.decode() if isinstance(name, bytes) else name


def op_name(model, op):
    """The builtin name of an operator (`"CONV_2D"`, ...)."""
    return flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)


def opcode_index(model, builtin):
    """The index of `builtin`'s operator code in `model`, added if the
    model has none."""
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1
