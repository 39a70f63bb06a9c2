"""Benchmark (b): export time, first and steady, and the command line's.

keras-quant exports int8 from the ranges its observers collected (during
`fit`'s validation runs), so it needs no representative dataset and no
calibration pass; the TFLite converter calibrates as it converts. Its
int8 export quantizes in a child process (ai-edge-quantizer and LiteRT,
`keras_quant.conversion.isolation`), started once per process by the first
export and reused; so the first export of a process is reported apart
from the steady state. Everything below is measured in this one process
(the command lines (d) in fresh processes it starts).

(a) digits CNN: one observed model is trained (`common.train_observed`,
    ranges from the last validation run of `fit`, 288 images); then
    - keras-quant export: `keras_quant.export(observed, path, mode="int8")`
      (converts, converts float32 for the size ratio, checks, writes);
    - keras-quant convert: `keras_quant.conversion.routes.convert(observed,
      "int8")`, the conversion alone (no file, no float32 size);
    - converter: `tf.lite.TFLiteConverter.from_keras_model(model)`,
      `Optimize.DEFAULT`, representative dataset = the same 288
      validation images, one per step (`common.converter_int8`).
(b) MobileNetV2 at 224x224x3 (`keras.applications.MobileNetV2(
    weights=None, input_shape=(224, 224, 3))`, random weights,
    BatchNormalization statistics from 32 image crops): 200 calibration
    images (crops of scikit-learn's sample photographs, `zoo_models.
    image_crops`, resized from 96x96 to 224x224, `preprocess_input`); the
    ranges come from `observed.predict` over them (timed, not part of the
    export), the converter calibrates on the same 200 images.
(c) `keras_quant.export_many` of float32, dynamic, int8, int8_only,
    float16 and int16x8 vs one int8 `export`, digits model.
(d) wall time of `keras-quant --help`, `inspect nosuch.tflite`, `export
    nosuch.keras` and `export m.keras --mode nosuch`, each a fresh process,
    in an empty folder.
(e) the first int8 export of a fresh process (a small CNN trained 8
    epochs on 12288 random images, a few seconds), on TensorFlow and, if
    installed, JAX: cold, and after `exporting.api.warm_up` at the start
    of training, as `TFLiteExport` calls it (the child processes start
    while the model trains). No goal.

Before (a), one stock float32 conversion of a tiny model pays TensorFlow's
one-off converter set-up, which whichever converts first in a process
pays; its time is printed. In (a) and (b) the first call of keras-quant's
export, then the converter's, is timed alone; then rounds alternate among
the rows (order rotated each round) and the steady figure is the median.
Goals: (a) steady ratio <= 1.0x, (b) <= 0.6x, (c) <= 2x, (d) < 0.5 s.
"""

import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import common  # before keras: sets TensorFlow's log level
import keras
import numpy as np
import tensorflow as tf
import zoo_models

import keras_quant
from keras_quant.conversion import isolation
from keras_quant.conversion import routes

SCRIPT = "benchmarks/export_time.py"
MOBILENET_SIZE = 224
MOBILENET_CALIBRATION = 200
MOBILENET_PREDICT_BATCH = 50
MANY_MODES = ("float32", "dynamic", "int8", "int8_only", "float16", "int16x8")
CLI_REPEATS = 5
FIRST_EXPORT_REPEATS = 3

# (e): one fresh process; argv[1] is "cold" or "warm"; prints the seconds
# of its training and of its first export.
FIRST_EXPORT_SCRIPT = """
import sys, time
import numpy as np, keras, keras_quant
from keras_quant.exporting import api
keras.utils.set_random_seed(0)
inputs = keras.Input((8, 8, 1))
x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
x = keras.layers.Dense(10)(keras.layers.Flatten()(x))
observed = keras_quant.observe(keras.Model(inputs, x), save_modes=())
observed.compile(optimizer="adam", loss="mse")
if sys.argv[1] == "warm":
    api.warm_up(observed, ["int8"])  # what TFLiteExport does at train begin
data = np.random.default_rng(0).random((16384, 8, 8, 1)).astype("float32")
start = time.perf_counter()
labels = np.zeros((len(data), 10))
observed.fit(data, labels, validation_split=0.25, epochs=8, verbose=0)
trained = time.perf_counter()
keras_quant.export(observed, sys.argv[2], "int8")
print(trained - start, time.perf_counter() - trained)
"""
GOALS = {"a": 1.0, "b": 0.6, "c": 2.0, "d": 0.5}
EXPORT = "keras-quant export"
CONVERT = "keras-quant convert"
CONVERTER = "converter"


