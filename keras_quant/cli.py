"""The `keras-quant` command: export, inspect, compare and report.

    keras-quant export model.keras --mode int8 int8_only
    keras-quant export float.keras --calibration-data images/ -o m.tflite
    keras-quant inspect m.tflite
    keras-quant compare model.keras m.tflite --data test.npz --max-drop 1
    keras-quant report model.keras --data val.npz -o report/

Exit codes (`EXIT_CODES`): 0 success; 1 the work ran and failed (the model
cannot be exported in that mode, the spec check or the accuracy budget
failed); 2 the command cannot run (bad arguments, a missing or unreadable
file, a model without the ranges its mode needs). Errors are one line on
stderr; progress bars go to stderr when it is a terminal.
"""

import argparse
import contextlib
import json
import os
import sys
import zipfile

import numpy as np

EXIT_CODES = {"ok": 0, "failed": 1, "usage": 2}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
CHUNK = 256


class UsageError(Exception):
    """The command cannot run as given (exit code 2)."""


class CheckFailed(Exception):
    """The command ran and its check failed (exit code 1)."""


def main(argv=None):
    """Runs the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_CODES["usage"]
    from keras_quant import native_stderr
    from keras_quant.errors import ExportError
    from keras_quant.errors import KerasQuantError

    quiet = native_stderr.python_only()
    try:
        with contextlib.nullcontext() if args.verbose else quiet:
            args.run(args)
    except (UsageError, ValueError, TypeError) as error:
        return _fail(error, "usage")
    except (CheckFailed, ExportError) as error:
        return _fail(error, "failed")
    except KerasQuantError as error:  # no ranges, NaN ranges, bad model
        return _fail(error, "usage")
    except KeyboardInterrupt:
        return 130
    return EXIT_CODES["ok"]


def _fail(error, kind):
    message = " ".join(str(error).split())
    print(f"keras-quant: error: {message}", file=sys.stderr)
    return EXIT_CODES[kind]


def build_parser():
    """The argument parser, with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="keras-quant",
        description="Quantized TFLite (LiteRT) models from Keras 3 models.",
        epilog="Exit codes: 0 success; 1 the export, spec check or accuracy "
        "budget failed; 2 bad arguments or unreadable input.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's and LiteRT's own log lines",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_export(commands)
    _add_inspect(commands)
    _add_compare(commands)
    _add_report(commands)
    return parser


def _version():
    from importlib import metadata

    try:
        return metadata.version("keras-quant")
    except metadata.PackageNotFoundError:
        return "unknown"


def _add_export(commands):
    command = commands.add_parser(
        "export",
        help="write .tflite files from a .keras model",
        description="Export a .keras model to .tflite. An observed model "
        "saved with ranges needs no data; a float model needs "
        "--calibration-data for the modes that quantize activations.",
    )
    command.add_argument("model", help="the .keras file")
    _add_modes(command, default=["int8"])
    command.add_argument(
        "-o",
        "--output",
        help="the .tflite to write; with several modes it must contain "
        "{mode} (default: <model>_{mode}.tflite beside the model)",
    )
    _add_calibration(command)
    command.add_argument(
        "--validation-data",
        help=".npz with 'x' and 'y': float and quantized metrics (needed "
        "by --mode auto)",
    )
    command.add_argument("--io-dtype", choices=["int8", "uint8"])
    command.add_argument(
        "--max-accuracy-drop",
        type=float,
        help="for --mode auto: points (or percent for a loss-like metric)",
    )
    command.add_argument(
        "--target", choices=["cpu", "gpu", "integer_only"], help="for auto"
    )
    command.add_argument(
        "--report-dir",
        help="also write report.html and report.json there, comparing the "
        "modes exported",
    )
    command.set_defaults(run=run_export)


def _add_modes(command, default):
    command.add_argument(
        "-m",
        "--mode",
        dest="modes",
        nargs="+",
        default=default,
        help="float32, dynamic, int8, int8_only, float16, int16x8 or auto "
        f"(default: {' '.join(default)})",
    )


def _add_calibration(command):
    command.add_argument(
        "--calibration-data",
        help=".npz (array 'x', or its only array) or a folder of images: "
        "activation ranges are collected on it",
    )
    command.add_argument(
        "--estimator",
        default="minmax",
        choices=["minmax", "ema", "percentile", "mse", "entropy", "auto"],
        help="range estimator for --calibration-data (default: minmax)",
    )
    command.add_argument(
        "--samples",
        type=int,
        default=1000,
        help="calibration samples to use (default: 1000)",
    )
    command.add_argument(
        "--image-scale",
        type=float,
        default=1 / 255,
        help="multiplies image pixels (default: 1/255, to [0, 1])",
    )


