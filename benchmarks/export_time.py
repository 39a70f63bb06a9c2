"""Benchmark (b): int8 conversion time, collected ranges vs calibration.

keras-quant exports int8 from the ranges its observers collected during
training, so it needs no representative dataset and no calibration pass in
the converter. The goal is that this export is no slower than the TFLite
converter's own full-integer calibration.

One observed model is trained (its observers calibrated by the validation
runs of `fit`); then two conversions of the same trained weights are timed:

- keras-quant: `keras_quant.conversion.routes.convert(observed, "int8")`, which
  rebuilds the graph with fake-quant layers and converts it (no file is
  written, no report computed);
- converter: `tf.lite.TFLiteConverter.from_keras_model(model)` on the float
  model with `optimizations=[Optimize.DEFAULT]` and a representative dataset
  of 200 single training samples, the converter's full-integer calibration.

Both give an int8 model with float fallback and float inputs and outputs.
One warm-up conversion of each comes first; the timed runs alternate
between the two, and the figure is the median.
"""

import common  # before keras: sets TensorFlow's log level

from keras_quant.conversion import routes

SCRIPT = "benchmarks/export_time.py"
CALIBRATION_SAMPLES = 200


def conversions(model, observed, data):
    """The two conversions to time, as zero-argument functions.

    Args:
        model: the trained float model.
        observed: the observed model sharing its layers, with ranges.
        data: a `common.Digits`; the converter calibrates on its training
            samples.

    Returns:
        `{name: function returning the .tflite bytes}`.
    """
    return {
        "keras-quant": lambda: routes.convert(observed, "int8"),
        "converter": lambda: common.converter_int8(
            model, data.x_train, CALIBRATION_SAMPLES
        ),
    }


def measure(functions, repeats):
    """One warm-up call of each function, then `repeats` alternating rounds.

    Args:
        functions: `{name: zero-argument function}`.
        repeats: timed calls per function.

    Returns:
        `({name: [seconds, ...]}, {name: size of the result in bytes})`.
    """
    sizes = {name: len(function()) for name, function in functions.items()}
    timings = {name: [] for name in functions}
    names = list(functions)
    for round_index in range(repeats):
        for name in common.rotated(names, round_index):
            elapsed, _ = common.seconds(functions[name])
            timings[name].append(elapsed)
    return timings, sizes


def report(timings, sizes, args):
    """Prints the figures; returns the ratio keras-quant / converter."""
    common.print_header(
        "(b) export time: int8 from collected ranges vs converter calibration",
        SCRIPT,
        args,
    )
    print(
        f"Model trained {args.epochs} epochs, batch {args.batch_size}, seed "
        f"{args.seed}. The converter calibrates on {CALIBRATION_SAMPLES}\n"
        f"single training samples. Median of {args.repeats} runs each, after "
        "1 warm-up run."
    )
    print()
    summaries = {name: common.Summary.of(t) for name, t in timings.items()}
    common.print_table(
        ["conversion", "time", ".tflite size"],
        [
            [name, summary.format(), f"{sizes[name]} bytes"]
            for name, summary in summaries.items()
        ],
    )
    ratio = summaries["keras-quant"].median / summaries["converter"].median
    print()
    print(f"ratio keras-quant / converter: {ratio:.2f}x")
    print(
        f"goal (keras-quant no slower, ratio <= 1.00): "
        f"{common.goal_text(ratio <= 1.0)}"
    )
    print()
    return {"ratio": ratio}


def main(argv=None):
    """Trains one model, times both conversions and prints the figures.

    Args:
        argv: command-line arguments; None for `sys.argv[1:]`.

    Returns:
        The headline ratio (see `report`).
    """
    args = common.make_parser(__doc__, repeats=5, seed=0).parse_args(argv)
    data = common.load_digits()
    model, observed = common.train_observed(
        data, args.seed, args.epochs, args.batch_size
    )
    timings, sizes = measure(conversions(model, observed, data), args.repeats)
    return report(timings, sizes, args)


if __name__ == "__main__":
    main()
