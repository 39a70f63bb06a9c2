"""(g) micro: integer-only files in TensorFlow Lite for Microcontrollers.

Seven small trained models, each exported in `int8_only` two ways and
run in TensorFlow Lite for Microcontrollers (TFLM, the `tflite-micro`
package's interpreter with the reference kernels a microcontroller build
uses):

- keras-quant: `observe(model)`, `observed.predict` on the calibration
  inputs, then `keras_quant.export(observed, path, mode="int8_only",
  target="micro", validation_data=test)`, which writes a static-shape file,
  rewrites the ops TFLM lacks where an exact equivalent exists, refuses the
  others, and runs the file in TFLM: its `MicroReport` gives the metric
  measured in TFLM, the largest difference from LiteRT's reference kernels
  in output steps, and the smallest tensor arena;
- converter: `tf.lite.TFLiteConverter.from_keras_model(model)` on the
  plain float model, `optimizations=[DEFAULT]`, the calibration inputs one
  sample per step as `representative_dataset`,
  `supported_ops=[TFLITE_BUILTINS_INT8]`, int8 inputs and outputs; then
  `keras_quant.runtime.micro.problem` allocates and invokes it once in
  TFLM, in a child process (`run_isolated`), since TFLM can crash.

SQNR is of each file's LiteRT output (dequantized) against the Keras
float output on the test inputs, pooled over all outputs:
10 log10(sum f^2 / sum (f - q)^2).

Models (free batch size, Adam, `keras.utils.set_random_seed(0)`):

- `ds_cnn_kws`: the MLPerf Tiny / ARM DS-CNN keyword spotter on (49, 10, 1)
  inputs. No speech data set ships offline, so its data are synthetic
  MFCC-like: 12 classes, each a smooth random time-by-coefficient template,
  shifted in time, scaled, with noise (1200 training, 300 test samples;
  calibration on the first 240 training inputs);
- `digits_cnn`, `mlp`, `layernorm_gelu`, `lstm_unrolled`, `gru_unrolled`
  (8 time steps of 8 pixels), `unet_small` (segments the digit: target
  pixels > 0.5, binary cross-entropy): on the demo's split of
  scikit-learn's digits (`common.load_digits`: 1149 training, 288
  validation, 360 test images; calibration on the validation split).

The metric column is test accuracy for classifiers and the loss for the
U-Net: the Keras float model's, then the one TFLM measured.

Run from the repository root (about 2 minutes on 2 cores):

    .venv/bin/python benchmarks/micro.py
    .venv/bin/python benchmarks/micro.py --models mlp,lstm_unrolled --epochs 3
"""

import dataclasses
import os
import tempfile
import textwrap
import time

import common
import keras
import numpy as np
import tensorflow as tf

import keras_quant
from keras_quant.conversion.isolation import run_isolated
from keras_quant.errors import KerasQuantError
from keras_quant.runtime import litert
from keras_quant.runtime import micro as tflm

KWS_CLASSES = 12
KWS_SHAPE = (49, 10)  # time frames x MFCC coefficients
KWS_TRAIN, KWS_TEST, KWS_CALIBRATION = 1200, 300, 240
BN_MOMENTUM = 0.9  # see conv_bn_relu
CELL_WIDTH = 60  # longer reasons are cut in the table, printed whole below


