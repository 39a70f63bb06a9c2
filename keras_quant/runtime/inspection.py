"""What a `.tflite` file holds: ops, tensor types and quantization.

Used to check each mode's contract after conversion (an `int8_only` model
must hold no float tensor) and to test the TFLite quantization spec.

Example:

>>> from keras_quant.conversion.routes import convert
>>> inputs = keras.Input((3,))
>>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
>>> tflite = convert(model, "float32")
>>> summary = summarize(tflite)
>>> summary.op_names
['FULLY_CONNECTED']
"""

import dataclasses

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from keras_quant._compat import litert_internals
from keras_quant.runtime import flatbuffer
from keras_quant.runtime import litert

FLOAT_DTYPES = ("float32", "float16", "float64")

# Which op inputs are weights and biases (by position), per TFLite op.
WEIGHT_INPUTS = {
    "CONV_2D": (1, 2),
    "DEPTHWISE_CONV_2D": (1, 2),
    "FULLY_CONNECTED": (1, 2),
    "TRANSPOSE_CONV": (1, 3),
}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor of a `.tflite` model."""

    index: int
    name: str
    dtype: str
    shape: tuple
    scales: np.ndarray
    zero_points: np.ndarray
    quantized_dimension: int
    block_size: int = None

    @property
    def is_float(self):
        return self.dtype in FLOAT_DTYPES

    @property
    def per_axis(self):
        return len(self.scales) > 1


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """One op of a `.tflite` model, with its tensors' indices."""

    name: str
    inputs: tuple
    outputs: tuple


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """Ops and tensors of a `.tflite` model; see `summarize`."""

    ops: tuple
    tensors: dict
    inputs: tuple
    outputs: tuple
    size_bytes: int

    @property
    def op_names(self):
        return sorted({op.name for op in self.ops})

    def op_tensor_names(self):
        """`(op name, names of its tensors)` per op, in order: its outputs
        first, then its inputs after the first (the constants an op owns,
        such as a reduction's axes, carry its name scope even when its
        output is a model output named `Identity`)."""
        return [
            (
                op.name,
                [
                    self.tensors[index].name
                    for index in (*op.outputs, *op.inputs[1:])
                    if index >= 0
                ],
            )
            for op in self.ops
        ]

    def weights(self):
        """`(op name, weight tensor, bias tensor or None)` per weighted op."""
        found = []
        for op in self.ops:
            if op.name in WEIGHT_INPUTS:
                weight, bias = WEIGHT_INPUTS[op.name]
                bias_tensor = None
                if bias < len(op.inputs) and op.inputs[bias] >= 0:
                    bias_tensor = self.tensors[op.inputs[bias]]
                found.append(
                    (op.name, self.tensors[op.inputs[weight]], bias_tensor)
                )
        return found

    def activations(self):
        """Tensors produced by ops (plus model inputs), weights excluded."""
        indices = set(self.inputs)
        for op in self.ops:
            indices.update(i for i in op.outputs if i >= 0)
        return [self.tensors[i] for i in sorted(indices)]

    def float_ops(self):
        """Names of ops that read or write a float tensor."""
        found = []
        for op in self.ops:
            used = [i for i in op.inputs + op.outputs if i >= 0]
            if any(self.tensors[i].is_float for i in used):
                found.append(op.name)
        return found


def summarize(model):
    """Reads a `.tflite` model (path or bytes) into a `ModelSummary`.

    LiteRT reports 4-bit tensors as int8 and hides block-wise scales; they
    are read from the file: dtype `"int4"`, and `block_size` (input
    features per scale) for a block-wise quantized weight.
    """
    runner = litert.interpreter(model)
    stored = _stored_types(model)
    tensors = {}
    for detail in runner.get_tensor_details():
        params = detail["quantization_parameters"]
        dtype, block_size = stored.get(detail["index"], (None, None))
        tensors[detail["index"]] = TensorInfo(
            index=detail["index"],
            name=detail["name"],
            dtype=dtype or np.dtype(detail["dtype"]).name,
            shape=tuple(int(d) for d in detail["shape"]),
            scales=np.asarray(params["scales"]),
            zero_points=np.asarray(params["zero_points"]),
            quantized_dimension=int(params["quantized_dimension"]),
            block_size=block_size,
        )
    ops = tuple(
        OpInfo(d["op_name"], tuple(d["inputs"]), tuple(d["outputs"]))
        for d in litert_internals.ops_details(runner)
    )
    if isinstance(model, (bytes, bytearray)):
        size = len(model)
    else:
        with open(model, "rb") as handle:
            size = len(handle.read())
    return ModelSummary(
        ops=ops,
        tensors=tensors,
        inputs=tuple(d["index"] for d in runner.get_input_details()),
        outputs=tuple(d["index"] for d in runner.get_output_details()),
        size_bytes=size,
    )


