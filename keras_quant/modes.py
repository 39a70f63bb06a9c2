"""The modes of the TFLite post-training quantization guide, as data.

`MODES` is the one table from a `Mode` to what it means: whether it needs
activation ranges (and at which bit width), and the converter settings.
`conversion.converter.configure` applies a row to a TFLite converter, and
`conversion.routes.ROUTES` maps a row's `route` to its conversion function;
nothing else in keras-quant branches on the mode. `TARGETS` is the decision
tree of `mode="auto"`, per deployment target.

This module imports neither Keras nor TensorFlow, so the command line can
show these tables at once.

| mode        | weights         | activations     | input/output        |
|-------------|-----------------|-----------------|---------------------|
| `float32`   | float32         | float32         | float32             |
| `dynamic`   | int8            | float (dynamic) | float32             |
| `int8`      | int8 per-axis   | int8            | float32             |
| `int8_only` | int8 per-axis   | int8            | int8 or uint8       |
| `float16`   | float16         | float32         | float32             |
| `int16x8`   | int8 per-axis   | int16 symmetric | float32             |
| `int4_weights` | int4 per-axis | float32 (DEQUANTIZE each run) | float32 |
| `dynamic_int4` | int4 per-axis or blocks | float (dynamic) | float32 |
| `int8x4`    | int4 per-axis   | int8            | float32             |

The int4 modes store two weights per byte; `dynamic_int4` also takes a
`block_size` (32, 64, 128 or 256 input features share a scale).
"""

import dataclasses
import enum


class Mode(str, enum.Enum):
    """An export mode; the string values are accepted wherever a mode is."""

    FLOAT32 = "float32"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    INT8_ONLY = "int8_only"
    FLOAT16 = "float16"
    INT16X8 = "int16x8"
    INT4_WEIGHTS = "int4_weights"
    DYNAMIC_INT4 = "dynamic_int4"
    INT8X4 = "int8x4"

    def __str__(self):
        """The mode's name, as it is written: `print(result.mode)` shows
        `int8`, not `Mode.INT8`."""
        return self.value


class Route(str, enum.Enum):
    """How collected ranges reach the converter."""

    FLOAT = "float"  # convert the float graph; no ranges needed
    FAKE_QUANT = "fake_quant"  # ranges as fake-quant ops (int8)
    ENGINE = "engine"  # ranges mapped to the float .tflite's tensors


@dataclasses.dataclass(frozen=True)
class ModeSpec:
    """What a mode asks of the model and of the converter.

    Attributes:
        summary: one line for reports.
        route: how the model is converted (see `Route`).
        optimize: whether to set `optimizations=[tf.lite.Optimize.DEFAULT]`.
        supported_types: `target_spec.supported_types`, as dtype names.
        integer_io: whether inputs and outputs are integers.
        hardware: where the guide says the mode pays off.
        activation_bits: bits of a quantized activation, None for modes
            that keep activations float.
        qat_route: the route for a quantization-aware-trained model, which
            computes its own 8-bit graph in Keras and is exported as that
            very graph (decision D32); None for the same as `route`.
        weight_bits: bits of a quantized weight (None: float weights).
        block_sizes: the `block_size`s the mode accepts besides None (per
            output channel).
    """

    summary: str
    route: Route = Route.FLOAT
    optimize: bool = True
    supported_types: tuple = ()
    integer_io: bool = False
    hardware: str = "CPU"
    activation_bits: int = None
    qat_route: Route = None
    weight_bits: int = 8
    block_sizes: tuple = ()

    def route_for(self, quantize_aware):
        """The route for a model, QAT or not."""
        if quantize_aware and self.qat_route is not None:
            return self.qat_route
        return self.route

    @property
    def needs_ranges(self):
        return self.activation_bits is not None


MODES = {
    Mode.FLOAT32: ModeSpec(
        "float32 reference, no quantization", optimize=False, weight_bits=None
    ),
    Mode.DYNAMIC: ModeSpec("dynamic range: int8 weights, float activations"),
    Mode.INT8: ModeSpec(
        "full integer with float fallback and float input/output",
        route=Route.ENGINE,
        qat_route=Route.FAKE_QUANT,
        activation_bits=8,
    ),
    Mode.INT8_ONLY: ModeSpec(
        "integer only, integer input/output",
        route=Route.ENGINE,
        qat_route=Route.FAKE_QUANT,
        integer_io=True,
        hardware="CPU, Edge TPU, microcontrollers",
        activation_bits=8,
    ),
    Mode.FLOAT16: ModeSpec(
        "float16 weights",
        supported_types=("float16",),
        hardware="CPU, GPU",
        weight_bits=None,
    ),
    Mode.INT16X8: ModeSpec(
        "16x8: int16 activations, int8 weights",
        route=Route.ENGINE,
        hardware="CPU (reference kernels: slow)",
        activation_bits=16,
    ),
    Mode.INT4_WEIGHTS: ModeSpec(
        "int4 weights, float compute (DEQUANTIZE ops in the graph)",
        route=Route.ENGINE,
        weight_bits=4,
    ),
    Mode.DYNAMIC_INT4: ModeSpec(
        "dynamic range with int4 weights, per channel or in blocks",
        route=Route.ENGINE,
        weight_bits=4,
        block_sizes=(32, 64, 128, 256),
    ),
    Mode.INT8X4: ModeSpec(
        "int8 activations, int4 weights",
        route=Route.ENGINE,
        activation_bits=8,
        weight_bits=4,
    ),
}

BLOCK_SIZES = (32, 64, 128, 256)

IO_DTYPES = ("int8", "uint8")

AUTO = "auto"  # the mode that chooses among the others (`TARGETS`)
KEEP_FLOAT = "int8+float layers"  # auto's step between int8 and dynamic
KEEP_8BIT = "int8x4+8-bit layers"  # auto's step between int4 and int8

TARGETS = {
    "cpu": (
        Mode.INT8,
        KEEP_FLOAT,
        Mode.DYNAMIC,
        Mode.INT16X8,
        Mode.FLOAT16,
        Mode.FLOAT32,
    ),
    "gpu": (Mode.FLOAT16, Mode.FLOAT32),
    "integer_only": (Mode.INT8_ONLY,),
    # TensorFlow Lite for Microcontrollers: integer only, static shapes,
    # TFLM's ops, verified in TFLM (`targets.DEPLOYMENTS`).
    "micro": (Mode.INT8_ONLY,),
    # The smallest file: int4 weights first (integer compute, then float),
    # then int4 with the layers 4 bits hurt most at 8 bits.
    "size": (
        Mode.INT8X4,
        Mode.DYNAMIC_INT4,
        KEEP_8BIT,
        Mode.INT8,
        KEEP_FLOAT,
        Mode.DYNAMIC,
        Mode.FLOAT16,
        Mode.FLOAT32,
    ),
}


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


def check_block_size(mode, block_size):
    """Validates `block_size` for `mode`; returns it (None: per channel)."""
    if block_size is None:
        return None
    accepting = [m.value for m, spec in MODES.items() if spec.block_sizes]
    if block_size not in MODES[mode].block_sizes:
        raise ValueError(
            f"`block_size` applies to {accepting}, with one of "
            f"{list(BLOCK_SIZES)}. Received: block_size={block_size!r} with "
            f"mode={mode.value!r}."
        )
    return block_size


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