@dataclasses.dataclass(frozen=True)
class Data:
    """One task's arrays (float32 inputs).

    Attributes:
        name: how the row names the data.
        x_train, y_train: training data.
        x_cal: calibration inputs (keras-quant's and the converter's).
        x_test, y_test: held-out data, for every figure of the table.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_cal: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclasses.dataclass(frozen=True)
class BenchmarkModel:
    """A model of the table.

    Attributes:
        name: its `--models` name.
        build: `() -> compiled float keras.Model`.
        data: `() -> Data`.
        metric: what the table shows: `"accuracy"`, or `"loss"`.
    """

    name: str
    build: object
    data: object
    metric: str = "accuracy"


# --------------------------------------------------------------------------
# Data


def kws_data(seed=0):
    """Synthetic MFCC-like keyword data: `Data` of (N, 49, 10, 1) inputs.

    Each class has a template: Gaussian noise smoothed over 5 frames, with
    a larger spread in the low coefficients, as MFCCs have. A sample is its
    class's template shifted by up to 4 frames, scaled by 0.7-1.3, plus a
    per-coefficient offset (channel) and white noise.
    """
    rng = np.random.default_rng(seed)
    frames, coefficients = KWS_SHAPE
    spread = 4.0 / (1.0 + np.arange(coefficients))  # c0 widest
    raw = rng.normal(size=(KWS_CLASSES, frames + 4, coefficients))
    windows = np.lib.stride_tricks.sliding_window_view(raw, 5, axis=1)
    templates = windows.mean(axis=-1)  # (classes, frames, coefficients)
    templates *= spread / templates.std(axis=(0, 1))

    def draw(count):
        labels = rng.permutation(np.arange(count) % KWS_CLASSES)
        shifts = rng.integers(-4, 5, count)
        x = np.stack(
            [np.roll(templates[k], s, axis=0) for k, s in zip(labels, shifts)]
        )
        x *= rng.uniform(0.7, 1.3, (count, 1, 1))
        x += rng.normal(0, 0.5, (count, 1, coefficients)) * spread
        x += rng.normal(0, 1.5, x.shape) * spread
        return x[..., np.newaxis].astype("float32"), labels.astype("int32")

    x_train, y_train = draw(KWS_TRAIN)
    x_test, y_test = draw(KWS_TEST)
    return Data(
        "synthetic MFCC-like, 12 classes",
        x_train,
        y_train,
        x_train[:KWS_CALIBRATION],
        x_test,
        y_test,
    )


def digits_data(shape=(8, 8, 1), target=None):
    """The demo's digits split as `Data`, inputs reshaped to `shape`;
    `target="mask"` makes the labels the binarized images (pixels > 0.5)."""
    digits = common.load_digits()

    def inputs(x):
        return x.reshape((len(x), *shape))

    def labels(x, y):
        return (x > 0.5).astype("float32") if target == "mask" else y

    return Data(
        "digits, segmentation" if target == "mask" else "digits",
        inputs(digits.x_train),
        labels(digits.x_train, digits.y_train),
        inputs(digits.x_val),
        inputs(digits.x_test),
        labels(digits.x_test, digits.y_test),
    )


# --------------------------------------------------------------------------
# Models


def compiled(inputs, outputs, name, loss="sparse_categorical_crossentropy"):
    """A Functional model compiled with Adam; accuracy for classifiers."""
    model = keras.Model(inputs, outputs, name=name)
    metric = "accuracy" if loss.startswith("sparse") else "binary_accuracy"
    model.compile(optimizer="adam", loss=loss, metrics=[metric])
    return model


def conv_bn_relu(x, layer):
    """`layer(x)`, then BatchNormalization and ReLU.

    The moving statistics follow the batches with momentum 0.9: with
    Keras' 0.99 they lag so far behind in ten short epochs that the
    DS-CNN, at 97 % training accuracy in training mode, scores chance in
    inference mode.
    """
    x = layer(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    return keras.layers.ReLU()(x)


def build_ds_cnn_kws():
    """DS-CNN as in MLPerf Tiny's keyword spotting (ARM's KWS DS-CNN)."""
    inputs = keras.Input((*KWS_SHAPE, 1))
    x = conv_bn_relu(
        inputs,
        keras.layers.Conv2D(64, (10, 4), strides=(2, 2), padding="same"),
    )
    for _ in range(4):
        x = conv_bn_relu(x, keras.layers.DepthwiseConv2D(3, padding="same"))
        x = conv_bn_relu(x, keras.layers.Conv2D(64, 1))
    x = keras.layers.AveragePooling2D(pool_size=x.shape[1:3])(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.4)(x)
    outputs = keras.layers.Dense(KWS_CLASSES, activation="softmax")(x)
    return compiled(inputs, outputs, "ds_cnn_kws")


def build_digits_cnn():
    inputs = keras.Input((8, 8, 1))
    x = conv_bn_relu(inputs, keras.layers.Conv2D(16, 3, padding="same"))
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return compiled(inputs, outputs, "digits_cnn")


def build_mlp():
    inputs = keras.Input((64,))
    x = keras.layers.Dense(64, activation="relu")(inputs)
    x = keras.layers.Dense(32, activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return compiled(inputs, outputs, "mlp")


def build_layernorm_gelu():
    inputs = keras.Input((64,))
    x = keras.layers.Dense(64)(inputs)
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.Activation("gelu")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return compiled(inputs, outputs, "layernorm_gelu")


def build_recurrent(layer):
    """`layer(32, unroll=True)` over 8 steps of 8 pixels, Dense softmax."""
    inputs = keras.Input((8, 8))
    x = layer(32, unroll=True)(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return compiled(inputs, outputs, f"{layer.__name__.lower()}_unrolled")


def build_unet_small():
    """Two-level U-Net on 8x8: encoder, bottleneck, transposed-conv
    decoder with a skip connection, sigmoid mask."""
    inputs = keras.Input((8, 8, 1))
    skip = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(skip)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2DTranspose(16, 2, strides=2, padding="same")(x)
    x = keras.layers.Concatenate()([x, skip])
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    return compiled(inputs, outputs, "unet_small", "binary_crossentropy")


MODELS = {
    model.name: model
    for model in (
        BenchmarkModel("ds_cnn_kws", build_ds_cnn_kws, kws_data),
        BenchmarkModel("digits_cnn", build_digits_cnn, digits_data),
        BenchmarkModel("mlp", build_mlp, lambda: digits_data((64,))),
        BenchmarkModel(
            "layernorm_gelu", build_layernorm_gelu, lambda: digits_data((64,))
        ),
        BenchmarkModel(
            "lstm_unrolled",
            lambda: build_recurrent(keras.layers.LSTM),
            lambda: digits_data((8, 8)),
        ),
        BenchmarkModel(
            "gru_unrolled",
            lambda: build_recurrent(keras.layers.GRU),
            lambda: digits_data((8, 8)),
        ),
        BenchmarkModel(
            "unet_small",
            build_unet_small,
            lambda: digits_data(target="mask"),
            metric="loss",
        ),
    )
}


# --------------------------------------------------------------------------
# Measurements


def sqnr_db(reference, quantized):
    """Pooled SQNR in dB: 10 log10(sum f^2 / sum (f - q)^2)."""
    reference = np.asarray(reference, np.float64)
    noise = np.sum((reference - np.asarray(quantized, np.float64)) ** 2)
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(np.sum(reference**2) / noise))


def one_line(error):
    """`'TypeName: the message'` on one line."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def converter_int8_only(model, x):
    """The TFLite converter's integer-only file: int8 ops, int8 inputs and
    outputs, calibrated on every sample of `x`, one per step."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = common.representative_dataset(x, len(x))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with common.quiet():
        return converter.convert()


def keras_quant_row(model, data, reference, folder):
    """keras-quant's int8_only export for TFLM, and its file's SQNR.

    Returns:
        `{"status", "result", "sqnr_db"}`; `status` is "yes", or the
        refusal ("refused: ...", a `KerasQuantError`) or any other error
        ("error: ...").
    """
    observed = keras_quant.observe(model)
    observed.predict(data.x_cal, verbose=0)
    path = os.path.join(folder, f"{model.name}_keras_quant.tflite")
    try:
        result = keras_quant.export(
            observed,
            path,
            mode="int8_only",
            target="micro",
            validation_data=(data.x_test, data.y_test),
        )
    except KerasQuantError as error:
        return {"status": f"refused: {one_line(error)}"}
    except Exception as error:  # a benchmark records every failure
        return {"status": f"error: {one_line(error)}"}
    outputs = litert.run(path, data.x_test)
    return {
        "status": "yes",
        "result": result,
        "sqnr_db": sqnr_db(reference, outputs),
    }


def converter_row(model, data, reference):
    """The converter's int8_only file: whether TFLM runs it, its SQNR in
    LiteRT and its ops.

    Returns:
        `{"status", "sqnr_db", "ops"}`; `status` is "yes", "no: <TFLM's
        reason or the crash>" or "converter failed: <reason>".
    """
    try:
        tflite = converter_int8_only(model, data.x_cal)
    except Exception as error:  # a benchmark records every failure
        return {"status": f"converter failed: {one_line(error)}"}
    found = {"ops": tflm.op_names(tflite)}
    try:
        reason = run_isolated(tflm.problem, bytes(tflite))
    except KerasQuantError as error:  # TFLM crashed the child
        reason = one_line(error)
    found["status"] = "yes" if reason is None else f"no: {reason}"
    try:
        outputs = litert.run(tflite, data.x_test)
        found["sqnr_db"] = sqnr_db(reference, outputs)
    except Exception as error:  # a benchmark records every failure
        found["sqnr_error"] = one_line(error)
    return found


def measure(benchmark_model, args):
    """Trains one model and measures both files; returns its row dict."""
    start = time.perf_counter()
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    data = benchmark_model.data()
    model = benchmark_model.build()
    model.fit(
        data.x_train,
        data.y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=0,
    )
    float_metrics = model.evaluate(
        data.x_test, data.y_test, verbose=0, return_dict=True
    )
    reference = model.predict(data.x_test, verbose=0)
    with tempfile.TemporaryDirectory() as folder:
        ours = keras_quant_row(model, data, reference, folder)
    theirs = converter_row(model, data, reference)
    return {
        "name": benchmark_model.name,
        "data": data.name,
        "metric": benchmark_model.metric,
        "float_metric": float_metrics[benchmark_model.metric],
        "keras_quant": ours,
        "converter": theirs,
        "seconds": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------
# Report


def metric_text(name, value):
    """Accuracy in %, a loss to four decimals; '-' for None."""
    if value is None:
        return "-"
    return f"{100 * value:.2f}%" if name == "accuracy" else f"{value:.4f}"


def cut(text):
    """`text`, cut to `CELL_WIDTH` characters for a table cell."""
    if len(text) <= CELL_WIDTH:
        return text
    return text[: CELL_WIDTH - 3] + "..."


def steps_text(report):
    """TFLM's largest difference from LiteRT in output steps, or '-'."""
    if report is None or report.max_step_difference is None:
        return "-"
    return str(report.max_step_difference)


