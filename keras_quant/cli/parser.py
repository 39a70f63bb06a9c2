"""The `keras-quant` argument parser.

It imports neither Keras nor TensorFlow, so `keras-quant --help` and an
argument error answer at once; the choices it offers are the library's
own tables (`modes.MODES`, `modes.TARGETS`, `ranges.ESTIMATORS`).
Numbers are checked as they are parsed (`NUMBERS`): NaN, infinity and
values out of range are argument errors (exit code 2), never a budget
that lets everything pass.
"""

import argparse
import math

from keras_quant.modes import AUTO
from keras_quant.modes import BLOCK_SIZES
from keras_quant.modes import IO_DTYPES
from keras_quant.modes import TARGETS
from keras_quant.modes import Mode
from keras_quant.observation.ranges import ESTIMATORS
from keras_quant.targets import INSPECTED

MODE_NAMES = [mode.value for mode in Mode] + [AUTO]


def _number(kind, accepts, expected):
    """An argparse `type`: text to a finite `kind` that `accepts`."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not accepts(value):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
        return value

    return parse


# The kinds of number the options take, each checked as it is parsed.
NUMBERS = {
    "drop": _number(float, lambda v: v >= 0, "a finite number >= 0"),
    "scale": _number(float, lambda v: v > 0, "a finite number > 0"),
    "count": _number(int, lambda v: v >= 1, "a whole number >= 1"),
    "decibels": _number(float, lambda v: True, "a finite number of dB"),
}


class OneLineParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line, like every other
    error of the command line: the problem, then where the usage is.

    Example (argparse prints usage lines first; this parser does not):

    >>> OneLineParser(prog="keras-quant inspect").format_error("bad")
    "keras-quant inspect: error: bad (see 'keras-quant inspect --help')"
    """

    def format_error(self, message):
        return f"{self.prog}: error: {message} (see '{self.prog} --help')"

    def error(self, message):
        self.exit(2, self.format_error(message) + "\n")


