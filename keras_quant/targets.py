"""Where an exported model will run, and what that asks of the file.

`DEPLOYMENTS` is the one table from a deployment target to its
requirements: the modes whose files its runtime can run, whether shapes
must be static, and the builtin ops it has kernels for. An export with
`target="micro"` reads its row; the float-graph rewrites that replace ops
it lacks say which targets they serve (`conversion.rewrites.REWRITES`).

`"micro"` is TensorFlow Lite for Microcontrollers (TFLM), the runtime the
post-training guide names for integer-only models. Its op list is that
of the pinned `tflite-micro` package's resolver (`tests/test_micro.py`
asks the installed package and fails when they differ).

This module imports neither Keras nor TensorFlow.

>>> DEPLOYMENTS["micro"].runs("GELU"), DEPLOYMENTS["micro"].runs("CONV_2D")
(False, True)
"""

import dataclasses

from keras_quant.modes import Mode

MICRO = "micro"
EDGETPU = "edgetpu"

# The targets `keras-quant inspect --target` checks a file for: TFLM by
# running it, the Edge TPU by a static pre-check (`runtime.edgetpu`).
INSPECTED = (EDGETPU, MICRO)

# The builtin ops of tflite-micro 0.dev20261023182759's op resolver.
MICRO_OPS = frozenset(
    """
    ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D
    BATCH_MATMUL BATCH_TO_SPACE_ND BROADCAST_ARGS BROADCAST_TO CALL_ONCE
    CAST CEIL CONCATENATION CONV_2D COS CUMSUM DEPTHWISE_CONV_2D
    DEPTH_TO_SPACE DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU
    EMBEDDING_LOOKUP EQUAL EXP EXPAND_DIMS FILL FLOOR FLOOR_DIV FLOOR_MOD
    FULLY_CONNECTED GATHER GATHER_ND GREATER GREATER_EQUAL HARD_SWISH IF
    L2_NORMALIZATION L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND
    LOGICAL_NOT LOGICAL_OR LOGISTIC LOG_SOFTMAX MAXIMUM MAX_POOL_2D MEAN
    MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 PRELU QUANTIZE
    READ_VARIABLE REDUCE_ALL REDUCE_MAX REDUCE_MIN RELU RELU6 RESHAPE
    RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR REVERSE_V2 ROUND RSQRT
    SELECT_V2 SHAPE SIN SLICE SOFTMAX SPACE_TO_BATCH_ND SPACE_TO_DEPTH
    SPLIT SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB
    SUM SVDF TANH TRANSPOSE TRANSPOSE_CONV UNIDIRECTIONAL_SEQUENCE_LSTM
    UNPACK VAR_HANDLE WHILE ZEROS_LIKE
    """.split()
)


@dataclasses.dataclass(frozen=True)
class Deployment:
    """What a deployment target asks of an exported file.

    Attributes:
        summary: one line for errors and reports.
        modes: the modes whose files the target's runtime runs.
        static_batch: whether every input needs a fixed batch size
            (batch 1 unless the model's `keras.Input` fixes another) and
            fixed other dimensions.
        ops: the builtin ops the runtime has kernels for.
    """

    summary: str
    modes: tuple
    static_batch: bool
    ops: frozenset

    def runs(self, op):
        """Whether the runtime has a kernel for builtin `op`."""
        return op in self.ops

    def missing(self, ops):
        """The ops of `ops` the runtime lacks, sorted, once each."""
        return sorted({op for op in ops if not self.runs(op)})


DEPLOYMENTS = {
    MICRO: Deployment(
        "TensorFlow Lite for Microcontrollers",
        modes=(Mode.INT8_ONLY, Mode.INT8, Mode.INT16X8, Mode.FLOAT32),
        static_batch=True,
        ops=MICRO_OPS,
    ),
}


def check_target(target, mode):
    """Validates a deployment `target` for a fixed `mode`; returns it.

    Raises:
        ValueError: an unknown target, or a mode its runtime cannot run.
    """
    if target is None:
        return None
    if target not in DEPLOYMENTS:
        raise ValueError(
            f"Expected `target` to be one of {sorted(DEPLOYMENTS)} for a "
            f"fixed mode (the others choose a mode: use mode='auto'). "
            f"Received: target={target!r} with mode={Mode(mode).value!r}."
        )
    deployment = DEPLOYMENTS[target]
    if mode not in deployment.modes:
        runs = [m.value for m in deployment.modes]
        raise ValueError(
            f"{deployment.summary} (target={target!r}) runs the modes "
            f"{runs}. Received: mode={Mode(mode).value!r}. Use "
            f"mode={Mode.INT8_ONLY.value!r}, the integer-only file the "
            "post-training guide names for microcontrollers."
        )
    return target
