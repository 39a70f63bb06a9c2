"""The `keras-quant` commands: each reads its inputs, calls the library
and prints what it found. `COMMANDS` maps a command's name to its run."""

import json
import math
import os
import re

from keras_quant import data as data_lib
from keras_quant.cli import inputs
from keras_quant.cli import text
from keras_quant.cli.outcomes import CheckFailed
from keras_quant.cli.outcomes import UsageError


def run_export(args):
    """`keras-quant export`: every mode asked for in one export run, so the
    float conversion and predictions are shared, then one report."""
    paths = {mode: text.output_path(args, mode) for mode in args.modes}
    validation = None
    if args.validation_data:
        validation = inputs.read_labelled(args.validation_data)
        data_lib.check_finite(
            *validation, where=f"--validation-data {args.validation_data}"
        )
    if args.report_dir:
        inputs.output_folder(args.report_dir, "--report-dir")
    model = inputs.prepared_model(
        args, needs_ranges=inputs.needs_ranges(args.modes)
    )
    if validation:
        inputs.check_fits_model(validation[0], model, args.validation_data)
    from keras_quant.exporting import api

    plan = api.plan_export(
        model,
        paths,
        io_dtype=args.io_dtype,
        block_size=args.block_size,
        keep_float=args.keep_float or (),
        keep_8bit=args.keep_8bit or (),
        validation_data=validation,
        max_accuracy_drop=args.max_accuracy_drop,
        target=args.target,
        report_dir=args.report_dir,
    )
    inputs.progress_line(f"exporting {', '.join(args.modes)}")
    for result in api.run(model, plan):
        print(text.describe(result))
        if result.selection is not None:
            print(result.selection.table())
            print(result.selection.reason)
    if args.report_dir:
        print(f"wrote {os.path.join(args.report_dir, 'report.html')}")


def run_inspect(args):
    """`keras-quant inspect`: what the `.tflite` holds, checked against the
    quantization spec and by allocating it in LiteRT."""
    path = inputs.existing(args.tflite, ".tflite")
    inputs.check_tflite_header(path)
    from keras_quant.runtime import inspection

    summary, violations = inputs.read_tflite(path, inspection)
    allocation_error = inputs.litert_problem(path)
    show = text.summary_dict if args.json else text.summary_text
    shown = show(path, summary, violations, allocation_error)
    failures = []
    if args.target:
        found, lines, failure = TARGET_CHECKS[args.target](path)
        if args.json:
            shown["target"] = {"name": args.target, **found}
        else:
            shown += "\n" + lines
        failures += [failure] if failure else []
    print(json.dumps(shown, indent=2) if args.json else shown)
    if violations:
        failures.append(
            f"{len(violations)} departure(s) from the TFLite quantization "
            "spec (listed above)"
        )
    if allocation_error:
        failures.append(f"LiteRT cannot allocate {path}: {allocation_error}")
    if failures:
        raise CheckFailed("; ".join(failures))


def micro_check(path):
    """`inspect --target micro`: the file run in TFLM, in a child process;
    `(found, text, failure or None)`."""
    from keras_quant.conversion import isolation
    from keras_quant.runtime import micro

    if not micro.available():
        raise UsageError(micro.MISSING)
    with open(path, "rb") as stream:
        tflite = stream.read()
    found = isolation.run_isolated(micro.file_check, tflite)
    lines = [f"TensorFlow Lite for Microcontrollers ({found['runtime']}):"]
    if found["runs"]:
        lines.append(f"  runs; smallest arena {found['arena_bytes']:,} bytes")
    else:
        lines.append(f"  cannot run it: {found['problem']}")
    if found["missing_ops"]:
        lines.append(f"  ops it has no kernel for: {found['missing_ops']}")
    failure = None
    if not found["runs"]:
        failure = f"TFLM cannot run {path}: {found['problem']}"
    return found, "\n".join(lines), failure


def edgetpu_check(path):
    """`inspect --target edgetpu`: the static pre-check of Coral's
    documented requirements; `(found, text, failure or None)`."""
    from keras_quant.runtime import edgetpu

    report = edgetpu.precheck(path)
    failure = None
    if not report.passed:
        failure = (
            f"the Edge TPU pre-check has {len(report.findings)} finding(s) "
            "(listed above)"
        )
    return report.to_dict(), report.text(), failure


# `inspect --target`: the check of each target, by name.
TARGET_CHECKS = {"micro": micro_check, "edgetpu": edgetpu_check}


def run_compare(args):
    """`keras-quant compare`: the float model and the `.tflite` on the same
    data, their metrics and how far their outputs are apart, then the
    gate (`--max-drop`, `--min-sqnr`)."""
    tflite = inputs.existing(args.tflite, ".tflite")
    inputs.check_tflite_header(tflite)
    x, y = inputs.read_labelled(args.data)
    model = inputs.load_model(args.model)
    inputs.check_fits_model(x, model, args.data)
    problem = inputs.litert_problem(tflite, invoke=True)
    if problem:
        raise CheckFailed(f"LiteRT cannot run {tflite}: {problem}")
    found = _compared(model, tflite, (x, y), args)
    print(text.comparison_text(found))
    if args.max_drop is not None or args.min_sqnr is not None:
        _gate(model, found, args.max_drop, args.min_sqnr)