# --------------------------------------------------------------------------
# Timing


def converter_warm_up():
    """One stock float32 conversion of a tiny model; returns its seconds.

    TensorFlow's converter has one-off costs (loading its libraries,
    registering dialects) that the first conversion of a process pays,
    whoever runs it; paid here, they fall on neither side of (a).
    """
    inputs = keras.Input((4,))
    tiny = keras.Model(inputs, keras.layers.Dense(2)(inputs))

    def convert():
        with common.quiet():
            return tf.lite.TFLiteConverter.from_keras_model(tiny).convert()

    return common.seconds(convert)[0]


def measure(functions, first, repeats):
    """Times the first call of some functions, then alternating rounds.

    Args:
        functions: `{name: zero-argument function returning a size}`.
        first: names whose first call is timed alone, in this order.
        repeats: rounds after that; each round calls every function once,
            the order rotated from round to round.

    Returns:
        `(firsts, timings, sizes)`: `{name: seconds}` of the first calls,
        `{name: [seconds, ...]}` of the rounds, `{name: size}`.
    """
    firsts, sizes = {}, {}
    for name in first:
        firsts[name], sizes[name] = common.seconds(functions[name])
    timings = {name: [] for name in functions}
    for round_index in range(repeats):
        for name in common.rotated(list(functions), round_index):
            elapsed, sizes[name] = common.seconds(functions[name])
            timings[name].append(elapsed)
    return firsts, timings, sizes


def int8_functions(model, observed, calibration, folder, with_convert):
    """The int8 exports to compare, as zero-argument functions.

    Args:
        model: the float model.
        observed: the observed model sharing its layers, with ranges.
        calibration: the converter's representative images.
        folder: where keras-quant writes its file.
        with_convert: also time `routes.convert` alone.

    Returns:
        `{name: function returning the .tflite size in bytes}`.
    """
    path = os.path.join(folder, "int8.tflite")
    functions = {
        EXPORT: lambda: (
            keras_quant.export(observed, path, mode="int8").size_bytes
        ),
        CONVERTER: lambda: len(
            common.converter_int8(model, calibration, len(calibration))
        ),
    }
    if with_convert:
        functions[CONVERT] = lambda: len(routes.convert(observed, "int8"))
    return functions


def mobilenet(seed):
    """MobileNetV2 at 224x224, its calibration images and ranges.

    Returns:
        `(model, observed, calibration, collect_seconds)`: the float model
        (random weights, BatchNormalization statistics from 32 crops), the
        observed model with ranges from `observed.predict(calibration)`,
        the 200 calibration images, and the seconds that predict took
        (after a warm-up predict that traced it, whose ranges are reset).
    """
    size = (MOBILENET_SIZE, MOBILENET_SIZE)

    def images(n, stream):
        crops = zoo_models.image_crops(n, np.random.default_rng([seed, stream]))
        resized = tf.image.resize(crops, size).numpy()
        return keras.applications.mobilenet_v2.preprocess_input(resized)

    calibration = images(MOBILENET_CALIBRATION, zoo_models.CALIBRATION_STREAM)
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(*size, 3))
    zoo_models.set_batch_norm_statistics(
        model,
        images(zoo_models.BATCH_NORM_SAMPLES, zoo_models.BATCH_NORM_STREAM),
    )
    observed = keras_quant.observe(model)
    batch = MOBILENET_PREDICT_BATCH
    observed.predict(calibration[:batch], batch_size=batch, verbose=0)
    keras_quant.reset_ranges(observed)
    collect, _ = common.seconds(
        observed.predict, calibration, batch_size=batch, verbose=0
    )
    return model, observed, calibration, collect


