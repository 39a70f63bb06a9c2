"""Edge TPU pre-check: Coral's documented model requirements, read statically.

Coral's Edge TPU runs a `.tflite` only after `edgetpu_compiler` has
mapped it, and only that tool decides what maps. `precheck` reads the
file (no compiler, no device) against the requirements of Coral's page
"TensorFlow models on the Edge TPU" and reports what already rules a
model out, so an export can be fixed before anyone compiles it.

Checked, for the main graph's tensors and ops:

- 8-bit tensors ("Tensor parameters are quantized (8-bit fixed-point
  numbers)"): every tensor an op computes with is int8 or uint8 and
  quantized; constants may also be int32 (biases, shapes, axes), as the
  TFLite quantization spec has them. Float tensors are findings.
- static shapes ("Tensor sizes are constant at compile-time (no dynamic
  sizes)"): no -1 in any tensor's shape signature.
- dimensions ("Tensors are either 1-, 2-, or 3-dimensional. If a tensor
  has more than 3 dimensions, then only the 3 innermost dimensions may
  have a size greater than 1."): checked on the tensors ops compute
  (model inputs, op outputs). Constant weights are left out: TFLite
  stores a CONV_2D filter as [out, y, x, in], 4-D by layout.
- supported ops ("The model uses only the operations supported by the
  Edge TPU"): every op is in `SUPPORTED_OPS`, and the "known limitations"
  there that a file states are checked (see the table). "1-D" or
  "one-dimensional" (a FullyConnected output, a Softmax input, a PReLU
  alpha) is read as: at most one dimension larger than 1, so a batch of
  one [1, 10] is 1-D; "batch dimension" is axis 0.

`parameter_bytes` (the constants' bytes) is information, not a finding:
model parameters count toward the Edge TPU's on-chip memory.

Not checked (the documented words, and why):

- how the model was quantized (quantization-aware training or
  post-training): the file does not record it.
- Reshape: "Certain reshapes might not be mapped for large tensor
  sizes." (no size is given).
- ResizeBilinear, ResizeNearestNeighbor: "Depending on input/output size,
  this operation might not be mapped to the Edge TPU to avoid loss in
  precision." (no size is given; their "Input/output is a 3-dimensional
  tensor" is the general dimensions rule, which is checked).
- LSTM: "Unidirectional LSTM only." holds by op name alone (a
  BIDIRECTIONAL_SEQUENCE_LSTM is not in the table); nothing more.
- Squeeze: "Supported only when input tensor dimensions that have
  leading 1s (that is, no relayout needed)", a limit of older runtimes
  in the 2019 copy of the table, not checked for the current runtime.
- Split: any limit the current table gives it (its row in the copies
  read has none).
- Rsqrt, SquaredDifference, Sum: their rows were not in the copies read,
  so they are not in `SUPPORTED_OPS` and are findings until a reading of
  Coral's page adds them.
- subgraphs other than the main one (bodies of WHILE or IF, which are
  themselves not supported ops), and whatever else the compiler alone
  decides, such as how much of the model fits on-chip.

This module imports neither Keras nor TensorFlow.

Example (a float model fails on its float tensors):

>>> from keras_quant.conversion.routes import convert
>>> inputs = keras.Input((3,), batch_size=1)
>>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
>>> result = precheck(convert(model, "float32"))
>>> result.passed, result.ops, result.parameter_bytes
(False, ('FULLY_CONNECTED',), 24)
>>> print(result.text().splitlines()[0])
Edge TPU pre-check (static; not compiled): 3 finding(s)
>>> all(finding.startswith("8-bit: ") for finding in result.findings)
True
"""

import dataclasses
import os

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from keras_quant.runtime import flatbuffer
from keras_quant.runtime import inspection

HEADER = "Edge TPU pre-check (static; not compiled)"

# Tensor types the Edge TPU computes with, and those its constants may add.
EIGHT_BIT = ("int8", "uint8")
CONSTANT_DTYPES = EIGHT_BIT + ("int32",)

# Coral's limit on the elements of a Softmax input.
SOFTMAX_MAX_ELEMENTS = 16_000

# What to change for a finding of each general rule, shown by `text`.
FIXES = {
    "8-bit": 'convert in the "int8_only" mode; int32 shape arithmetic '
    "goes with a fixed batch size",
    "static shape": "fix every input's size (a batch size in keras.Input, "
    'or target="micro")',
    "dimensions": "keep tensors to 3 dimensions beyond a batch of 1",
    "supported ops": "replace the layers behind the ops not in the table",
}