def _add_inspect(commands):
    command = commands.add_parser(
        "inspect",
        help="show a .tflite's ops, types and quantization; check the spec",
        description="Print a .tflite model's inputs, outputs, ops, tensor "
        "types and quantization parameters, and check them against the "
        "TFLite quantization spec (exit code 1 if they break it).",
    )
    command.add_argument("tflite", help="the .tflite file")
    command.add_argument("--json", action="store_true", help="print JSON")
    command.set_defaults(run=run_inspect)


def _add_compare(commands):
    command = commands.add_parser(
        "compare",
        help="float .keras against .tflite on data: metrics, output error",
        description="Run the float Keras model and the .tflite model on the "
        "same data and compare the model's compiled loss and metrics.",
    )
    command.add_argument("model", help="the float (or observed) .keras file")
    command.add_argument("tflite", help="the .tflite file")
    command.add_argument(
        "--data", required=True, help=".npz with arrays 'x' and 'y'"
    )
    command.add_argument(
        "--max-drop",
        type=float,
        help="exit 1 if the first metric drops more (points; percent for "
        "a loss-like metric)",
    )
    command.set_defaults(run=run_compare)


def _add_report(commands):
    command = commands.add_parser(
        "report",
        help="export modes and write report.html and report.json",
        description="Export the model in each mode into a folder and write "
        "a report comparing them: sizes, metrics, latency, activation "
        "histograms and per-point errors.",
    )
    command.add_argument("model", help="the .keras file")
    command.add_argument(
        "--data", required=True, help=".npz with arrays 'x' and 'y'"
    )
    _add_modes(command, default=["int8", "float16"])
    command.add_argument(
        "-o", "--output", default="report", help="folder (default: report)"
    )
    _add_calibration(command)
    command.set_defaults(run=run_report)


# ---------------------------------------------------------------- commands


def run_export(args):
    import keras_quant

    model = _prepared_model(args, needs_ranges=_needs_ranges(args.modes))
    validation = None
    if args.validation_data:
        validation = _labelled(args.validation_data)
    results = []
    for mode in args.modes:
        path = _output_path(args, mode)
        _progress_line(f"exporting {mode} to {path}")
        result = keras_quant.export(
            model,
            path,
            mode,
            io_dtype=args.io_dtype,
            validation_data=validation,
            max_accuracy_drop=args.max_accuracy_drop,
            target=args.target,
        )
        results.append(result)
        print(_describe(result))
        if result.selection is not None:
            print(result.selection.table())
            print(result.selection.reason)
    if args.report_dir:
        _progress_line("drawing the report")
        selection = results[0].selection if len(results) == 1 else None
        _, html_path = keras_quant.write_report(
            args.report_dir, model, results, validation, selection=selection
        )
        print(f"wrote {html_path}")


def run_inspect(args):
    from keras_quant import inspection

    path = _existing(args.tflite, ".tflite")
    summary, violations = _read_tflite(path, inspection)
    if args.json:
        print(json.dumps(_summary_dict(path, summary, violations), indent=2))
    else:
        print(_summary_text(path, summary, violations))
    if violations:
        raise CheckFailed(
            f"{len(violations)} departure(s) from the TFLite quantization "
            "spec (listed above)"
        )


def run_compare(args):
    from keras_quant import evaluation
    from keras_quant import selection

    model = _load_model(args.model)
    tflite = _existing(args.tflite, ".tflite")
    _check_tflite_header(tflite)
    x, y = _labelled(args.data)
    found = evaluation.compare(model, tflite, (x, y))
    names = list(found.float_metrics)
    rows = [("metric", "float", "tflite", "difference")]
    for name in names:
        f, q = found.float_metrics[name], found.quantized_metrics[name]
        rows.append((name, f"{f:.6g}", f"{q:.6g}", f"{q - f:+.6g}"))
    from keras_quant import text

    print(text.table(rows))
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
    import keras_quant
    from keras_quant import exporter

    model = _prepared_model(args, needs_ranges=_needs_ranges(args.modes))
    data = _labelled(args.data)
    stem = _stem(args.model)
    os.makedirs(args.output, exist_ok=True)
    paths = {
        mode: os.path.join(args.output, f"{stem}_{mode}.tflite")
        for mode in args.modes
    }
    _progress_line(f"exporting {', '.join(args.modes)} into {args.output}")
    results = exporter.export_many(model, paths, validation_data=data)
    for result in results:
        print(_describe(result))
    _progress_line("analysing and drawing the report")
    _, html_path = keras_quant.write_report(args.output, model, results, data)
    print(f"wrote {html_path}")