def many_functions(observed, folder):
    """`export_many` of `MANY_MODES` and one int8 `export`, as functions."""
    paths = {
        mode: os.path.join(folder, f"{mode}.tflite") for mode in MANY_MODES
    }
    single = os.path.join(folder, "single_int8.tflite")
    return {
        "export_many, 6 modes": lambda: sum(
            r.size_bytes for r in keras_quant.export_many(observed, paths)
        ),
        "export int8": lambda: (
            keras_quant.export(observed, single, mode="int8").size_bytes
        ),
    }


def cli_commands():
    """`[(label, argv)]`: the commands of (d), then two references."""
    script = os.path.join(os.path.dirname(sys.executable), "keras-quant")
    base = (
        [script]
        if os.path.exists(script)
        else [sys.executable, "-m", "keras_quant"]
    )
    return [
        ("keras-quant --help", [*base, "--help"]),
        (
            "keras-quant inspect nosuch.tflite",
            [*base, "inspect", "nosuch.tflite"],
        ),
        ("keras-quant export nosuch.keras", [*base, "export", "nosuch.keras"]),
        (
            "keras-quant export m.keras --mode nosuch",
            [*base, "export", "m.keras", "--mode", "nosuch"],
        ),
        ("reference: python -c pass", [sys.executable, "-c", "pass"]),
        (
            "reference: python -c 'import tensorflow'",
            [sys.executable, "-c", "import tensorflow"],
        ),
    ]


def measure_cli(commands, repeats):
    """Runs each command `repeats` times, each a fresh process, in an empty
    folder, the order rotated each round.

    Returns:
        `{label: ([seconds, ...], exit code, first line of its output)}`.
    """
    found = {label: [[], None, ""] for label, _ in commands}
    argvs = dict(commands)
    folder = tempfile.mkdtemp(prefix="kq_cli_")
    try:
        for round_index in range(repeats):
            for label in common.rotated(list(argvs), round_index):
                start = time.perf_counter()
                done = subprocess.run(
                    argvs[label], cwd=folder, capture_output=True, text=True
                )
                found[label][0].append(time.perf_counter() - start)
                lines = (
                    done.stderr.strip() or done.stdout.strip()
                ).splitlines()
                found[label][1] = done.returncode
                found[label][2] = lines[0] if lines else ""
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {label: tuple(value) for label, value in found.items()}


def child_start_up():
    """Seconds a fresh engine child takes to start, import ai-edge-quantizer
    and LiteRT, and answer one trivial job (the kept child is ended)."""
    isolation.stop_children()

    def start():
        isolation.prepare(modules=routes.ENGINE_MODULES)
        return isolation.run_isolated(len, "abc")

    return common.seconds(start)[0]


def measure_first_exports(repeats):
    """`{(backend, "cold" or "warm"): ([fit seconds, ...], [first export
    seconds, ...])}` of fresh processes, on TensorFlow and (if installed)
    JAX."""
    backends = ["tensorflow"]
    if importlib.util.find_spec("jax") is not None:
        backends.append("jax")
    found = {}
    folder = tempfile.mkdtemp(prefix="kq_first_")
    try:
        for round_index in range(repeats):
            for backend in backends:
                for variant in common.rotated(["cold", "warm"], round_index):
                    done = subprocess.run(
                        [sys.executable, "-c", FIRST_EXPORT_SCRIPT, variant]
                        + [os.path.join(folder, "m.tflite")],
                        capture_output=True,
                        text=True,
                        env={**os.environ, "KERAS_BACKEND": backend},
                        check=True,
                    )
                    fit, export = done.stdout.strip().splitlines()[-1].split()
                    times = found.setdefault((backend, variant), ([], []))
                    times[0].append(float(fit))
                    times[1].append(float(export))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return found


# --------------------------------------------------------------------------
# Output


