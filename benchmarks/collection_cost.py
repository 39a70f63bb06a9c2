"""What collecting quantization ranges costs, against the plain model.

For each model, the plain Keras model is compared with
`keras_quant.observe(model)` trained with
`keras_quant.callbacks.RangeCalibration(phase=...)`:

1. fit: wall time of one epoch (training steps plus a validation run),
   for plain and for the observed model recording as
   `RangeCalibration(phase=...)` makes it record for a whole run with
   `"validation"`, `"train"` and `"both"`. Every model first trains a
   warm-up epoch (tracing included: the warm-up column); then `--repeats`
   rounds of one epoch per model, in an order rotated every round, so
   that drift in the machine's speed falls on every model alike; steady
   state is the median over the rounds, the overhead the median over the
   rounds of each epoch's ratio to the plain epoch of its round.
2. predict tracing: the first `predict` call on one batch (tracing
   included) and the second one, on a fresh plain and a fresh observed
   model; first minus second is about the tracing cost.
3. calibration by predict: `observed.predict(x)` on 200 inputs, on a fresh
   observed model (tracing included), against `model.predict(x)` on a
   fresh plain model (tracing included).

Parts 2 and 3 take the median of `--repeats` fresh models each, plain and
observed alternating; their ratios are the median of the ratios round by
round, as for fit.

Models:

- digits: a small residual CNN (Conv2D, DepthwiseConv2D, Add,
  Concatenate) on scikit-learn's 8x8x1 digits, one pass over 1440
  training images per epoch, the other 357 for validation;
- mobilenet_v2 and efficientnet: `zoo_models.ARCHITECTURES` at 96x96x3,
  images from `zoo_models.calibration_inputs`, random labels over 10
  classes (figures are timings only), 8 training steps and 2 validation
  steps per epoch.

Batch size 32 throughout. Every configuration builds a fresh model,
outside the timed regions.

Run: `python benchmarks/collection_cost.py --repeats 3`
(`--quick`: digits only and fewer steps, for a smoke test.)
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import argparse
import gc
import statistics
import sys
import time

import keras
import numpy as np
from sklearn.datasets import load_digits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import zoo_models  # noqa: E402
from fit_overhead import EpochTimer  # noqa: E402
from tables import print_table  # noqa: E402

import keras_quant  # noqa: E402
from keras_quant.observation.observers import RECORD_ALWAYS  # noqa: E402
from keras_quant.observation.observers import RECORD_INFERENCE  # noqa: E402
from keras_quant.observation.observers import RECORD_TRAINING  # noqa: E402
from keras_quant.observation.recording import set_recording  # noqa: E402

BATCH_SIZE = 32
CALIBRATION_SAMPLES = 200
PHASES = ("validation", "train", "both")
# The record mask `RangeCalibration(phase=...)` keeps during its run.
PHASE_MASKS = {
    "validation": RECORD_INFERENCE,
    "train": RECORD_TRAINING,
    "both": RECORD_ALWAYS,
}
MODELS = ("digits", "mobilenet_v2", "efficientnet")
PARTS = ("fit", "predict", "calibration")


def residual_digits_cnn(seed=0):
    """A small residual CNN on 8x8x1 digits: Conv2D, DepthwiseConv2D, Add,
    Concatenate."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    stem = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(stem)
    x = keras.layers.Conv2D(16, 1)(x)
    x = keras.layers.ReLU()(keras.layers.Add()([stem, x]))
    side = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(stem)
    x = keras.layers.Concatenate()([x, side])
    x = keras.layers.Conv2D(
        32, 3, strides=2, padding="same", activation="relu"
    )(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.Add()([x, keras.layers.Conv2D(32, 1)(y)])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="digits_cnn")


def digits_data():
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return (x[:1440], y[:1440]), (x[1440:], y[1440:]), x[:CALIBRATION_SAMPLES]


