"""Benchmark (a): how much slower `fit` gets with keras-quant's observers.

keras-quant promises quantization ranges as a by-product of training, so
training the observed model must cost little more than training the plain
one: the goal is at most 5% extra wall time.

Three configurations train the same CNN on the same data, with the same
epochs, batch size, validation data and seed:

- plain: the Keras model, as a user trains it without keras-quant;
- validation: `keras_quant.observe(model)` with
  `RangeCalibration(phase="validation")` (observers record on validation
  runs only, the default);
- train: the same with `phase="train"` (observers record on every
  training step, as a moving average).

Each run builds a fresh model (outside the timed region) and times the whole
`fit` call, which includes tracing the model's train and test functions on
their first call, since every user pays that. An epoch-timing callback also
gives the steady-state time of one epoch (training steps plus validation),
the median over epochs 2..N, which excludes tracing.

One warm-up run of each configuration (one epoch) comes first, so that the
process's one-off start-up costs fall on no configuration. The timed runs
are interleaved, one round of the three configurations after another, with
the order rotated every round, so that load from other work on the machine
spreads over all configurations alike.
"""

import statistics
import time

import common  # before keras: sets TensorFlow's log level
import keras

import keras_quant

SCRIPT = "benchmarks/fit_overhead.py"
GOAL_PERCENT = 5.0
CONFIGURATIONS = ("plain", "validation", "train")
LABELS = {
    "plain": "plain Keras model",
    "validation": "observed, phase=validation",
    "train": "observed, phase=train",
}


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of each epoch, validation included.

    Attributes:
        durations: seconds per epoch, in order.
    """

    def __init__(self):
        super().__init__()
        self.durations = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.durations.append(time.perf_counter() - self._start)


def prepare(configuration, seed):
    """The model to train and its callbacks, for one configuration.

    Args:
        configuration: one of `CONFIGURATIONS`; other than `"plain"`, it
            is the `RangeCalibration` phase.
        seed: model seed.

    Returns:
        `(model, callbacks)`.
    """
    model = common.build_model(seed)
    if configuration == "plain":
        return model, []
    calibration = keras_quant.callbacks.RangeCalibration(phase=configuration)
    return keras_quant.observe(model), [calibration]


def time_fit(configuration, data, seed, epochs, batch_size):
    """Times one `fit` of a freshly built model.

    Args:
        configuration: one of `CONFIGURATIONS`.
        data: a `common.Digits`.
        seed: model seed.
        epochs: training epochs.
        batch_size: batch size.

    Returns:
        `(fit seconds, [seconds of each epoch])`.
    """
    model, callbacks = prepare(configuration, seed)
    timer = EpochTimer()
    elapsed, _ = common.seconds(
        common.fit, model, data, epochs, batch_size, [*callbacks, timer]
    )
    return elapsed, timer.durations


def measure(data, seed, epochs, batch_size, repeats):
    """Warm-up, then `repeats` interleaved timed rounds.

    Returns:
        `{configuration: [(fit seconds, epoch seconds), ...]}`.
    """
    for configuration in CONFIGURATIONS:
        time_fit(configuration, data, seed, 1, batch_size)
    runs = {configuration: [] for configuration in CONFIGURATIONS}
    for round_index in range(repeats):
        for configuration in common.rotated(CONFIGURATIONS, round_index):
            runs[configuration].append(
                time_fit(configuration, data, seed, epochs, batch_size)
            )
    return runs


def summarize(runs):
    """Summaries of fit time, first-epoch time and steady epoch time.

    Args:
        runs: the result of `measure`.

    Returns:
        `{configuration: {"fit", "first_epoch", "epoch", "tracing"}}` of
        `common.Summary`, where `"tracing"` is epoch 1 minus the steady
        epoch of the same run; `"epoch"` and `"tracing"` are None with a
        single epoch.
    """
    summaries = {}
    for configuration, timings in runs.items():
        epochs = [durations for _, durations in timings]
        summaries[configuration] = {
            "fit": common.Summary.of(seconds for seconds, _ in timings),
            "first_epoch": common.Summary.of(d[0] for d in epochs),
            "epoch": _summary_or_none([_steady_epoch(d) for d in epochs]),
            "tracing": _summary_or_none([_tracing(d) for d in epochs]),
        }
    return summaries


def _steady_epoch(durations):
    """Median of epochs 2..N; None when there was a single epoch."""
    return statistics.median(durations[1:]) if len(durations) > 1 else None


def _tracing(durations):
    """Epoch 1 minus the steady epoch; None when there was a single epoch."""
    steady = _steady_epoch(durations)
    return None if steady is None else durations[0] - steady


def _summary_or_none(values):
    return None if None in values else common.Summary.of(values)


def overheads(summaries, key):
    """`{configuration: percent over plain}` for the median of `key`."""
    reference = summaries["plain"][key]
    if reference is None:
        return {}
    return {
        configuration: common.percent_change(
            summaries[configuration][key].median, reference.median
        )
        for configuration in CONFIGURATIONS
        if configuration != "plain"
    }


def report(summaries, data, args):
    """Prints the figures; returns the headline overheads in percent."""
    common.print_header(
        "(a) fit overhead: observed model vs plain Keras model", SCRIPT, args
    )
    print(
        f"digits, {len(data.x_train)} train / {len(data.x_val)} validation "
        f"samples; {args.epochs} epochs, batch {args.batch_size}, seed "
        f"{args.seed}.\nMedian of {args.repeats} runs per configuration, "
        "after 1 warm-up run each."
    )
    print()
    fit_over = overheads(summaries, "fit")
    epoch_over = overheads(summaries, "epoch")
    rows = []
    for configuration in CONFIGURATIONS:
        found = summaries[configuration]
        rows.append(
            [
                LABELS[configuration],
                _median(found["fit"]),
                f"{found['fit'].low:.3f}-{found['fit'].high:.3f}",
                _signed(fit_over.get(configuration)),
                _median(found["epoch"]),
                _signed(epoch_over.get(configuration)),
                _median(found["first_epoch"]),
                _median(found["tracing"]),
            ]
        )
    common.print_table(
        [
            "configuration",
            "fit",
            "fit min-max",
            "vs plain",
            "epoch 2..N",
            "vs plain",
            "epoch 1",
            "tracing",
        ],
        rows,
    )
    print()
    print(
        "fit: the whole fit call, tracing of the train and test functions "
        "included.\nepoch 2..N: median epoch (training steps + validation) "
        "after tracing.\nepoch 1: the first epoch, tracing included. "
        "tracing: epoch 1 - epoch 2..N,\nthe one-off cost of building and "
        "tracing the step functions, per fit."
    )
    print()
    for name, found in (("fit", fit_over), ("epoch 2..N", epoch_over)):
        for configuration, percent in found.items():
            met = percent <= GOAL_PERCENT
            print(
                f"goal (<= +{GOAL_PERCENT:.0f}%), {name}, "
                f"{configuration}: {percent:+.1f}% "
                f"-> {common.goal_text(met)}"
            )
    print()
    return {"fit": fit_over, "epoch": epoch_over}


def _signed(percent):
    return "" if percent is None else f"{percent:+.1f}%"


def _median(summary):
    return "n/a" if summary is None else f"{summary.median:.3f} s"


def main(argv=None):
    """Runs the benchmark and prints its figures.

    Args:
        argv: command-line arguments; None for `sys.argv[1:]`.

    Returns:
        The headline overheads (see `report`).
    """
    args = common.make_parser(__doc__, repeats=5, seed=0).parse_args(argv)
    data = common.load_digits()
    runs = measure(data, args.seed, args.epochs, args.batch_size, args.repeats)
    return report(summarize(runs), data, args)


if __name__ == "__main__":
    main()