# Short names of the "known limitations" checked; findings start with one.
NO_FUSED_ACTIVATION = "no fused activation"
ZERO_PAD_CONSTANT = "constant input only as a zero pad"
SAME_DILATION = "same x and y dilation"
DEFAULT_WEIGHTS = "default weights format"
ONE_D_OUTPUT = "1-D output"
ONE_D_ALPHA = "1-D alpha"
NO_BATCH_REDUCTION = "no batch-dimension reduction"
Z_MULTIPLE_OF_4 = "z-reduction over a multiple of 4"
NO_BATCH_PACKING = "no batch-dimension packing"
NO_BATCH_PADDING = "no batch-dimension padding"
SOFTMAX_INPUT = "1-D input of at most 16,000 elements"
UNIT_STRIDES = "strides of 1, no ellipsis or new axis"

# Every op the Edge TPU runs (TFLite builtin name), with the "known
# limitations" of Coral's table that `precheck` checks (None: none to
# check). Coral's words are in the comments.
#
# Source: Coral, "TensorFlow models on the Edge TPU", table "Supported
# operations" (https://coral.ai/docs/edgetpu/models-intro/), read on
# 2026-12-07 through stored copies (the live page was out of reach): the
# page's model requirements; its table as Axis reproduces it for the
# ARTPEC-7 (an Edge TPU), rows Add to ResizeBilinear; a 2019 copy of the
# table for the rows after (ResizeNearestNeighbor to Tanh); TRANSPOSE and
# TRANSPOSE_CONV as Coral's maintainers cite the table (google-coral/
# edgetpu issues #193, #684). Where copies differ, the newest runtime's
# row is used.
SUPPORTED_OPS = {
    "ADD": None,
    # "No fused activation function."
    "AVERAGE_POOL_2D": (NO_FUSED_ACTIVATION,),
    # "No fused activation function. If any input is a compile-time
    # constant tensor, there must be only 2 inputs, and this constant
    # tensor must be all zeros (effectively, a zero-padding op)."
    "CONCATENATION": (NO_FUSED_ACTIVATION, ZERO_PAD_CONSTANT),
    # "Must use the same dilation in x and y dimensions."
    "CONV_2D": (SAME_DILATION,),
    "DEPTHWISE_CONV_2D": (SAME_DILATION,),
    "EXPAND_DIMS": None,
    # "Only the default format is supported for fully-connected weights.
    # Output tensor is one-dimensional."
    "FULLY_CONNECTED": (DEFAULT_WEIGHTS, ONE_D_OUTPUT),
    "L2_NORMALIZATION": None,
    "LOGISTIC": None,
    # "Unidirectional LSTM only."
    "LSTM": None,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": None,
    "MAXIMUM": None,
    # "No fused activation function."
    "MAX_POOL_2D": (NO_FUSED_ACTIVATION,),
    # "No reduction in batch dimension. If a z-reduction, the z-dimension
    # must be multiple of 4."
    "MEAN": (NO_BATCH_REDUCTION, Z_MULTIPLE_OF_4),
    "MINIMUM": None,
    "MUL": None,
    # "No packing in batch dimension."
    "PACK": (NO_BATCH_PACKING,),
    # "No padding in batch dimension."
    "PAD": (NO_BATCH_PADDING,),
    # "Alpha must be 1-dimensional (only the innermost dimension can be
    # >1 size)."
    "PRELU": (ONE_D_ALPHA,),
    "QUANTIZE": None,
    # "Cannot operate on the batch dimension."
    "REDUCE_MAX": (NO_BATCH_REDUCTION,),
    "REDUCE_MIN": (NO_BATCH_REDUCTION,),
    "RELU": None,
    "RELU6": None,
    "RELU_N1_TO_1": None,
    # "Certain reshapes might not be mapped for large tensor sizes."
    "RESHAPE": None,
    # "Input/output is a 3-dimensional tensor. Depending on input/output
    # size, this operation might not be mapped ..."
    "RESIZE_BILINEAR": None,
    "RESIZE_NEAREST_NEIGHBOR": None,
    "SLICE": None,
    # "Supports only 1D input tensor with a max of 16,000 elements."
    "SOFTMAX": (SOFTMAX_INPUT,),
    "SPACE_TO_DEPTH": None,
    "SPLIT": None,
    "SQUEEZE": None,
    # "Supported only when all strides are equal to 1 (that is,
    # effectively a Stride op), and with ellipsis-axis-mask == 0, and
    # new-axis-max == 0."
    "STRIDED_SLICE": (UNIT_STRIDES,),
    "SUB": None,
    "TANH": None,
    "TRANSPOSE": None,
    "TRANSPOSE_CONV": None,
}