def zoo_data(name, train_steps, val_steps):
    n_train = train_steps * BATCH_SIZE
    n_val = val_steps * BATCH_SIZE
    x = zoo_models.calibration_inputs(name, n_train + n_val)
    y = np.random.default_rng(1).integers(0, 10, len(x)).astype(np.int32)
    calibration = np.concatenate(
        [x, zoo_models.heldout_inputs(name, CALIBRATION_SAMPLES)]
    )[:CALIBRATION_SAMPLES]
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), calibration


def builder(name):
    if name == "digits":
        return residual_digits_cnn
    return zoo_models.ARCHITECTURES[name]


def compiled(build, from_logits):
    model = build(seed=0)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=from_logits
        ),
    )
    return model


def prepared(build, config, from_logits):
    """A compiled model for `config`: plain, or observed and recording as
    `RangeCalibration(phase=config)` sets it for the whole run."""
    model = compiled(build, from_logits)
    if config == "plain":
        return model
    observed = keras_quant.observe(model)
    set_recording(observed, PHASE_MASKS[config])
    return observed


def fit_epochs(build, configs, train, val, repeats, from_logits):
    """`{config: epoch durations}`: a warm-up epoch each (tracing
    included), then `repeats` rounds of one epoch per config, in an order
    rotated every round, so that drift in the machine's speed falls on
    every config alike. A discarded epoch of a plain model first pays the
    process's one-time costs."""
    one_epoch(prepared(build, "plain", from_logits), train, val)
    gc.collect()
    models = {
        config: prepared(build, config, from_logits) for config in configs
    }
    durations = {config: [] for config in configs}
    for round_ in range(1 + repeats):
        for config in common.rotated(configs, round_):
            durations[config].append(one_epoch(models[config], train, val))
    return durations


def one_epoch(model, train, val):
    """Seconds of one `fit` epoch (training steps and validation)."""
    timer = EpochTimer()
    model.fit(
        *train,
        batch_size=BATCH_SIZE,
        epochs=1,
        validation_data=val,
        callbacks=[timer],
        shuffle=True,
        verbose=0,
    )
    return timer.durations[0]


def timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def fresh(build, observed):
    gc.collect()
    model = build(seed=0)
    return keras_quant.observe(model) if observed else model


def alternating(repeats, measure):
    """`{observed: [measure(observed) of each round]}` over `repeats`
    rounds; plain and observed alternate, in an order swapped every
    round."""
    found = {False: [], True: []}
    for round_ in range(repeats):
        for observed in common.rotated((False, True), round_):
            found[observed].append(measure(observed))
    return found


def medians(rounds):
    """The median of each of the values measured in every round."""
    return tuple(statistics.median(v) for v in zip(*rounds))


def predict_first_calls(build, batch, repeats):
    """`{observed: [(first call, second call) of each round]}`, seconds of
    `predict` on one batch of fresh models."""

    def measure(observed):
        model = fresh(build, observed)
        return tuple(
            timed(
                lambda: model.predict(batch, batch_size=BATCH_SIZE, verbose=0)
            )
            for _ in range(2)
        )

    return alternating(repeats, measure)


def calibration_by_predict(build, x, repeats):
    """`{observed: [(seconds,) of each round]}`, `predict(x)` on fresh
    models."""

    def measure(observed):
        model = fresh(build, observed)
        return (
            timed(lambda: model.predict(x, batch_size=BATCH_SIZE, verbose=0)),
        )

    return alternating(repeats, measure)


def seconds(value):
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=PARTS, help="what to time"
    )
    args = parser.parse_args()
    models = args.models or (["digits"] if args.quick else list(MODELS))
    repeats = min(args.repeats, 2) if args.quick else args.repeats
    train_steps, val_steps = (4, 1) if args.quick else (8, 2)

    rows = {part: [] for part in args.parts}
    for name in models:
        started = time.perf_counter()
        build = builder(name)
        if name == "digits":
            train, val, calibration = digits_data()
            from_logits = True
        else:
            train, val, calibration = zoo_data(name, train_steps, val_steps)
            from_logits = False
        if "fit" in rows:
            rows["fit"].append(
                fit_row(name, build, train, val, repeats, from_logits)
            )
        if "predict" in rows:
            rows["predict"].append(
                predict_row(name, build, calibration[:BATCH_SIZE], repeats)
            )
        if "calibration" in rows:
            rows["calibration"].append(
                calibration_row(name, build, calibration, repeats)
            )
        print(
            f"[{name}] total {time.perf_counter() - started:.0f} s", flush=True
        )
    for part, found in rows.items():
        print()
        print(TITLES[part].format(batch=BATCH_SIZE, repeats=repeats))
        print_table(HEADERS[part], found)


