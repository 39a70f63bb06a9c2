"""The `keras-quant` commands: each reads its inputs, calls the library
and prints what it found. `COMMANDS` maps a command's name to its run."""

import json
import os

from keras_quant import _registration
from keras_quant.cli import inputs
from keras_quant.cli import text
from keras_quant.cli.outcomes import CheckFailed
from keras_quant.text import table


def run_export(args):
    """`keras-quant export`: every mode asked for in one export run, so the
    float conversion and predictions are shared, then one report."""
    from keras_quant.exporting import api

    model = inputs.prepared_model(
        args, needs_ranges=inputs.needs_ranges(args.modes)
    )
    validation = None
    if args.validation_data:
        validation = inputs.read_labelled(args.validation_data)
    plan = api.plan_export(
        model,
        {mode: text.output_path(args, mode) for mode in args.modes},
        io_dtype=args.io_dtype,
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
    from keras_quant.runtime import inspection

    path = inputs.existing(args.tflite, ".tflite")
    summary, violations = inputs.read_tflite(path, inspection)
    if args.json:
        print(
            json.dumps(text.summary_dict(path, summary, violations), indent=2)
        )
    else:
        print(text.summary_text(path, summary, violations))
    if violations:
        raise CheckFailed(
            f"{len(violations)} departure(s) from the TFLite quantization "
            "spec (listed above)"
        )


def run_compare(args):
    from keras_quant.exporting import auto as selection
    from keras_quant.measurement import evaluation

    model = inputs.load_model(args.model)
    tflite = inputs.existing(args.tflite, ".tflite")
    inputs.check_tflite_header(tflite)
    x, y = inputs.read_labelled(args.data)
    found = evaluation.compare(model, tflite, (x, y))
    names = list(found.float_metrics)
    rows = [("metric", "float", "tflite", "difference")]
    for name in names:
        f, q = found.float_metrics[name], found.quantized_metrics[name]
        rows.append((name, f"{f:.6g}", f"{q:.6g}", f"{q - f:+.6g}"))
    print(table(rows))
    print(f"samples: {found.samples}")
    print(f"largest |float - tflite| output: {found.max_abs_output_diff:.6g}")
    if args.max_drop is None or not names:
        return
    budget = selection.budget_for(model, found.float_metrics, args.max_drop)
    drop = budget.drop(found.quantized_metrics[budget.metric])
    print(f"{budget.metric} drop: {drop:+.3f} {budget.unit}")
    if drop > args.max_drop:
        raise CheckFailed(
            f"{budget.metric} dropped {drop:.3f} {budget.unit}, more than "
            f"--max-drop {args.max_drop}"
        )


def run_report(args):
    """`keras-quant report`: export each mode into a folder, then write the
    report comparing them."""
    from keras_quant.exporting import api

    model = inputs.prepared_model(
        args, needs_ranges=inputs.needs_ranges(args.modes)
    )
    data = inputs.read_labelled(args.data)
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


COMMANDS = {
    "export": run_export,
    "inspect": run_inspect,
    "compare": run_compare,
    "report": run_report,
}

# A saved `.keras` file names keras-quant's layers: register them first.
_registration.register()
