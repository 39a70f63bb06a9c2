"""Benchmark (c): int8 accuracy, collected ranges vs converter calibration.

keras-quant takes its int8 ranges from the last validation run of `fit`
instead of a representative dataset given to the TFLite converter. The
goals: its int8 model loses at most 1 point of held-out test accuracy
against the float model, and is no less accurate than the converter's own
calibration.

For each seed one observed model is trained with
`RangeCalibration(phase="validation")`. On the same trained weights:

- float: the Keras model;
- keras-quant: `keras_quant.export(observed, ..., mode="int8")`;
- converter-100 and converter-200: the TFLite converter on the float model
  with a representative dataset of the first 100 or 200 training samples
  (full-integer quantization, float fallback, float inputs and outputs).

All figures are measured on the test split, which neither training nor any
calibration saw; every `.tflite` model runs in LiteRT through
`keras_quant.run_tflite`, and one accuracy function serves all models. The
accuracy that `export` reports itself is checked against it.

On an easy task the int8 models often classify exactly like the float
one, so that accuracy cannot tell the calibrations apart. A finer figure
is printed too: the mean absolute difference between the int8 and the
float softmax outputs.
"""

import os
import statistics
import tempfile

import common  # before keras: sets TensorFlow's log level
import keras
import numpy as np

import keras_quant

SCRIPT = "benchmarks/accuracy_vs_converter.py"
CONVERTER_SAMPLES = (100, 200)
GOAL_DROP_POINTS = 1.0
# Differences below this are float rounding, not disagreement.
TOLERANCE = 1e-6


def methods():
    """Names of the int8 models compared, in printing order."""
    return ["keras-quant", *(f"converter-{n}" for n in CONVERTER_SAMPLES)]


def accuracy(probabilities, labels):
    """Share of samples whose highest-scoring class is the label.

    Args:
        probabilities: model outputs, shape (N, classes).
        labels: integer labels, shape (N,).

    Returns:
        Accuracy as a float in [0, 1].
    """
    predicted = np.argmax(np.asarray(probabilities), axis=-1)
    return float(np.mean(predicted == np.asarray(labels)))


def seed_outputs(data, seed, epochs, batch_size, folder):
    """Trains one model; returns every model's outputs on the test split.

    Args:
        data: a `common.Digits`.
        seed: model seed.
        epochs: training epochs.
        batch_size: batch size.
        folder: where keras-quant writes its `.tflite` file.

    Returns:
        `(outputs, result)`: `{"float" or method name: outputs}` and the
        `ExportResult` of keras-quant's export.
    """
    model, observed = common.train_observed(data, seed, epochs, batch_size)
    # Called directly: `predict` would trace anew for every fresh model.
    outputs = {
        "float": keras.ops.convert_to_numpy(model(data.x_test, training=False))
    }
    result = keras_quant.export(
        observed,
        os.path.join(folder, f"digits_seed{seed}_int8.tflite"),
        mode="int8",
        validation_data=data.test,
    )
    outputs["keras-quant"] = keras_quant.run_tflite(result.path, data.x_test)
    for count in CONVERTER_SAMPLES:
        tflite = common.converter_int8(model, data.x_train, count)
        outputs[f"converter-{count}"] = keras_quant.run_tflite(
            tflite, data.x_test
        )
    return outputs, result


def figures(outputs, labels):
    """Accuracy of every model and output difference of each int8 model.

    Returns:
        `{"accuracy": {name: accuracy}, "output_diff": {method: mean
        |int8 - float| of the outputs}}`.
    """
    reference = outputs["float"]
    return {
        "accuracy": {
            name: accuracy(probabilities, labels)
            for name, probabilities in outputs.items()
        },
        "output_diff": {
            name: float(np.mean(np.abs(outputs[name] - reference)))
            for name in methods()
        },
    }


def check_export_result(result, accuracies, seed):
    """Compares what `export` reported with the accuracies measured here.

    Returns:
        A list of human-readable mismatches (empty when they agree).
    """
    pairs = (
        ("float", result.float_metrics["accuracy"]),
        ("keras-quant", result.quantized_metrics["accuracy"]),
    )
    return [
        f"seed {seed}: export reported {name} accuracy {reported:.4f}, "
        f"measured {accuracies[name]:.4f}"
        for name, reported in pairs
        if abs(reported - accuracies[name]) > TOLERANCE
    ]