# ---------------------------------------------------------------- helpers


def _needs_ranges(modes):
    from keras_quant.modes import MODES
    from keras_quant.modes import parse_mode

    return any(
        mode == "auto" or MODES[parse_mode(mode)].needs_ranges for mode in modes
    )


def _prepared_model(args, needs_ranges):
    """The model to export: loaded, and calibrated if data is given."""
    import keras_quant
    from keras_quant.observed_model import find_observers

    model = _load_model(args.model)
    if args.calibration_data:
        x = _calibration_inputs(args, model)
        if find_observers(model):
            keras_quant.reset_ranges(model)
        else:
            model = keras_quant.observe(model, args.estimator)
        _calibrate(model, x)
    elif needs_ranges and not find_observers(model):
        raise UsageError(
            f"{args.model} is a float model without ranges; the quantizing "
            "modes need --calibration-data (an .npz or a folder of images)"
        )
    return model


def _calibrate(model, x):
    count = len(x)
    progress = _Progress("calibrating", count)
    for start in range(0, count, CHUNK):
        model.predict(x[start : start + CHUNK], verbose=0)
        progress.update(min(start + CHUNK, count))
    progress.done()


def _load_model(path):
    path = _existing(path, ".keras")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"{path} is not a .keras file (not a zip archive)")
    import keras

    import keras_quant  # noqa: F401  registers keras-quant's layers

    try:
        return keras.saving.load_model(path)
    except Exception as error:  # noqa: BLE001  one line for any cause
        reason = str(error).strip().splitlines()[0][:300]
        raise UsageError(f"cannot load {path}: {reason}") from error


def _existing(path, suffix):
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a folder; expected a {suffix} file")
    if not path.endswith(suffix):
        raise UsageError(f"{path}: expected a {suffix} file")
    return path


def _check_tflite_header(path):
    with open(path, "rb") as handle:
        header = handle.read(8)
    if header[4:8] != b"TFL3":
        raise UsageError(f"{path} is not a TFLite model (bad header)")


def _read_tflite(path, inspection):
    _check_tflite_header(path)
    try:
        return inspection.summarize(path), inspection.spec_violations(path)
    except Exception as error:  # noqa: BLE001  a corrupt file, any cause
        reason = str(error).strip().splitlines()[0][:300]
        raise UsageError(f"cannot read {path}: {reason}") from error


def _arrays(path):
    if not path.endswith(".npz"):
        raise UsageError(f"{path}: expected an .npz file or a folder of images")
    _existing(path, ".npz")
    try:
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    except Exception as error:  # noqa: BLE001  a corrupt file, any cause
        raise UsageError(f"cannot read {path}: {error}") from error


def _labelled(path):
    arrays = _arrays(path)
    missing = [name for name in ("x", "y") if name not in arrays]
    if missing:
        raise UsageError(
            f"{path} has arrays {sorted(arrays)}; expected 'x' (inputs) and "
            f"'y' (labels). Save it with np.savez(path, x=x, y=y)"
        )
    return arrays["x"], arrays["y"]


def _calibration_inputs(args, model):
    path = args.calibration_data
    if os.path.isdir(path):
        x = _images(path, model, args.image_scale)
    else:
        arrays = _arrays(path)
        if "x" in arrays:
            x = arrays["x"]
        elif len(arrays) == 1:
            x = next(iter(arrays.values()))
        else:
            raise UsageError(
                f"{path} has arrays {sorted(arrays)}; name the inputs 'x'"
            )
    expected = tuple(model.inputs[0].shape[1:])
    if tuple(x.shape[1:]) != expected:
        raise UsageError(
            f"calibration data has samples of shape {tuple(x.shape[1:])}; "
            f"the model takes {expected}"
        )
    return x[: args.samples].astype(model.inputs[0].dtype)


def _images(folder, model, scale):
    """Images of a folder, decoded, resized and scaled to the model input."""
    import tensorflow as tf

    names = sorted(
        n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES)
    )
    if not names:
        raise UsageError(f"{folder} holds no {'/'.join(IMAGE_SUFFIXES)} image")
    shape = model.inputs[0].shape
    if len(shape) != 4:
        raise UsageError(
            "a folder of images needs a model taking (height, width, "
            f"channels) images; this one takes {tuple(shape[1:])}"
        )
    height, width, channels = shape[1:]
    images = []
    progress = _Progress("reading images", len(names))
    for count, name in enumerate(names, start=1):
        data = tf.io.read_file(os.path.join(folder, name))
        try:
            image = tf.io.decode_image(data, expand_animations=False)
        except tf.errors.InvalidArgumentError as error:
            raise UsageError(f"cannot decode {name} in {folder}") from error
        image = _channels(tf, image, channels)
        image = tf.image.resize(tf.cast(image, "float32"), (height, width))
        images.append(image.numpy() * scale)
        progress.update(count)
    progress.done()
    return np.stack(images)


