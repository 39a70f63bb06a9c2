"""The `keras-quant` command: export, inspect, compare and report.

    keras-quant export model.keras --mode int8 int8_only
    keras-quant export float.keras --calibration-data images/ -o m.tflite
    keras-quant inspect m.tflite
    keras-quant compare model.keras m.tflite --data test.npz --max-drop 1
    keras-quant report model.keras --data val.npz -o report/

Exit codes (`outcomes.EXIT_CODES`): 0 success; 1 the work ran and failed
(the model cannot be exported in that mode, LiteRT cannot allocate the
`.tflite`, the spec check or the accuracy budget failed); 2 the command
cannot run (bad arguments, a missing, unreadable or unwritable file, a
model without the ranges its mode needs); 130 interrupted (Ctrl-C).

`main` never lets an exception out: every failure is one line on stderr,
`keras-quant: error: ...`, and its traceback too with `--verbose`; an
unexpected exception (a bug) exits 1. When the reader of stdout goes away
(`keras-quant inspect m.tflite --json | head -1`), stdout is pointed at
devnull and the command exits 1 quietly, as Python's documentation on
SIGPIPE recommends.

`compare` always prints how far the `.tflite` outputs are from the float
model's (largest and mean absolute difference, SQNR in dB). Its
`--max-drop` gate judges the model's first compiled metric (points, or
percent for a loss); a model compiled with no loss or metric is judged on
its outputs: the largest |float - tflite| output difference, in percent of
that output's float range (max - min), must not exceed --max-drop. The gate
also fails when the outputs do not agree: an output SQNR below --min-sqnr
(10 dB by default), since a metric can match by chance between unrelated
models. A gate that cannot be evaluated (NaN figures) fails.

Progress goes to stderr when it is a terminal. Parsing the arguments
imports neither Keras nor TensorFlow: `--help` and argument errors answer
at once.
"""

import contextlib
import os
import sys
import traceback

from keras_quant import native_stderr
from keras_quant.cli import outcomes
from keras_quant.cli.outcomes import EXIT_CODES


def main(argv=None):
    """Runs the command line; returns the exit code. Raises nothing."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        return _interrupted()
    return code


def _main(argv):
    # Imported here, where Ctrl-C is answered: the script's own import of
    # this module is all that runs before `main`, and stays short.
    from keras_quant.cli.parser import build_parser

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version or an argument error
        return stop.code if isinstance(stop.code, int) else EXIT_CODES["ok"]
    if not hasattr(args, "command"):
        parser.print_help()
        return EXIT_CODES["usage"]
    try:
        _run(args)
    except BrokenPipeError:
        raise  # nobody reads stdout any more: `main` ends quietly
    except Exception as error:  # noqa: BLE001  every error is one line
        return _fail(error, args.verbose)
    return EXIT_CODES["ok"]


def _run(args):
    """The command, with native log lines hidden unless --verbose."""
    quiet = native_stderr.python_only()
    with contextlib.nullcontext() if args.verbose else quiet:
        from keras_quant.cli.commands import COMMANDS

        COMMANDS[args.command](args)


def _fail(error, verbose):
    """One line on stderr for `error` (its traceback first if `verbose`);
    the exit code of its kind."""
    kind = outcomes.ending(error)
    if verbose:
        traceback.print_exception(error, file=sys.stderr)
    print(f"keras-quant: error: {_message(error, kind)}", file=sys.stderr)
    return outcomes.exit_code(kind)


def _message(error, kind):
    if isinstance(error, OSError) and error.strerror and error.filename:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = " ".join(str(error).split()) or type(error).__name__
    if kind == "unexpected":
        return (
            f"unexpected {type(error).__name__}: {text} (run `keras-quant "
            "--verbose ...` for the traceback, and please report it)"
        )
    return text


def _stdout_closed():
    """Python's documented answer to a closed stdout pipe: point stdout at
    devnull, so the flush at exit does not fail again, and exit 1."""
    with contextlib.suppress(OSError, ValueError):  # no file descriptor
        stdout = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout)
        os.close(devnull)
    return EXIT_CODES["failed"]


def _interrupted():
    print("keras-quant: interrupted", file=sys.stderr)
    return EXIT_CODES["interrupted"]