@dataclasses.dataclass(frozen=True)
class EdgeTpuPrecheck:
    """What `precheck` found: Coral's documented requirements a `.tflite`
    breaks, read from the file alone; passing is not compiling.

    Attributes:
        passed: no finding.
        findings: one line per broken rule, `"<rule>: <op> <tensor> ..."`.
        ops: the main graph's builtin ops, sorted, once each.
        unsupported_ops: those of `ops` not in `SUPPORTED_OPS`.
        parameter_bytes: bytes of the constants (weights, biases, shapes),
            which count toward the Edge TPU's on-chip memory.
    """

    passed: bool
    findings: tuple
    ops: tuple
    unsupported_ops: tuple
    parameter_bytes: int

    def to_dict(self):
        """The fields as plain JSON types."""
        return {
            "passed": self.passed,
            "findings": list(self.findings),
            "ops": list(self.ops),
            "unsupported_ops": list(self.unsupported_ops),
            "parameter_bytes": self.parameter_bytes,
        }

    def text(self):
        """A few lines for a person; the first says passed or how many
        findings."""
        status = "passed" if self.passed else f"{len(self.findings)} finding(s)"
        lines = [
            f"{HEADER}: {status}",
            f"  ops: {', '.join(self.ops)}",
            f"  parameter bytes: {self.parameter_bytes:,} (on-chip memory)",
        ]
        if self.unsupported_ops:
            unsupported = ", ".join(self.unsupported_ops)
            lines.append(f"  not in Coral's supported ops: {unsupported}")
        lines.extend(f"  - {finding}" for finding in self.findings)
        broken = {finding.split(":", 1)[0] for finding in self.findings}
        lines.extend(
            f"  fix ({rule}): {fix}"
            for rule, fix in FIXES.items()
            if rule in broken
        )
        lines.append("  Only edgetpu_compiler decides what maps to the TPU.")
        return "\n".join(lines)


def precheck(tflite):
    """Checks a `.tflite` against Coral's documented Edge TPU requirements.

    Args:
        tflite: the model's bytes, or a path to a `.tflite` file.

    Returns:
        An `EdgeTpuPrecheck`.

    Raises:
        ValueError: `tflite` is not a TFLite model.
    """
    graph = _Graph(_model_bytes(tflite))
    findings = _tensor_findings(graph) + _op_findings(graph)
    ops = tuple(graph.summary.op_names)
    return EdgeTpuPrecheck(
        passed=not findings,
        findings=tuple(findings),
        ops=ops,
        unsupported_ops=tuple(op for op in ops if op not in SUPPORTED_OPS),
        parameter_bytes=graph.parameter_bytes(),
    )


def _model_bytes(tflite):
    """The bytes of `tflite` (bytes, or a path), checked to be TFLite."""
    if isinstance(tflite, (str, os.PathLike)):
        with open(tflite, "rb") as handle:
            tflite = handle.read()
    tflite = bytes(tflite)
    if tflite[4:8] != b"TFL3":
        raise ValueError(
            f"precheck reads a TFLite model, but these {len(tflite)} bytes "
            "lack the 'TFL3' identifier: pass the bytes (or path) of a "
            ".tflite file, such as `export` writes."
        )
    return tflite


@dataclasses.dataclass(frozen=True)
class _Op:
    """One op of the main graph: name, tensor indices, builtin options."""

    name: str
    inputs: tuple
    outputs: tuple
    options: object