def fit_row(name, build, train, val, repeats, from_logits):
    durations = fit_epochs(
        build, ("plain",) + PHASES, train, val, repeats, from_logits
    )
    for config, found in durations.items():
        print(
            f"[{name}] fit {config}: epochs "
            + ", ".join(f"{d:.3f}" for d in found),
            flush=True,
        )
    plain = statistics.median(durations["plain"][1:])
    row = [
        name,
        f"{len(train[0]) // BATCH_SIZE}+{-(-len(val[0]) // BATCH_SIZE)}",
        seconds(plain),
    ]
    for config in PHASES:
        steady = statistics.median(durations[config][1:])
        row.append(
            f"{seconds(steady)} "
            f"({paired_ratio(durations[config], durations['plain'])})"
        )
    row.append(
        seconds(durations["plain"][0])
        + " / "
        + " / ".join(seconds(durations[c][0]) for c in PHASES)
    )
    return row


def paired_ratio(epochs, plain_epochs):
    """The median over rounds of an epoch's ratio to the plain epoch of
    the same round (warm-up excluded): the machine's drift from round to
    round cancels out."""
    return median_ratio(epochs[1:], plain_epochs[1:])


def median_ratio(values, base):
    """The median of the ratios of `values` to `base`, round by round."""
    ratios = [a / b for a, b in zip(values, base)]
    return f"{statistics.median(ratios):.2f}x"


def predict_row(name, build, batch, repeats):
    first = predict_first_calls(build, batch, repeats)
    print(f"[{name}] predict first calls: {first}", flush=True)
    (p1, p2), (o1, o2) = medians(first[False]), medians(first[True])
    firsts = {k: [one for one, _ in rounds] for k, rounds in first.items()}
    return [
        name,
        seconds(p1),
        seconds(o1),
        median_ratio(firsts[True], firsts[False]),
        seconds(p2),
        seconds(o2),
        seconds(p1 - p2),
        seconds(o1 - o2),
    ]


def calibration_row(name, build, calibration, repeats):
    rounds = calibration_by_predict(build, calibration, repeats)
    print(f"[{name}] calibration by predict: {rounds}", flush=True)
    times = {k: [seconds_ for (seconds_,) in v] for k, v in rounds.items()}
    calib = {k: statistics.median(v) for k, v in times.items()}
    return [
        name,
        str(len(calibration)),
        seconds(calib[False]),
        seconds(calib[True]),
        median_ratio(times[True], times[False]),
        seconds(calib[True] - calib[False]),
    ]


TITLES = {
    "fit": "1. fit, seconds per epoch (train+validation steps), batch "
    "{batch}, median of {repeats} epochs after 1 warm-up epoch; (median "
    "of the ratios to plain round by round). Last column: warm-up epoch, "
    "tracing included (plain / validation / train / both).",
    "predict": "2. predict on one batch of {batch}, fresh models, median of "
    "{repeats}, seconds: first call (tracing included), second call, and "
    "first minus second (about the tracing).",
    "calibration": "3. calibration by predict: predict(x) on fresh models, "
    "median of {repeats}, tracing included, seconds.",
}
HEADERS = {
    "fit": [
        "model",
        "steps",
        "plain",
        "phase=validation",
        "phase=train",
        "phase=both",
        "warm-up epoch",
    ],
    "predict": [
        "model",
        "plain 1st",
        "observed 1st",
        "ratio",
        "plain 2nd",
        "observed 2nd",
        "plain tracing",
        "observed tracing",
    ],
    "calibration": [
        "model",
        "inputs",
        "plain predict",
        "observed predict",
        "ratio",
        "extra",
    ],
}


if __name__ == "__main__":
    main()
