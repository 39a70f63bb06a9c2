"""The modes of the TFLite post-training quantization guide, as data.

`MODES` is the one table from a `Mode` to what it means: whether it needs
activation ranges (and at which bit width), and the converter settings.
`configure_converter` applies a row to a `tf.lite.TFLiteConverter`; nothing
else in keras-quant branches on the mode.

| mode        | weights         | activations     | input/output        |
|-------------|-----------------|-----------------|---------------------|
| `float32`   | float32         | float32         | float32             |
| `dynamic`   | int8            | float (dynamic) | float32             |
| `int8`      | int8 per-axis   | int8            | float32             |
| `int8_only` | int8 per-axis   | int8            | int8 or uint8       |
| `float16`   | float16         | float32         | float32             |
| `int16x8`   | int8 per-axis   | int16 symmetric | float32             |
"""

import dataclasses
import enum

import tensorflow as tf

from keras_quant import fixups


class Mode(str, enum.Enum):
    """An export mode; the string values are accepted wherever a mode is."""

    FLOAT32 = "float32"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    INT8_ONLY = "int8_only"
    FLOAT16 = "float16"
    INT16X8 = "int16x8"


@dataclasses.dataclass(frozen=True)
class ModeSpec:
    """What a mode asks of the model and of the converter.

    Attributes:
        summary: one line for reports.
        activation_bits: 8 or 16 when the mode quantizes activations with
            collected ranges; None when it needs no ranges.
        optimize: whether to set `optimizations=[tf.lite.Optimize.DEFAULT]`.
        supported_types: `target_spec.supported_types`.
        supported_ops: `target_spec.supported_ops` (None keeps the default).
        integer_io: whether inputs and outputs are integers.
        hardware: where the guide says the mode pays off.
        fixups: functions `bytes -> bytes` applied to the converter's
            output (see `keras_quant.fixups`).
    """

    summary: str
    activation_bits: int = None
    optimize: bool = True
    supported_types: tuple = ()
    supported_ops: tuple = None
    integer_io: bool = False
    hardware: str = "CPU"
    fixups: tuple = ()


MODES = {
    Mode.FLOAT32: ModeSpec("float32 reference, no quantization", optimize=False),
    Mode.DYNAMIC: ModeSpec("dynamic range: int8 weights, float activations"),
    Mode.INT8: ModeSpec(
        "full integer with float fallback and float input/output",
        activation_bits=8,
        hardware="CPU, Edge TPU-like accelerators (via fallback: CPU)",
    ),
    Mode.INT8_ONLY: ModeSpec(
        "integer only, integer input/output",
        activation_bits=8,
        integer_io=True,
        hardware="CPU, Edge TPU, microcontrollers",
    ),
    Mode.FLOAT16: ModeSpec(
        "float16 weights", supported_types=(tf.float16,), hardware="CPU, GPU"
    ),
    Mode.INT16X8: ModeSpec(
        "16x8: int16 activations, int8 weights",
        activation_bits=16,
        supported_ops=(
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ),
        hardware="CPU (reference kernels: slow)",
        fixups=(fixups.widen_int16x8_biases,),
    ),
}

IO_DTYPES = {"int8": tf.int8, "uint8": tf.uint8}


def parse_mode(mode):
    """Returns the `Mode` named by `mode` (a `Mode` or its string value).

    Raises:
        ValueError: for an unknown mode, listing the valid ones.
    """
    try:
        return Mode(mode)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in Mode)
        raise ValueError(
            f"Expected `mode` to be one of {valid}. Received: mode={mode!r}"
        ) from None


def check_io_dtype(mode, io_dtype):
    """Validates `io_dtype` for `mode`; returns the dtype name to use."""
    spec = MODES[mode]
    if io_dtype is None:
        return "int8" if spec.integer_io else None
    if not spec.integer_io:
        raise ValueError(
            f"`io_dtype` applies to integer input/output modes only "
            f"({Mode.INT8_ONLY.value!r}). Received: io_dtype={io_dtype!r} "
            f"with mode={mode.value!r}. Drop `io_dtype`, or use "
            f"mode={Mode.INT8_ONLY.value!r}."
        )
    if io_dtype not in IO_DTYPES:
        raise ValueError(
            f"Expected `io_dtype` to be one of {sorted(IO_DTYPES)}. "
            f"Received: io_dtype={io_dtype!r}"
        )
    return io_dtype


def configure_converter(converter, mode, io_dtype=None):
    """Applies the settings of `mode` to a `tf.lite.TFLiteConverter`."""
    spec = MODES[mode]
    if spec.optimize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if spec.supported_types:
        converter.target_spec.supported_types = list(spec.supported_types)
    if spec.supported_ops is not None:
        converter.target_spec.supported_ops = list(spec.supported_ops)
    if spec.integer_io:
        converter.inference_input_type = IO_DTYPES[io_dtype]
        converter.inference_output_type = IO_DTYPES[io_dtype]
    return converter
