"""Repairs applied to the converter's output, one function per known issue.

Each fix-up takes the `.tflite` bytes and returns corrected bytes; a mode
lists the ones it needs in `modes.MODES`.

`widen_int16x8_biases`: converting a graph whose ranges come from 16-bit
fake-quant ops (the 16x8 mode of keras-quant), the TF 2.21 converter stores
Conv/Dense biases as int32, while TFLite's kernels for int16 activations
read int64 biases; the model then runs and returns garbage (seen: outputs
off by 10 on logits of magnitude 10). The integer values are already right
(scale = input scale x weight scale), so widening them to int64 gives the
model the converter's own 16x8 calibration path would give.
"""

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

# TFLite ops with a bias input, and the bias input's position.
BIAS_INPUT = {
    "CONV_2D": 2,
    "DEPTHWISE_CONV_2D": 2,
    "FULLY_CONNECTED": 2,
    "TRANSPOSE_CONV": 3,
}


def widen_int16x8_biases(tflite):
    """Stores the int32 biases of ops with int16 inputs as int64.

    Args:
        tflite: the `.tflite` model bytes.

    Returns:
        The corrected model bytes (unchanged if nothing needed widening).
    """
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    changed = False
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
            position = BIAS_INPUT.get(name)
            if position is None or position >= len(op.inputs):
                continue
            data_input = subgraph.tensors[op.inputs[0]]
            if data_input.type != schema.TensorType.INT16 or op.inputs[position] < 0:
                continue
            bias = subgraph.tensors[op.inputs[position]]
            if bias.type == schema.TensorType.INT32:
                _widen(model.buffers[bias.buffer])
                bias.type = schema.TensorType.INT64
                changed = True
    if not changed:
        return tflite
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _widen(buffer):
    values = np.frombuffer(bytes(buffer.data), dtype="<i4").astype("<i8")
    buffer.data = np.frombuffer(values.tobytes(), dtype=np.uint8)
