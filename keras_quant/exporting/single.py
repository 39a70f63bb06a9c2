"""Writing one mode: convert, measure, write.

`export_mode` is the step of the pipeline for a `Destination` with a
fixed mode: it collects the ranges the mode needs, converts, compares
with float on the plan's validation data and only then writes the file,
so a failed comparison leaves the previous file in place.
"""

from keras_quant.conversion import routes as conversion
from keras_quant.exporting import files
from keras_quant.exporting.result import ExportResult
from keras_quant.measurement import evaluation
from keras_quant.measurement import micro_check
from keras_quant.modes import Mode


def export_mode(model, destination, plan, shared):
    """Exports `model` to one `Destination` of `plan`.

    Args:
        model: the model to export.
        destination: a `Destination` whose mode is a `Mode`.
        plan: the `ExportPlan` it belongs to.
        shared: a dict kept across the plan's destinations: the float32
            size and the float predictions are computed once per run.

    Returns:
        An `ExportResult`.
    """
    options = destination.options
    mode = options.mode
    ranges = conversion.ranges_for(model, mode)
    tflite = conversion.convert(model, options)
    float32_size = float32_size_of(model, mode, tflite, shared)
    comparison = {}
    if plan.validation_data is not None:
        found = evaluation.compare(
            model, tflite, plan.validation_data, plan.batch_size, shared
        )
        comparison = dict(
            float_metrics=found.float_metrics,
            quantized_metrics=found.quantized_metrics,
            max_abs_output_diff=found.max_abs_output_diff,
        )
    if options.target is not None:
        comparison["micro"] = micro_check.verify(
            model, tflite, plan.validation_data
        )
    files.write_atomically(destination.path, tflite)
    return ExportResult(
        path=destination.path,
        mode=mode,
        io_dtype=options.io_dtype,
        size_bytes=len(tflite),
        float32_size_bytes=float32_size,
        size_ratio=len(tflite) / float32_size,
        ranges=ranges,
        keep_float=options.keep_float,
        keep_8bit=options.keep_8bit,
        block_size=options.block_size,
        target=options.target,
        **comparison,
    )


def float32_size_of(model, mode, tflite, shared):
    """The model's float32 size, converted once per `shared` dict."""
    if mode is Mode.FLOAT32:
        shared["float32_size"] = len(tflite)
    if "float32_size" not in shared:
        shared["float32_size"] = len(conversion.convert(model, Mode.FLOAT32))
    return shared["float32_size"]