def build_parser():
    """The argument parser, with one sub-parser per command."""
    parser = OneLineParser(
        prog="keras-quant",
        description="Quantized TFLite (LiteRT) models from Keras 3 models.",
        epilog="Exit codes: 0 success; 1 the export, the spec check, LiteRT "
        "or the accuracy budget failed; 2 bad arguments, or input that "
        "cannot be read or written; 130 interrupted. Errors are one line; "
        "--verbose adds the traceback.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's and LiteRT's own log lines, and an error's "
        "traceback",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_export(commands)
    _add_inspect(commands)
    _add_compare(commands)
    _add_report(commands)
    _add_strip(commands)
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
    command.add_argument("--io-dtype", choices=IO_DTYPES)
    command.add_argument(
        "--block-size",
        type=int,
        choices=BLOCK_SIZES,
        help="for dynamic_int4: input features sharing one weight scale "
        "(default: one scale per output channel)",
    )
    command.add_argument(
        "--keep-float",
        action="append",
        metavar="LAYER",
        help="for int8: a layer whose ops stay float (repeatable)",
    )
    command.add_argument(
        "--keep-8bit",
        action="append",
        metavar="LAYER",
        help="for a mode with 4-bit weights: a layer whose weights stay "
        "int8 (repeatable)",
    )
    command.add_argument(
        "--max-accuracy-drop",
        type=NUMBERS["drop"],
        help="for --mode auto: points (or percent for a loss-like metric)",
    )
    command.add_argument(
        "--target",
        choices=sorted(TARGETS),
        help="where the file will run. With --mode auto: what to choose "
        "for. 'micro' (TensorFlow Lite for Microcontrollers) also with a "
        "fixed mode: static shapes, ops TFLM has, and the file run in "
        "TFLM before it is written (needs keras-quant[micro])",
    )
    command.add_argument(
        "--report-dir",
        help="also write report.html and report.json there, comparing the "
        "modes exported",
    )
    command.set_defaults(command="export")


def _add_modes(command, default):
    command.add_argument(
        "-m",
        "--mode",
        dest="modes",
        nargs="+",
        default=default,
        help=f"{', '.join(MODE_NAMES)} (default: {' '.join(default)})",
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
        choices=sorted(ESTIMATORS),
        help="range estimator for --calibration-data (default: minmax)",
    )
    command.add_argument(
        "--samples",
        type=NUMBERS["count"],
        default=1000,
        help="calibration samples to use (default: 1000)",
    )
    command.add_argument(
        "--image-scale",
        type=NUMBERS["scale"],
        default=1 / 255,
        help="multiplies image pixels (default: 1/255, to [0, 1])",
    )


def _add_inspect(commands):
    command = commands.add_parser(
        "inspect",
        help="show a .tflite's ops, types and quantization; check the spec",
        description="Print a .tflite model's inputs, outputs, ops, tensor "
        "types and quantization parameters; check them against the "
        "TFLite quantization spec, and check that LiteRT can allocate the "
        "model (exit code 1 if either fails).",
    )
    command.add_argument("tflite", help="the .tflite file")
    command.add_argument("--json", action="store_true", help="print JSON")
    command.add_argument(
        "--target",
        choices=INSPECTED,
        help="also check the file for a target: 'micro' runs it in "
        "TensorFlow Lite for Microcontrollers (ops, smallest arena; needs "
        "keras-quant[micro]); 'edgetpu' is a static pre-check against "
        "Coral's documented requirements (no compiler runs). Exit code 1 "
        "if it fails",
    )
    command.set_defaults(command="inspect")


def _add_compare(commands):
    command = commands.add_parser(
        "compare",
        help="float .keras against .tflite on data: metrics, output error",
        description="Run the float Keras model and the .tflite model on the "
        "same data; print the model's compiled loss and metrics for both, "
        "and how far the outputs are apart (largest and mean absolute "
        "difference, SQNR in dB, largest difference in percent of the "
        "output's range). Exit code 1 if LiteRT cannot run the .tflite, "
        "or, with --max-drop or --min-sqnr, if the metric drops more than "
        "--max-drop or the outputs do not agree (output SQNR below "
        "--min-sqnr, 10 dB by default): a metric can match by chance "
        "between unrelated models, their outputs cannot.",
    )
    command.add_argument("model", help="the float (or observed) .keras file")
    command.add_argument("tflite", help="the .tflite file")
    command.add_argument(
        "--data", required=True, help=".npz with arrays 'x' and 'y'"
    )
    command.add_argument(
        "--max-accuracy-drop",
        "--max-drop",
        dest="max_drop",
        type=NUMBERS["drop"],
        help="exit 1 if the first compiled metric drops more (points; "
        "percent for a loss-like metric), the name `export --mode auto` "
        "uses too. A model compiled with no loss or metric is judged on its "
        "outputs: the largest |float - tflite| output difference, in percent "
        "of that output's float range (max - min). The outputs must also "
        "agree (see --min-sqnr). A gate that cannot be evaluated (NaN) fails",
    )
    command.add_argument(
        "--min-sqnr",
        metavar="DB",
        type=NUMBERS["decibels"],
        help="exit 1 if the output SQNR, 10 log10(sum float^2 / sum (float "
        "- tflite)^2), is below DB: the two models do not agree (on the "
        "test CNN: int8 39 dB, 4-bit weights 26 dB, float16 74 dB; another "
        "model's .tflite -4 to 6 dB). Checked whenever the gate runs, with "
        "--max-drop or alone (default: 10). Lower it if a mode is expected "
        "to lose that much",
    )
    command.set_defaults(command="compare")


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
    command.set_defaults(command="report")


def _add_strip(commands):
    command = commands.add_parser(
        "strip",
        help="erase the input rows a saved model keeps (its replay sample)",
        description="An observed model keeps rows of its inputs (the replay "
        "sample: up to 256 per input) to measure at export the ranges "
        "inside LayerNormalization, attention and recurrent layers, and "
        "saves them in its .keras file. This rewrites the file without "
        "them, all or nothing; its ranges stay.",
    )
    command.add_argument("model", help="the .keras file, rewritten in place")
    command.set_defaults(command="strip")