def print_exports(firsts, timings, sizes, goal):
    """The table and ratios of (a) or (b); returns the ratios."""
    summaries = {name: common.Summary.of(t) for name, t in timings.items()}
    common.print_table(
        [
            "conversion",
            "first call",
            "steady: median (min, max, n)",
            ".tflite size",
        ],
        [
            [
                name,
                f"{firsts[name]:.3f} s" if name in firsts else "-",
                summary.format(),
                f"{sizes[name]} bytes",
            ]
            for name, summary in summaries.items()
        ],
    )
    first = firsts[EXPORT] / firsts[CONVERTER]
    steady = summaries[EXPORT].median / summaries[CONVERTER].median
    print()
    print(f"ratio keras-quant export / converter, first call:  {first:.2f}x")
    print(f"ratio keras-quant export / converter, steady:      {steady:.2f}x")
    if CONVERT in summaries:
        alone = summaries[CONVERT].median / summaries[CONVERTER].median
        print(
            f"ratio keras-quant convert / converter, steady:     {alone:.2f}x"
        )
    print(
        f"goal ratio <= {goal:.2f}x: first {common.goal_text(first <= goal)}, "
        f"steady {common.goal_text(steady <= goal)}"
    )
    return {
        "first": first,
        "steady": steady,
        "export": summaries[EXPORT].median,
    }


def report_digits(args, warm_up, child_was_running, measured):
    common.print_title(
        "(a) digits CNN: int8 from collected ranges vs calibration"
    )
    print(
        f"Model trained {args.epochs} epochs, batch {args.batch_size}, seed "
        f"{args.seed}. keras-quant's ranges are those\nof the last validation "
        "run of fit (288 images); the converter calibrates on the\nsame 288 "
        "images, one per step. First call of each alone (keras-quant's "
        f"first),\nthen {args.repeats} alternating rounds. TensorFlow's "
        "one-off converter set-up, paid\nbefore both (a stock float32 "
        f"conversion of a tiny model): {warm_up:.3f} s."
    )
    if child_was_running:
        print(
            "NOTE: an engine child was already running in this process; the "
            "first export\ndid not pay its start-up."
        )
    print()
    ratios = print_exports(*measured, GOALS["a"])
    print()
    return ratios


def report_mobilenet(args, collect, measured):
    common.print_title(
        f"(b) MobileNetV2 {MOBILENET_SIZE}x{MOBILENET_SIZE}: int8 from "
        f"ranges vs calibration on {MOBILENET_CALIBRATION} images"
    )
    print(
        f"Random weights, seed {args.seed}. keras-quant's ranges: "
        f"observed.predict over the\n{MOBILENET_CALIBRATION} images (batch "
        f"{MOBILENET_PREDICT_BATCH}), {collect:.3f} s, not part of the export "
        "(in training, fit's\nvalidation runs collect them). The converter "
        f"calibrates on the same {MOBILENET_CALIBRATION}\nimages, one per "
        "step. First call on this model of each alone (the engine\nchild "
        f"already runs), then {args.mobilenet_repeats} alternating rounds."
    )
    print()
    firsts, timings, sizes = measured
    ratios = print_exports(firsts, timings, sizes, GOALS["b"])
    converter = statistics.median(timings[CONVERTER])
    with_collect = (ratios["export"] + collect) / converter
    print(
        f"(for reference: keras-quant export + that predict / converter, "
        f"steady: {with_collect:.2f}x)"
    )
    print()
    return ratios


def report_many(args, timings):
    common.print_title(
        "(c) export_many of six modes vs one int8 export (digits)"
    )
    print(
        f"export_many({', '.join(MANY_MODES)})\nvs export(mode='int8'), each "
        "writing its files; one warm-up call of each, then\n"
        f"{args.repeats} alternating rounds."
    )
    print()
    summaries = {name: common.Summary.of(t) for name, t in timings.items()}
    common.print_table(
        ["call", "median (min, max, n)"],
        [[name, summary.format()] for name, summary in summaries.items()],
    )
    many, single = (summary.median for summary in summaries.values())
    ratio = many / single
    print()
    print(f"ratio export_many (6 modes) / export int8: {ratio:.2f}x")
    met = common.goal_text(ratio <= GOALS["c"])
    print(f"goal ratio <= {GOALS['c']:.2f}x: {met}")
    print()
    return ratio