def _stored_types(model):
    """`{tensor index: (dtype, block size)}` for the main graph's tensors
    whose file type LiteRT does not report (int4) or that are quantized in
    blocks."""
    if not isinstance(model, (bytes, bytearray)):
        with open(model, "rb") as handle:
            model = handle.read()
    tree = flatbuffer.read(model)
    found = {}
    for index, tensor in enumerate(tree.subgraphs[0].tensors):
        dtype = _FILE_DTYPES.get(tensor.type)
        details = tensor.quantization and tensor.quantization.details
        block_size = getattr(details, "blockSize", None) or None
        if dtype or block_size:
            found[index] = (dtype, block_size)
    return found


# File tensor types LiteRT's Python API reports as another dtype.
_FILE_DTYPES = {schema.TensorType.INT4: "int4"}

# Bias type the spec asks for, per activation type.
BIAS_DTYPES = {"int8": "int32", "uint8": "int32", "int16": "int64"}


def spec_violations(model):
    """How a `.tflite` model departs from the TFLite quantization spec.

    Checks quantized weights (int8 or int4, per output channel or in
    blocks, symmetric: zero point 0; int8 values in [-127, 127]), their
    biases (int32, or int64 with int16 activations; zero point 0; scale =
    input scale x weight scale)
    and activations (one scale per tensor; int8 zero point in [-128, 127],
    int16 zero point 0). A float model has none.

    Args:
        model: path to a `.tflite` file, or its bytes.

    Returns:
        A list of messages, empty if the model follows the spec.
    """
    summary = summarize(model)
    runner = litert.interpreter(model)  # constants are readable unprepared
    found = []
    for op in summary.ops:
        if op.name in WEIGHT_INPUTS:
            found.extend(_weight_violations(summary, runner, op))
    for tensor in summary.activations():
        found.extend(_activation_violations(tensor))
    return found


def _weight_violations(summary, runner, op):
    weight_at, bias_at = WEIGHT_INPUTS[op.name]
    weight = summary.tensors[op.inputs[weight_at]]
    if weight.dtype not in ("int8", "int4") or not len(weight.scales):
        return []
    found = []
    where = f"{op.name} weights '{weight.name}'"
    channels = weight.shape[weight.quantized_dimension]
    if weight.block_size:  # one scale per block of input features
        blocks = int(np.prod(weight.shape)) // weight.block_size
        if len(weight.scales) != blocks:
            found.append(
                f"{where}: {len(weight.scales)} scales for {blocks} blocks"
            )
    elif len(weight.scales) not in (1, channels):
        found.append(
            f"{where}: {len(weight.scales)} scales for {channels} channels"
        )
    if np.any(weight.zero_points):
        found.append(f"{where}: zero points not all 0")
    values = runner.get_tensor(weight.index)  # int4: as stored, packed
    if weight.dtype == "int8" and values.min() < -127:
        found.append(f"{where}: value {values.min()} below -127")
    data = summary.tensors[op.inputs[0]]
    if bias_at < len(op.inputs) and op.inputs[bias_at] >= 0:
        found.extend(
            _bias_violations(summary.tensors[op.inputs[bias_at]], data, weight)
        )
    return found


def _bias_violations(bias, data, weight):
    where = f"bias '{bias.name}'"
    expected = BIAS_DTYPES.get(data.dtype)
    if expected is None:
        return []
    found = []
    if bias.dtype != expected:
        found.append(f"{where}: {bias.dtype}, the spec says {expected}")
    if np.any(bias.zero_points):
        found.append(f"{where}: zero points not all 0")
    if len(bias.scales) and len(data.scales):
        expected_scales = data.scales[0] * weight.scales
        if not np.allclose(bias.scales, expected_scales, rtol=1e-3):
            found.append(f"{where}: scale is not input scale x weight scale")
    return found


def _activation_violations(tensor):
    if tensor.dtype not in ("int8", "int16") or not len(tensor.scales):
        return []
    where = f"activation '{tensor.name}' ({tensor.dtype})"
    if len(tensor.scales) != 1:
        return [f"{where}: {len(tensor.scales)} scales, the spec says one"]
    zero_point = int(tensor.zero_points[0])
    if tensor.dtype == "int16" and zero_point != 0:
        return [f"{where}: zero point {zero_point}, the spec says 0"]
    if not -128 <= zero_point <= 127:
        return [f"{where}: zero point {zero_point} outside [-128, 127]"]
    return []
