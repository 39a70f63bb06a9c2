"""An export for a microcontroller, verified in the runtime it is for.

`verify` runs the file in TensorFlow Lite for Microcontrollers (the
`tflite-micro` package, `runtime.micro`, in a child process) on the
validation data, or once on zeros without it, and returns a `MicroReport`:
whether it ran, the model's compiled metrics computed from TFLM's
outputs, how far TFLM is from LiteRT on the same integer inputs (in steps
of the output's quantization, against LiteRT's reference kernels, which
TFLM's kernels are written to match), the smallest arena and the ops.
An export whose file TFLM cannot run raises before anything is written.
"""

import dataclasses

import numpy as np

from keras_quant import data as data_lib
from keras_quant.conversion import isolation
from keras_quant.errors import ExportError
from keras_quant.measurement import evaluation
from keras_quant.runtime import litert
from keras_quant.runtime import micro


@dataclasses.dataclass(frozen=True)
class MicroReport:
    """How an export ran in TFLM.

    Attributes:
        runtime: the runtime and its version, e.g. `"tflite-micro
            0.dev20261023182759"`.
        samples: how many samples TFLM ran (1, on zeros, without data).
        arena_bytes: the smallest tensor arena it ran in (to 16 bytes).
        ops: the file's builtin ops.
        metrics: the model's compiled loss and metrics from TFLM's
            outputs (empty without labelled data or a compiled model).
        max_step_difference: the largest difference between TFLM's and
            LiteRT's outputs, in steps of the output's quantization (0:
            bit-exact); None for float outputs.
        differing_share: the share of output values (0 to 1) where TFLM
            and LiteRT differ at all; None for float outputs.
        max_abs_difference: the largest difference in the outputs'
            float values.
    """

    runtime: str
    samples: int
    arena_bytes: int
    ops: tuple
    metrics: dict
    max_step_difference: int
    differing_share: float
    max_abs_difference: float

    def to_dict(self):
        result = dataclasses.asdict(self)
        result["ops"] = list(self.ops)
        return result


def verify(model, tflite, validation_data=None):
    """Runs `tflite` in TFLM on `validation_data` (or once on zeros) and
    compares it with LiteRT; returns a `MicroReport`.

    Args:
        model: the Keras model exported (its compiled metrics judge).
        tflite: the file's bytes.
        validation_data: `(x, y)` or a dataset, or None.

    Raises:
        ExportError: `tflite-micro` is not installed, or TFLM cannot run
            the file (the message holds TFLM's reason).
    """
    check_available()
    x, y = _data(model, validation_data)
    input_details, output_details = litert.io_details(tflite)
    inputs = [
        litert.quantize(values, detail)
        for values, detail in zip(data_lib.as_list(x), input_details)
    ]
    try:
        found = isolation.run_isolated(micro.run, bytes(tflite), inputs)
    except RuntimeError as error:
        raise ExportError(
            f"TFLM cannot run the exported model: {error}. Nothing was written."
        ) from error
    tflm = _in_keras_order(found.outputs, tflite)
    reference = litert.run_raw(tflite, inputs, reference=True)
    dequantized = [
        litert.dequantize(v, d) for v, d in zip(tflm, output_details)
    ]
    steps, share = _agreement(tflm, reference)
    metrics = {}
    if y is not None:
        predictions = dequantized[0] if len(dequantized) == 1 else dequantized
        metrics = evaluation.metrics_from_predictions(model, y, predictions)
    return MicroReport(
        runtime=f"tflite-micro {micro.version()}",
        samples=len(inputs[0]),
        arena_bytes=found.arena_bytes,
        ops=found.ops,
        metrics=metrics,
        max_step_difference=steps,
        differing_share=share,
        max_abs_difference=_largest_difference(
            dequantized,
            [
                litert.dequantize(v, d)
                for v, d in zip(reference, output_details)
            ],
        ),
    )


def check_available():
    """Raises `ExportError` (naming the install) without `tflite-micro`."""
    if not micro.available():
        raise ExportError(micro.MISSING)


def _data(model, validation_data):
    """`(x, y)` to run; one all-zero sample and no labels without data."""
    if validation_data is None:
        return litert.zero_inputs(model), None
    return data_lib.as_arrays(validation_data)


def _in_keras_order(outputs, tflite):
    """TFLM's outputs (the file's order) in the Keras model's order."""
    runner = litert.interpreter(tflite)
    position = {
        d["index"]: i for i, d in enumerate(runner.get_output_details())
    }
    return [
        outputs[position[d["index"]]] for d in litert.output_details(runner)
    ]


def _agreement(tflm, reference):
    """`(largest integer difference, share of values that differ)` of
    integer outputs; `(None, None)` for a float output."""
    if not all(np.issubdtype(np.asarray(t).dtype, np.integer) for t in tflm):
        return None, None
    differences = np.concatenate(
        [
            np.abs(t.astype(np.int64) - r.astype(np.int64)).ravel()
            for t, r in zip(tflm, reference)
        ]
    )
    return int(differences.max()), float(np.mean(differences > 0))


def _largest_difference(first, second):
    return max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(first, second)
    )