def report_cli(found):
    common.print_title("(d) command line: wall time of a fresh process")
    print(
        f"Each command {CLI_REPEATS} times, a fresh process each, in an empty "
        "folder, order rotated\neach round; the median. The two references "
        "have no goal."
    )
    print()
    rows, medians = [], {}
    for label, (times, code, line) in found.items():
        summary = common.Summary.of(times)
        reference = label.startswith("reference")
        if not reference:
            medians[label] = summary.median
        goal = (
            "" if reference else common.goal_text(summary.median < GOALS["d"])
        )
        said = "" if reference else line[:48]
        rows.append([label, summary.format(), str(code), goal, said])
    common.print_table(
        [
            "command",
            "median (min, max, n)",
            "exit",
            f"< {GOALS['d']} s",
            "says",
        ],
        rows,
    )
    met = all(median < GOALS["d"] for median in medians.values())
    print()
    print(f"goal every command < {GOALS['d']} s: {common.goal_text(met)}")
    print()
    return medians


def report_first_exports(found):
    common.print_title("(e) first export of a fresh process, cold and warm")
    print(
        "A small CNN trained 8 epochs (a few seconds), then its first int8 "
        "export; warm:\n`api.warm_up` before `fit`, as TFLiteExport calls it "
        "at train begin, so the\nchild processes start while the model "
        f"trains. {FIRST_EXPORT_REPEATS} fresh processes each, medians; "
        "no\ngoal."
    )
    print()
    rows, medians = [], {}
    for (backend, variant), (fits, exports) in found.items():
        summary = common.Summary.of(exports)
        medians[f"{backend} {variant}"] = summary.median
        fit = statistics.median(fits)
        total = statistics.median(f + e for f, e in zip(fits, exports))
        row = [backend, variant, f"{fit:.1f} s", f"{total:.1f} s"]
        rows.append(row + [summary.format()])
    headers = ["backend", "child", "fit", "fit + export", "first export"]
    common.print_table(headers, rows)
    print()
    return medians


# --------------------------------------------------------------------------


def make_parser():
    parser = common.make_parser(__doc__, repeats=5, seed=0)
    parser.add_argument(
        "--mobilenet-repeats",
        type=common.whole_number(0),
        default=3,
        help="steady rounds for MobileNetV2 (b); 0 skips (b)",
    )
    return parser


def main(argv=None):
    """Measures (a) to (d) in this process and prints the figures.

    Args:
        argv: command-line arguments; None for `sys.argv[1:]`.

    Returns:
        `{"ratio": the steady digits ratio (a), ...}` with the other
        headline figures.
    """
    args = make_parser().parse_args(argv)
    common.print_header(
        "(b) export time: keras-quant's int8 export vs converter calibration",
        SCRIPT,
        args,
    )
    data = common.load_digits()
    model, observed = common.train_observed(
        data, args.seed, args.epochs, args.batch_size
    )
    child_was_running = bool(isolation._CHILDREN)
    warm_up = converter_warm_up()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        functions = int8_functions(model, observed, data.x_val, folder, True)
        measured = measure(functions, [EXPORT, CONVERTER], args.repeats)
        digits = report_digits(args, warm_up, child_was_running, measured)
        results["ratio"] = digits["steady"]
        results["digits"] = digits
        if args.mobilenet_repeats:
            big, big_observed, calibration, collect = mobilenet(args.seed)
            functions = int8_functions(
                big, big_observed, calibration, folder, False
            )
            measured = measure(
                functions, [EXPORT, CONVERTER], args.mobilenet_repeats
            )
            results["mobilenet"] = report_mobilenet(args, collect, measured)
            del big, big_observed, calibration, functions, measured
        functions = many_functions(observed, folder)
        _, timings, _ = measure(functions, list(functions), args.repeats)
        results["export_many"] = report_many(args, timings)
    results["cli"] = report_cli(measure_cli(cli_commands(), CLI_REPEATS))
    results["first_export"] = report_first_exports(
        measure_first_exports(FIRST_EXPORT_REPEATS)
    )
    start_up = child_start_up()
    print(
        "engine child alone (start, import ai-edge-quantizer and LiteRT, one "
        f"trivial job),\nmeasured last: {start_up:.3f} s"
    )
    print()
    return results


if __name__ == "__main__":
    main()