def dB(value):
    return "-" if value is None else f"{value:.1f}"


def table_row(row):
    ours, theirs = row["keras_quant"], row["converter"]
    result = ours.get("result")
    report = result.micro if result is not None else None
    measured = report.metrics.get(row["metric"]) if report else None
    return [
        row["name"],
        row["data"],
        cut(ours["status"]),
        f"{row['metric']} {metric_text(row['metric'], row['float_metric'])}"
        f" -> {metric_text(row['metric'], measured)}",
        steps_text(report),
        "-" if report is None else f"{report.arena_bytes:,}",
        dB(ours.get("sqnr_db")),
        cut(theirs["status"]),
        dB(theirs.get("sqnr_db")),
    ]


HEADERS = [
    "model",
    "data",
    "keras-quant in TFLM",
    "metric float -> TFLM",
    "TFLM vs LiteRT max steps",
    "arena B",
    "SQNR keras-quant dB",
    "converter file in TFLM",
    "SQNR converter dB",
]


def print_report(rows):
    """The table, the reasons in full, the ops of both files, the times."""
    common.print_table(HEADERS, [table_row(row) for row in rows])
    print()
    long = [
        (row["name"], tool, row[key]["status"])
        for row in rows
        for tool, key in (
            ("keras-quant", "keras_quant"),
            ("converter", "converter"),
        )
        if len(row[key]["status"]) > CELL_WIDTH
    ] + [
        (row["name"], "converter SQNR", row["converter"]["sqnr_error"])
        for row in rows
        if "sqnr_error" in row["converter"]
    ]
    if long:
        print("in full:")
        for name, tool, text in long:
            print(f"  {name}, {tool}: {text}")
        print()
    op_rows = []
    for row in rows:
        result = row["keras_quant"].get("result")
        op_rows.append(
            [
                row["name"],
                " ".join(result.micro.ops) if result else "-",
                " ".join(row["converter"].get("ops", ())) or "-",
            ]
        )
    common.print_table(["model", "keras-quant ops", "converter ops"], op_rows)
    print()
    times = ", ".join(f"{row['name']} {row['seconds']:.0f} s" for row in rows)
    print(f"seconds per model (training, both exports, measuring): {times}")