def _channels(tf, image, channels):
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return tf.image.rgb_to_grayscale(image[..., :3])
    if channels == 3 and image.shape[-1] == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 3:
        return image[..., :3]
    raise UsageError(
        f"images have {image.shape[-1]} channels; model {channels}"
    )


def _output_path(args, mode):
    if args.output:
        if len(args.modes) > 1 and "{mode}" not in args.output:
            raise UsageError(
                "several modes need '{mode}' in --output, so the files do "
                "not overwrite each other"
            )
        return args.output.format(mode=mode)
    return os.path.join(
        os.path.dirname(args.model) or ".", f"{_stem(args.model)}_{mode}.tflite"
    )


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def _describe(result):
    line = (
        f"wrote {result.path}: {result.mode.value}, "
        f"{result.size_bytes / 1024:.1f} KB ({result.size_ratio:.2f} of "
        "float32)"
    )
    if result.keep_float:
        line += f", float layers {list(result.keep_float)}"
    if result.quantized_metrics:
        metrics = ", ".join(
            f"{name} {result.float_metrics[name]:.4g} -> {value:.4g}"
            for name, value in result.quantized_metrics.items()
        )
        line += f"; {metrics}"
    return line


def _summary_text(path, summary, violations):
    lines = [f"{path}: {summary.size_bytes / 1024:.1f} KB"]
    for label, indices in (
        ("input", summary.inputs),
        ("output", summary.outputs),
    ):
        for index in indices:
            lines.append(f"{label}: {_tensor_text(summary.tensors[index])}")
    counts = {}
    for op in summary.ops:
        counts[op.name] = counts.get(op.name, 0) + 1
    lines.append(
        "ops: " + ", ".join(f"{name} x{n}" for name, n in counts.items())
    )
    lines.append("weights:")
    for op_name, weight, bias in summary.weights():
        lines.append(f"  {op_name}: {_tensor_text(weight)}")
        if bias is not None:
            lines.append(f"    bias: {_tensor_text(bias)}")
    lines.append("activations:")
    for tensor in summary.activations():
        lines.append(f"  {_tensor_text(tensor)}")
    if violations:
        lines.append("TFLite quantization spec: NOT followed")
        lines.extend(f"  {message}" for message in violations)
    else:
        lines.append("TFLite quantization spec: followed")
    return "\n".join(lines)


def _tensor_text(tensor):
    text = f"'{tensor.name}' {tensor.dtype} {list(tensor.shape)}"
    if len(tensor.scales) == 1:
        text += (
            f" scale {float(tensor.scales[0]):.6g} zero point "
            f"{int(tensor.zero_points[0])}"
        )
    elif len(tensor.scales) > 1:
        text += (
            f" per-axis (dim {tensor.quantized_dimension}, "
            f"{len(tensor.scales)} scales {float(tensor.scales.min()):.3g}"
            f"..{float(tensor.scales.max()):.3g}, zero points "
            f"{sorted(set(int(z) for z in tensor.zero_points))})"
        )
    return text


def _summary_dict(path, summary, violations):
    def tensor(info):
        return {
            "name": info.name,
            "dtype": info.dtype,
            "shape": list(info.shape),
            "scales": [float(s) for s in info.scales],
            "zero_points": [int(z) for z in info.zero_points],
            "quantized_dimension": info.quantized_dimension,
        }

    return {
        "path": path,
        "size_bytes": summary.size_bytes,
        "inputs": [tensor(summary.tensors[i]) for i in summary.inputs],
        "outputs": [tensor(summary.tensors[i]) for i in summary.outputs],
        "ops": [op.name for op in summary.ops],
        "weights": [
            {"op": name, "weight": tensor(w), "bias": b and tensor(b)}
            for name, w, b in summary.weights()
        ],
        "activations": [tensor(t) for t in summary.activations()],
        "spec_violations": violations,
    }


class _Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label, total):
        self.label, self.total = label, max(total, 1)
        self.shown = sys.stderr.isatty()

    def update(self, count):
        if self.shown:
            filled = int(30 * count / self.total)
            bar = "#" * filled + "." * (30 - filled)
            print(
                f"\r{self.label} [{bar}] {count}/{self.total}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def done(self):
        if self.shown:
            print(file=sys.stderr)


def _progress_line(message):
    if sys.stderr.isatty():
        print(message, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