class _Graph:
    """The main graph of a `.tflite`: `inspection.summarize` for its ops
    and tensors, the file's object tree for what that leaves out (shape
    signatures, op options, constant data)."""

    def __init__(self, tflite):
        self.summary = inspection.summarize(tflite)
        self._model = flatbuffer.read(tflite)
        self._graph = self._model.subgraphs[0]
        self.ops = tuple(
            _Op(op.name, op.inputs, op.outputs, stored.builtinOptions)
            for op, stored in zip(
                self.summary.ops, self._graph.operators, strict=True
            )
        )

    def tensor(self, index):
        return self.summary.tensors[index]

    def where(self, index, role):
        """`"<role> '<tensor name>'"`, for findings."""
        return f"{role} '{self.tensor(index).name}'"

    def signature(self, index):
        """The tensor's shape signature (-1 for a dynamic size)."""
        stored = self._graph.tensors[index].shapeSignature
        if stored is None or not len(stored):
            return self.tensor(index).shape
        return tuple(int(size) for size in stored)

    def _data(self, index):
        return self._model.buffers[self._graph.tensors[index].buffer].data

    def is_constant(self, index):
        data = self._data(index)
        return data is not None and len(data) > 0

    def values(self, index):
        """A constant's values in its own type and shape, else None."""
        if not self.is_constant(index):
            return None
        info = self.tensor(index)
        try:
            dtype = np.dtype(info.dtype)
        except TypeError:  # int4: packed, not needed by any check
            return None
        raw = np.asarray(self._data(index), np.uint8).tobytes()
        return np.frombuffer(raw, dtype).reshape(info.shape)

    def parameter_bytes(self):
        """Bytes of the distinct buffers of the constants."""
        buffers = {
            tensor.buffer
            for index, tensor in enumerate(self._graph.tensors)
            if self.is_constant(index)
        }
        return sum(len(self._model.buffers[b].data) for b in buffers)


def _visits(graph):
    """`(tensor index, "<op> <role> '<name>'")` once per tensor, where an
    op first uses it, then model inputs and outputs no op uses."""
    seen = set()
    for op in graph.ops:
        for role, indices in (("input", op.inputs), ("output", op.outputs)):
            for index in indices:
                if index >= 0 and index not in seen:
                    seen.add(index)
                    yield index, f"{op.name} {graph.where(index, role)}"
    summary = graph.summary
    for role, indices in (
        ("model input", summary.inputs),
        ("model output", summary.outputs),
    ):
        for index in indices:
            if index not in seen:
                seen.add(index)
                yield index, graph.where(index, role)


def _tensor_findings(graph):
    """Findings of the 8-bit, static-shape and dimension rules."""
    found = []
    for index, where in _visits(graph):
        constant = graph.is_constant(index)
        found.extend(_eight_bit(graph.tensor(index), constant, where))
        found.extend(_static_shape(graph.signature(index), where))
        if not constant:
            found.extend(_dimensions(graph.tensor(index).shape, where))
    return found


def _eight_bit(tensor, constant, where):
    if constant:
        if tensor.dtype in CONSTANT_DTYPES:
            return []
        return [f"8-bit: {where} is a {tensor.dtype} constant"]
    if tensor.dtype not in EIGHT_BIT:
        return [f"8-bit: {where} is {tensor.dtype}"]
    if not len(tensor.scales):
        return [f"8-bit: {where} is {tensor.dtype} but not quantized"]
    return []


def _static_shape(signature, where):
    if -1 not in signature:
        return []
    return [f"static shape: {where} has shape signature {list(signature)}"]


def _dimensions(shape, where):
    if all(size <= 1 for size in shape[:-3]):
        return []
    return [
        f"dimensions: {where} has shape {list(shape)}; beyond 3 dimensions "
        "only the 3 innermost may be larger than 1"
    ]


def _op_findings(graph):
    """Findings of the supported-ops rule and of each op's limits."""
    found = []
    for op in graph.ops:
        where = f"{op.name} {graph.where(op.outputs[0], 'output')}"
        if op.name not in SUPPORTED_OPS:
            found.append(f"supported ops: {where}: not in Coral's table")
            continue
        for limit in SUPPORTED_OPS[op.name] or ():
            broken = _LIMIT_CHECKS[limit](graph, op)
            if broken:
                found.append(f"{limit}: {where}: {broken}")
    return found


def _larger_than_one(shape):
    """How many dimensions of `shape` are larger than 1."""
    return sum(1 for size in shape if size > 1)


def _no_fused_activation(graph, op):
    code = getattr(op.options, "fusedActivationFunction", 0)
    if code:
        return f"fuses {_ACTIVATIONS.get(code, code)}"
    return None