def drops(accuracies):
    """`{method: float accuracy - method accuracy}` in percentage points."""
    return {
        name: (accuracies["float"] - accuracies[name]) * 100.0
        for name in methods()
    }


def mean_figures(per_seed):
    """The mean over seeds of every figure, shaped like one seed's."""
    seeds = list(per_seed.values())
    return {
        kind: {
            name: statistics.mean(found[kind][name] for found in seeds)
            for name in seeds[0][kind]
        }
        for kind in ("accuracy", "output_diff")
    }


def accuracy_row(label, accuracies):
    """One row: float accuracy, then each int8 model with its drop."""
    dropped = drops(accuracies)
    return [
        label,
        f"{accuracies['float'] * 100:.2f}",
        *(
            f"{accuracies[name] * 100:.2f} ({dropped[name]:+.2f})"
            for name in methods()
        ),
    ]


def diff_row(label, differences):
    """One row: each int8 model's mean output difference, times 1000."""
    return [label, *(f"{differences[name] * 1e3:.3f}" for name in methods())]


def report(per_seed, mismatches, data, args):
    """Prints the figures; returns the mean accuracies and drops."""
    common.print_header(
        "(c) int8 accuracy: keras-quant ranges vs converter calibration",
        SCRIPT,
        args,
    )
    print(
        f"{args.epochs} epochs, batch {args.batch_size}, seeds 0..."
        f"{args.seeds - 1}. keras-quant's ranges come from the last\n"
        f"validation run ({len(data.x_val)} samples); converter-N "
        "calibrates on N training samples.\nTest split: "
        f"{len(data.x_test)} held-out samples (1 sample = "
        f"{100 / len(data.x_test):.2f} points)."
    )
    print()
    mean = mean_figures(per_seed)
    labels = [f"seed {seed}" for seed in per_seed]
    print("test accuracy in %; in brackets the drop from float in points")
    print("(positive = int8 worse)")
    common.print_table(
        ["", "float", *methods()],
        [
            *(
                accuracy_row(label, found["accuracy"])
                for label, found in zip(labels, per_seed.values())
            ),
            accuracy_row("mean", mean["accuracy"]),
        ],
    )
    print()
    print("mean |int8 output - float output| on the test split, x 1e-3")
    print("(softmax probabilities; lower = closer to float)")
    common.print_table(
        ["", *methods()],
        [
            *(
                diff_row(label, found["output_diff"])
                for label, found in zip(labels, per_seed.values())
            ),
            diff_row("mean", mean["output_diff"]),
        ],
    )
    print()
    print_goals(mean["accuracy"])
    for line in mismatches:
        print(f"WARNING: {line}")
    print()
    return {
        "mean_accuracy": mean["accuracy"],
        "mean_drop_points": drops(mean["accuracy"]),
        "mean_output_diff": mean["output_diff"],
    }


def print_goals(accuracies):
    """Prints whether the mean accuracies meet the goals."""
    ours = drops(accuracies)["keras-quant"]
    print(
        f"goal (keras-quant within {GOAL_DROP_POINTS:.0f} point of float), "
        f"mean drop {ours:+.2f}: {common.goal_text(ours <= GOAL_DROP_POINTS)}"
    )
    for name in methods()[1:]:
        ahead = (accuracies["keras-quant"] - accuracies[name]) * 100.0
        print(
            f"goal (keras-quant no worse than {name}), mean difference "
            f"{ahead:+.2f} points: {common.goal_text(ahead >= -TOLERANCE)}"
        )


def main(argv=None):
    """Runs every seed and prints the figures.

    Args:
        argv: command-line arguments; None for `sys.argv[1:]`.

    Returns:
        The mean figures (see `report`).
    """
    args = common.make_parser(__doc__, seeds=3).parse_args(argv)
    data = common.load_digits()
    per_seed, mismatches = {}, []
    with tempfile.TemporaryDirectory(prefix="kq-bench-") as folder:
        for seed in range(args.seeds):
            outputs, result = seed_outputs(
                data, seed, args.epochs, args.batch_size, folder
            )
            per_seed[seed] = figures(outputs, data.y_test)
            mismatches.extend(
                check_export_result(result, per_seed[seed]["accuracy"], seed)
            )
    return report(per_seed, mismatches, data, args)


if __name__ == "__main__":
    main()
