"""keras-quant end to end: every TFLite mode from one Keras training run.

The demo trains a small CNN on scikit-learn's 8x8 handwritten digits (1797
images, no download needed) and shows what keras-quant adds to an ordinary
Keras training script:

1. `keras_quant.observe(model)` puts observers at the tensors TFLite
   quantizes; the observed model trains the original model's weights.
2. `RangeCalibration(phase="validation")` lets the observers record
   activation ranges on the last validation run, so no separate
   representative dataset is needed.
3. `TFLiteExport` writes the model in every `keras_quant.Mode` when training
   ends (into `<out>/modes/`), and evaluates each file in the LiteRT
   interpreter on held-out test data.
4. `observed.save("digits.keras")` also writes `digits_int8.tflite` and a
   `digits.quant.json` report beside the `.keras` file.

For each mode it prints the file size, the test accuracy in LiteRT, the
accuracy drop against the float Keras model and the single-thread latency,
and writes the same to `report.json` and `report.md` in the output folder;
the export callback also writes `report/report.html` (histograms of the
activations with their ranges, per-point errors).
It exits with an error if int8 loses more than 1 percentage point of
accuracy, the promise keras-quant makes.

Usage:

    python examples/digits_demo.py --out out --epochs 20
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras_quant.quiet  # noqa: E402, F401  TensorFlow start-up lines hidden

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_quant  # noqa: E402
import keras_quant.runtime.litert  # noqa: E402

SEED = 1234
BATCH_SIZE = 32
LATENCY_RUNS = 200
MAX_INT8_DROP_PP = 1.0


def parse_args(argv=None):
    """Parses the command line.

    Args:
        argv: arguments without the program name; `sys.argv[1:]` if None.

    Returns:
        An `argparse.Namespace` with `out` and `epochs`.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="out", help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=20,
        help="training epochs (default: %(default)s)",
    )
    return parser.parse_args(argv)


def load_splits(seed=SEED):
    """Loads the digits and splits them 60/20/20, stratified by class.

    Args:
        seed: seed of the split.

    Returns:
        A dict with `"train"`, `"val"` and `"test"` `(x, y)` tuples; `x` is
        float32 in [0, 1] of shape `(N, 8, 8, 1)`, `y` int32 labels.
    """
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., np.newaxis]
    y = digits.target.astype("int32")
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=seed
    )
    return {
        "train": (x_train, y_train),
        "val": (x_val, y_val),
        "test": (x_test, y_test),
    }


def build_model():
    """Builds and compiles the float CNN.

    Returns:
        A compiled Functional `keras.Model` mapping `(8, 8, 1)` images to
        ten class probabilities.
    """
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="digit")(x)
    model = keras.Model(inputs, outputs, name="digits_cnn")
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class Stopwatch(keras.callbacks.Callback):
    """Times training alone, without the callbacks that run after it.

    Listed first, its `on_train_end` runs before the export callback's, so
    `seconds` excludes the export.
    """

    def __init__(self):
        super().__init__()
        self.seconds = None
        self._start = None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self._start


def train_and_export(model, splits, out, epochs):
    """Trains the observed model; exports every mode when training ends.

    Args:
        model: the compiled float model.
        splits: the dict from `load_splits`.
        out: output folder.
        epochs: training epochs.

    Returns:
        A tuple `(observed, results, timings)`: the observed model, the list
        of `keras_quant.ExportResult` (one per mode, compared on the test
        split) and a dict of `train_s` and `export_s` in seconds.
    """
    observed = keras_quant.observe(model)
    stopwatch = Stopwatch()
    exporter = keras_quant.callbacks.TFLiteExport(
        filepath=os.path.join(out, "modes", "digits_{mode}.tflite"),
        modes=[mode.value for mode in keras_quant.Mode],
        validation_data=splits["test"],
        report_dir=os.path.join(out, "report"),
    )
    callbacks = [
        stopwatch,
        keras_quant.callbacks.RangeCalibration(phase="validation"),
        exporter,
    ]
    start = time.perf_counter()
    observed.fit(
        *splits["train"],
        validation_data=splits["val"],
        epochs=epochs,
        batch_size=BATCH_SIZE,
        verbose=0,
        callbacks=callbacks,
    )
    total = time.perf_counter() - start
    timings = {
        "train_s": stopwatch.seconds,
        "export_s": total - stopwatch.seconds,
    }
    return observed, exporter.results, timings


def float_accuracy(model, data):
    """Test accuracy of the float Keras model.

    Args:
        model: the original (unobserved) compiled model.
        data: `(x, y)` tuple.

    Returns:
        Accuracy as a fraction.
    """
    metrics = model.evaluate(*data, verbose=0, return_dict=True)
    return float(metrics["accuracy"])


def measure_rows(results, sample):
    """One report row per export: the result plus latency and accuracy drop.

    Args:
        results: list of `keras_quant.ExportResult` with test metrics.
        sample: one float32 input of shape `(1, 8, 8, 1)`.

    Returns:
        A list of JSON-ready dicts.
    """
    rows = []
    for result in results:
        seconds = keras_quant.runtime.litert.latency(
            result.path, sample, runs=LATENCY_RUNS, num_threads=1
        )
        row = result.to_dict()
        row["latency_us"] = seconds * 1e6
        row["accuracy_drop_pp"] = result.metric_drop("accuracy") * 100.0
        rows.append(row)
    return rows