def print_legend(args):
    legend = (
        "int8_only, one row per model. keras-quant: export(observed, "
        'mode="int8_only", target="micro"), calibrated by predict on the '
        "calibration inputs; the metric (test accuracy in %, the U-Net's "
        "test loss) of the Keras float model, then as TFLM measured it; "
        "TFLM vs LiteRT: largest output difference between TFLM and "
        "LiteRT's reference kernels, in int8 steps; arena: smallest TFLM "
        "tensor arena. Converter: TFLiteConverter, TFLITE_BUILTINS_INT8, "
        "int8 input and output, same calibration inputs; 'yes' if TFLM "
        "allocates and invokes it once. SQNR: LiteRT output vs Keras float "
        f"on the test inputs. Training: {args.epochs} epochs, batch "
        f"{args.batch_size}, seed 0."
    )
    print(textwrap.fill(legend, 78))
    print(f"tflite-micro {tflm.version()}")
    print()


def parse_args(argv=None):
    parser = common.make_parser(__doc__)
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help="comma-separated, of: " + ", ".join(MODELS),
    )
    args = parser.parse_args(argv)
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        parser.error(
            f"unknown models {sorted(unknown)}; choose from {list(MODELS)}"
        )
    return args


def main(argv=None):
    """Measures the selected models and prints the report.

    Args:
        argv: command-line arguments; None for `sys.argv[1:]`.

    Returns:
        One dict per model: its name, data, float metric, the keras-quant
        export (`status`, `result`, `sqnr_db`), the converter's file
        (`status`, `sqnr_db`, `ops`) and the seconds it took.
    """
    args = parse_args(argv)
    common.print_header(
        "(g) micro: integer-only files in TensorFlow Lite for Microcontrollers",
        "benchmarks/micro.py",
        args,
    )
    print_legend(args)
    start = time.perf_counter()
    rows = [measure(MODELS[name], args) for name in args.models.split(",")]
    print_report(rows)
    print(f"whole run: {time.perf_counter() - start:.0f} s")
    return rows


if __name__ == "__main__":
    main()