def _zero_pad_constant(graph, op):
    constants = [i for i in op.inputs if i >= 0 and graph.is_constant(i)]
    if not constants:
        return None
    if len(op.inputs) != 2:
        return f"a constant input among {len(op.inputs)} inputs, not 2"
    for index in constants:
        zero = graph.tensor(index).zero_points
        zero = int(zero[0]) if len(zero) else 0
        if np.any(graph.values(index) != zero):
            return f"constant {graph.where(index, 'input')} is not all zeros"
    return None


def _same_dilation(graph, op):
    y, x = op.options.dilationHFactor, op.options.dilationWFactor
    return None if y == x else f"dilation {y} in y but {x} in x"


def _default_weights(graph, op):
    weights_format = op.options.weightsFormat
    if weights_format == schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
        return None
    return f"weights format {_WEIGHTS_FORMATS.get(weights_format)}"


def _one_d_output(graph, op):
    shape = graph.tensor(op.outputs[0]).shape
    if _larger_than_one(shape) <= 1:
        return None
    return f"output shape {list(shape)} is not one-dimensional"


def _one_d_alpha(graph, op):
    shape = graph.tensor(op.inputs[1]).shape
    if all(size <= 1 for size in shape[:-1]):
        return None
    return f"alpha shape {list(shape)} is larger than 1 beyond the innermost"


def _reduced_axes(graph, op):
    """The axes (0 for batch) a reduction's constant axes input names,
    or None if they are not constant."""
    axes = graph.values(op.inputs[1])
    if axes is None:
        return None
    rank = len(graph.tensor(op.inputs[0]).shape)
    if not rank:
        return None
    return {int(axis) % rank for axis in axes.ravel()}


def _no_batch_reduction(graph, op):
    axes = _reduced_axes(graph, op)
    if axes is None or 0 not in axes:
        return None
    return "reduces the batch dimension (axis 0)"


def _z_multiple_of_4(graph, op):
    axes = _reduced_axes(graph, op)
    shape = graph.tensor(op.inputs[0]).shape
    if axes is None or len(shape) - 1 not in axes or shape[-1] % 4 == 0:
        return None
    return f"reduces z (innermost) of size {shape[-1]}, not a multiple of 4"


def _no_batch_packing(graph, op):
    rank = len(graph.tensor(op.outputs[0]).shape)
    if op.options.axis % rank != 0:
        return None
    return "packs along the batch dimension (axis 0)"


def _no_batch_padding(graph, op):
    paddings = graph.values(op.inputs[1])
    if paddings is None or not np.any(paddings[0]):
        return None
    return f"pads the batch dimension by {paddings[0].tolist()}"


def _softmax_input(graph, op):
    shape = graph.tensor(op.inputs[0]).shape
    broken = []
    if _larger_than_one(shape) > 1:
        broken.append(f"input shape {list(shape)} is not 1-D")
    elements = int(np.prod(shape))
    if elements > SOFTMAX_MAX_ELEMENTS:
        broken.append(f"input has {elements:,} elements")
    return "; ".join(broken) or None


def _unit_strides(graph, op):
    strides = graph.values(op.inputs[3])
    broken = []
    if strides is not None and np.any(strides != 1):
        broken.append(f"strides {strides.tolist()}")
    if op.options.ellipsisMask:
        broken.append(f"ellipsis mask {op.options.ellipsisMask}")
    if op.options.newAxisMask:
        broken.append(f"new-axis mask {op.options.newAxisMask}")
    return "; ".join(broken) or None


_LIMIT_CHECKS = {
    NO_FUSED_ACTIVATION: _no_fused_activation,
    ZERO_PAD_CONSTANT: _zero_pad_constant,
    SAME_DILATION: _same_dilation,
    DEFAULT_WEIGHTS: _default_weights,
    ONE_D_OUTPUT: _one_d_output,
    ONE_D_ALPHA: _one_d_alpha,
    NO_BATCH_REDUCTION: _no_batch_reduction,
    Z_MULTIPLE_OF_4: _z_multiple_of_4,
    NO_BATCH_PACKING: _no_batch_packing,
    NO_BATCH_PADDING: _no_batch_padding,
    SOFTMAX_INPUT: _softmax_input,
    UNIT_STRIDES: _unit_strides,
}


def _enum_names(enum):
    """`{value: name}` of a schema enum class."""
    return {
        value: name
        for name, value in vars(enum).items()
        if not name.startswith("_")
    }


_ACTIVATIONS = _enum_names(schema.ActivationFunctionType)
_WEIGHTS_FORMATS = _enum_names(schema.FullyConnectedOptionsWeightsFormat)