def _compared(model, tflite, data, args):
    from keras_quant.measurement import evaluation

    try:
        with inputs.litert_lines_hidden(args.verbose):
            return evaluation.compare(model, tflite, data)
    except RuntimeError as error:  # LiteRT: resizing, allocating, invoking
        raise CheckFailed(
            f"LiteRT cannot run {tflite}: {inputs.one_line(error)}"
        ) from error
    except Exception as error:
        # TensorFlow's verdict on the data (labels out of the loss's range,
        # NaN labels read as integers); its class is no built-in's.
        if type(error).__name__ != "InvalidArgumentError":
            raise
        reason = re.sub(r"\{\{.*?\}\}", "", str(error))  # TF's op names
        reason = reason.split(" Label values:")[0].strip().rstrip(".")
        raise UsageError(
            f"the model cannot be evaluated on {args.data}: "
            f"{inputs.one_line(reason, limit=200)}; check its 'y'"
        ) from error


# The output SQNR, in dB, below which `compare`'s gate says the two models
# do not agree, unless --min-sqnr says otherwise. On the test CNN: int8
# 39 dB, int8x4 and dynamic_int4 26 dB, int16x8 49 dB, float16 74 dB;
# compared with another model's .tflite, -4 to 6 dB.
MIN_SQNR_DB = 10.0


def _gate(model, found, max_drop, min_sqnr):
    """The gate: `--max-drop`, the first compiled metric's drop, or, for a
    model compiled with no loss or metric, the outputs' (see
    `output_drop`); and, beside it, the outputs' agreement: an output SQNR
    below `--min-sqnr` (default `MIN_SQNR_DB`) fails, since a metric can
    improve by chance while the outputs have nothing in common. A gate
    that cannot be evaluated (a NaN drop or output figure) fails."""
    min_sqnr = MIN_SQNR_DB if min_sqnr is None else min_sqnr
    failures = []
    if max_drop is not None:
        measure = metric_drop if found.float_metrics else output_drop
        label, drop, unit = measure(model, found)
        print(f"{label} drop: {drop:+.3f} {unit}")
        undefined = _undefined_figures(found, f"the {label} drop", drop)
        if drop > max_drop:
            failures.append(
                f"{label} dropped {drop:.3f} {unit}, more than --max-drop "
                f"{max_drop:g}"
            )
    else:
        undefined = _undefined_figures(found)
    if undefined:
        option = "--max-drop" if max_drop is not None else "--min-sqnr"
        raise CheckFailed(
            f"{option} cannot be evaluated: {', '.join(undefined)} NaN "
            "(the data or a model gives NaN or infinite values, or the float "
            "loss is 0); check the data and both models"
        )
    if found.output_sqnr_db < min_sqnr:
        failures.append(
            "the models do not agree: output SQNR "
            f"{found.output_sqnr_db:.2f} dB, below --min-sqnr {min_sqnr:g} "
            "dB (is the .tflite exported from this model? If this much "
            "error is expected, lower --min-sqnr)"
        )
    if failures:
        raise CheckFailed("; ".join(failures))


def _undefined_figures(found, drop_label=None, drop=None):
    """Names of the figures the gate rests on that are NaN."""
    from keras_quant.measurement.evaluation import OUTPUT_FIGURES

    figures = {} if drop_label is None else {drop_label: drop}
    figures.update({name: getattr(found, name) for name in OUTPUT_FIGURES})
    return [name for name, value in figures.items() if math.isnan(value)]


def metric_drop(model, found):
    """`(metric, drop, unit)` of the first compiled metric (else the loss):
    points for a metric that grows, percent for one that shrinks."""
    from keras_quant.exporting import auto as selection

    budget = selection.budget_for(model, found.float_metrics, 0)
    try:
        drop = budget.drop(found.quantized_metrics[budget.metric])
    except ZeroDivisionError:  # percent of a float loss of 0
        drop = math.nan
    return budget.metric, drop, budget.unit


def output_drop(model, found):
    """`("output", drop, unit)` for a model compiled with no loss or
    metric: the largest |float - tflite| output difference in percent of
    that output's float range (max - min), the worst output."""
    return "output", found.output_error_percent, "% of the float output range"


def run_report(args):
    """`keras-quant report`: export each mode into a folder, then write the
    report comparing them."""
    data = inputs.read_labelled(args.data)
    data_lib.check_finite(*data, where=f"--data {args.data}")
    inputs.output_folder(args.output, "--output")
    model = inputs.prepared_model(
        args, needs_ranges=inputs.needs_ranges(args.modes)
    )
    inputs.check_fits_model(data[0], model, args.data)
    from keras_quant.exporting import api

    stem = text.stem(args.model)
    plan = api.plan_export(
        model,
        {
            mode: os.path.join(args.output, f"{stem}_{mode}.tflite")
            for mode in args.modes
        },
        validation_data=data,
        report_dir=args.output,
    )
    inputs.progress_line(f"exporting {', '.join(args.modes)} and reporting")
    for result in api.run(model, plan):
        print(text.describe(result))
    print(f"wrote {os.path.join(args.output, 'report.html')}")


def run_strip(args):
    """`keras-quant strip`: the `.keras` file rewritten without the input
    rows its replay samples keep."""
    path = inputs.existing(args.model, ".keras")
    inputs.load_model(path)  # a one-line error for a file Keras cannot load
    from keras_quant.exporting import save_hook

    erased = save_hook.strip_samples(path)
    print(f"{path}: erased {erased} input rows; its ranges are kept")


COMMANDS = {
    "export": run_export,
    "inspect": run_inspect,
    "compare": run_compare,
    "report": run_report,
    "strip": run_strip,
}
