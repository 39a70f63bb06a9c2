"""The `keras-quant` command: export, inspect, compare and report.

    keras-quant export model.keras --mode int8 int8_only
    keras-quant export float.keras --calibration-data images/ -o m.tflite
    keras-quant inspect m.tflite
    keras-quant compare model.keras m.tflite --data test.npz --max-drop 1
    keras-quant report model.keras --data val.npz -o report/

Exit codes (`outcomes.EXIT_CODES`): 0 success; 1 the work ran and failed
(the model cannot be exported in that mode, the spec check or the accuracy
budget failed); 2 the command cannot run (bad arguments, a missing or
unreadable file, a model without the ranges its mode needs). Errors are one
line on stderr; progress goes to stderr when it is a terminal. Parsing the
arguments imports neither Keras nor TensorFlow: `--help` and argument
errors answer at once.
"""

import contextlib
import sys

from keras_quant import native_stderr
from keras_quant.cli.outcomes import EXIT_CODES
from keras_quant.cli.outcomes import CheckFailed
from keras_quant.cli.outcomes import UsageError
from keras_quant.cli.parser import build_parser
from keras_quant.errors import ExportError
from keras_quant.errors import KerasQuantError


def main(argv=None):
    """Runs the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return EXIT_CODES["usage"]
    quiet = native_stderr.python_only()
    try:
        with contextlib.nullcontext() if args.verbose else quiet:
            from keras_quant.cli.commands import COMMANDS

            COMMANDS[args.command](args)
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