TABLE_HEADER = (
    "mode",
    "size KB",
    "vs float32",
    "test acc %",
    "drop pp",
    "latency us",
)


def table_cells(rows):
    """Formats the report rows as strings, one tuple per row.

    Args:
        rows: the dicts from `measure_rows`.

    Returns:
        A list of tuples of strings, in the order of `TABLE_HEADER`.
    """
    return [
        (
            row["mode"],
            f"{row['size_bytes'] / 1024:.1f}",
            f"{row['size_ratio']:.2f}x",
            f"{row['quantized_metrics']['accuracy'] * 100:.2f}",
            f"{row['accuracy_drop_pp']:+.2f}",
            f"{row['latency_us']:.1f}",
        )
        for row in rows
    ]


def text_table(rows):
    """A plain-text table with aligned columns, for the terminal."""
    lines = [TABLE_HEADER, *table_cells(rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    rendered = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths))
        )
        for line in lines
    ]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def markdown_table(rows):
    """The same table in Markdown."""
    lines = [
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(TABLE_HEADER) - 1)) + "|",
    ]
    for cells in table_cells(rows):
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def context_lines(splits, summary):
    """Lines that say what the figures were measured on.

    Args:
        splits: the dict from `load_splits`.
        summary: the dict of run-wide figures from `main`.

    Returns:
        A list of strings.
    """
    sizes = {name: len(data[1]) for name, data in splits.items()}
    return [
        "Data: scikit-learn digits, 1797 8x8 grayscale images, 10 classes; "
        f"split {sizes['train']} train / {sizes['val']} validation / "
        f"{sizes['test']} test (seed {SEED}).",
        f"Float Keras test accuracy: {summary['float_accuracy'] * 100:.2f}% "
        f"after {summary['epochs']} epochs; training took "
        f"{summary['train_s']:.1f} s, exporting and evaluating the "
        f"{len(keras_quant.Mode)} modes {summary['export_s']:.1f} s.",
        "Ranges: collected on the last validation run (RangeCalibration). "
        "Accuracy and drop are on the test split, in LiteRT; latency is the "
        f"median of {LATENCY_RUNS} single-thread invocations on one image.",
    ]


def write_reports(out, rows, summary, splits):
    """Writes `report.json` and `report.md` into `out`.

    Args:
        out: output folder.
        rows: the dicts from `measure_rows`.
        summary: run-wide figures (float accuracy, timings, file names).
        splits: the dict from `load_splits`.

    Returns:
        The paths written, as a list.
    """
    json_path = os.path.join(out, "report.json")
    with open(json_path, "w") as stream:
        json.dump({**summary, "exports": rows}, stream, indent=2)
        stream.write("\n")
    md_path = os.path.join(out, "report.md")
    lines = [
        "# keras-quant digits demo",
        "",
        *context_lines(splits, summary),
        "",
        markdown_table(rows),
        "",
    ]
    with open(md_path, "w") as stream:
        stream.write("\n".join(lines))
    return [json_path, md_path]


def save_observed(observed, out):
    """Saves the observed model; the save hook exports int8 beside it.

    Args:
        observed: the trained observed model.
        out: output folder.

    Returns:
        The files the save wrote, as a list of paths.
    """
    keras_path = os.path.join(out, "digits.keras")
    observed.save(keras_path)
    stem = keras_path[: -len(".keras")]
    written = [keras_path, f"{stem}_int8.tflite", f"{stem}.quant.json"]
    missing = [path for path in written if not os.path.exists(path)]
    if missing:
        raise SystemExit(f"observed.save() did not write: {missing}")
    return written


def check_promise(rows):
    """Exits non-zero if int8 loses more than `MAX_INT8_DROP_PP`.

    Args:
        rows: the dicts from `measure_rows`.
    """
    int8 = next(row for row in rows if row["mode"] == "int8")
    drop = int8["accuracy_drop_pp"]
    if drop > MAX_INT8_DROP_PP:
        raise SystemExit(
            f"FAIL: int8 test accuracy dropped {drop:.2f} percentage points "
            f"against the float model; keras-quant promises at most "
            f"{MAX_INT8_DROP_PP:.1f}."
        )
    print(
        f"OK: int8 accuracy drop {drop:+.2f} pp is within the "
        f"{MAX_INT8_DROP_PP:.1f} pp promise."
    )


def main(argv=None):
    """Runs the demo; see the module docstring."""
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(SEED)
    splits = load_splits()
    model = build_model()
    observed, results, timings = train_and_export(
        model, splits, args.out, args.epochs
    )
    sample = splits["test"][0][:1]
    rows = measure_rows(results, sample)
    saved = save_observed(observed, args.out)
    summary = {
        "dataset": "sklearn.datasets.load_digits",
        "split_sizes": {k: len(v[1]) for k, v in splits.items()},
        "seed": SEED,
        "epochs": args.epochs,
        "float_accuracy": float_accuracy(model, splits["test"]),
        **timings,
        "saved_files": saved,
    }
    print(text_table(rows))
    print()
    for line in context_lines(splits, summary):
        print(line)
    reports = write_reports(args.out, rows, summary, splits)
    reports.append(os.path.join(args.out, "report", "report.html"))
    print("observed.save() wrote: " + ", ".join(saved))
    print("Reports: " + ", ".join(reports))
    check_promise(rows)


if __name__ == "__main__":
    sys.exit(main())
