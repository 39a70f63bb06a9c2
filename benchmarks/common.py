"""Shared pieces of the keras-quant benchmarks: data, model, timing, output.

Every benchmark trains the demo's CNN on the demo's split of
scikit-learn's digits (`examples/digits_demo.py`: 1797 8x8 images shipped
with scikit-learn, so nothing is downloaded), so their figures describe the
model `make demo` reports on and can be read side by side.

Importing this module sets TensorFlow's log level before TensorFlow is
imported, so each benchmark imports it before anything that loads
TensorFlow.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import argparse
import contextlib
import dataclasses
import gc
import io
import runpy
import statistics
import sys
import time
import warnings

import keras
import numpy as np
import tensorflow as tf
from tables import print_table  # noqa: F401  (the benchmarks call common.print_table)

import keras_quant
from keras_quant import native_stderr

# The demo's data and model. Its split never changes with the seeds a
# benchmark is given: the seeds vary initialisation, shuffling and dropout.
DEMO = runpy.run_path(
    os.path.join(os.path.dirname(__file__), "..", "examples", "digits_demo.py")
)
BATCH_SIZE = 32
EPOCHS = 10
PYTHON = ".venv/bin/python"


@dataclasses.dataclass(frozen=True)
class Digits:
    """The digits data, split once: float32 images (N, 8, 8, 1) in [0, 1].

    Attributes:
        x_train: training images.
        y_train: training labels (int32, 0-9).
        x_val: validation images, passed to `fit` as `validation_data`.
        y_val: validation labels.
        x_test: held-out images, seen by no training or calibration step.
        y_test: held-out labels.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def validation(self):
        """`(x_val, y_val)`, as `fit` takes it."""
        return self.x_val, self.y_val

    @property
    def test(self):
        """`(x_test, y_test)`."""
        return self.x_test, self.y_test


def load_digits():
    """The demo's digits split (`examples/digits_demo.py`), as a `Digits`."""
    splits = DEMO["load_splits"]()
    return Digits(*splits["train"], *splits["val"], *splits["test"])


def build_model(seed):
    """A fresh compiled demo CNN, its weights drawn from `seed`.

    Clears the Keras session first, so that every run starts from the same
    state (layer names, seed generators) and old graphs can be freed.

    Args:
        seed: seed for Python, NumPy, TensorFlow and Keras.

    Returns:
        The compiled Functional `keras.Model` of `make demo`.
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    return DEMO["build_model"]()


def fit(model, data, epochs, batch_size=BATCH_SIZE, callbacks=()):
    """Trains `model` on `data` with validation after every epoch.

    Args:
        model: a compiled model (plain or observed).
        data: a `Digits`.
        epochs: number of epochs.
        batch_size: training batch size.
        callbacks: Keras callbacks.

    Returns:
        The Keras `History`.
    """
    return model.fit(
        data.x_train,
        data.y_train,
        validation_data=data.validation,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=list(callbacks),
        verbose=0,
    )


def train_observed(data, seed, epochs, batch_size=BATCH_SIZE):
    """Builds and trains an observed model, calibrated by validation runs.

    Args:
        data: a `Digits`.
        seed: seed for `build_model`.
        epochs: training epochs.
        batch_size: training batch size.

    Returns:
        `(model, observed)`: the float model and the observed model that
        shares its layers; the observers hold the ranges of the last
        validation run.
    """
    model = build_model(seed)
    observed = keras_quant.observe(model)
    calibration = keras_quant.callbacks.RangeCalibration(phase="validation")
    fit(observed, data, epochs, batch_size, callbacks=[calibration])
    return model, observed


def representative_dataset(x, count):
    """A `representative_dataset` for the TFLite converter.

    Args:
        x: samples to draw from, in order.
        count: how many single samples to yield.

    Returns:
        A generator function yielding `[x[i:i + 1]]` for the first `count`
        samples.
    """
    if count > len(x):
        raise ValueError(f"Asked for {count} samples, only {len(x)} exist.")

    def generate():
        for i in range(count):
            yield [x[i : i + 1]]

    return generate


def converter_int8(model, x, count):
    """The TFLite converter's own int8 (float fallback) conversion.

    Full-integer quantization calibrated by the converter on `count`
    single samples of `x`; inputs and outputs stay float, as with
    keras-quant's `"int8"` mode.

    Args:
        model: a float Keras model.
        x: calibration samples (training data).
        count: number of samples the converter calibrates on.

    Returns:
        The `.tflite` model as bytes.
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(x, count)
    with quiet():
        return converter.convert()


@contextlib.contextmanager
def quiet():
    """Hides the converter's output while it runs.

    The converter prints "Saved artifact at ..." to Python's stdout and,
    when it calibrates, a "fully_quantize: ..." line from native code to
    the process's stderr; it also raises Python warnings. All three are
    hidden. What went to stderr is shown after all if the block raises, so
    no error message is lost.
    """
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        native_stderr.captured(),
    ):
        warnings.simplefilter("ignore")
        yield


def seconds(function, *args, **kwargs):
    """Runs `function` once and returns `(wall seconds, its result)`.

    A garbage collection runs first, outside the timed region, so that the
    leftovers of the previous run are not collected inside this one.
    """
    gc.collect()
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def rotated(items, shift):
    """`items` rotated left by `shift`, to vary which one runs first."""
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


@dataclasses.dataclass(frozen=True)
class Summary:
    """Median and spread of repeated measurements.

    Attributes:
        median: the median.
        low: the smallest value.
        high: the largest value.
        count: number of values.
    """

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values):
        """The `Summary` of a non-empty sequence of numbers."""
        values = list(values)
        return cls(
            statistics.median(values), min(values), max(values), len(values)
        )

    def format(self, unit="s", digits=3):
        """E.g. `'2.104 s  (min 2.051, max 2.290, n=5)'`."""
        return (
            f"{self.median:.{digits}f} {unit}  (min {self.low:.{digits}f}, "
            f"max {self.high:.{digits}f}, n={self.count})"
        )


def percent_change(value, reference):
    """`value` relative to `reference`, in percent (+5.0 is 5% more)."""
    return (value / reference - 1.0) * 100.0


def goal_text(met):
    """`'met'` or `'NOT met'`, for the goal lines of a report."""
    return "met" if met else "NOT met"


def make_parser(description, *, repeats=None, seeds=None, seed=None):
    """An argument parser with the options the benchmarks share.

    `--epochs` and `--batch-size` are always there; `--repeats`, `--seeds`
    and `--seed` only when given a default.

    Args:
        description: the benchmark's description (its module docstring).
        repeats: default number of timed runs, or None for no `--repeats`.
        seeds: default number of seeds, or None for no `--seeds`.
        seed: default single seed, or None for no `--seed`.

    Returns:
        An `argparse.ArgumentParser`.
    """
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--epochs", type=_positive, default=EPOCHS, help="training epochs"
    )
    parser.add_argument(
        "--batch-size", type=_positive, default=BATCH_SIZE, help="batch size"
    )
    if repeats is not None:
        parser.add_argument(
            "--repeats",
            type=_positive,
            default=repeats,
            help="timed runs per configuration, after one warm-up run",
        )
    if seeds is not None:
        parser.add_argument(
            "--seeds",
            type=_positive,
            default=seeds,
            help="number of seeds (0, 1, ..., SEEDS-1)",
        )
    if seed is not None:
        parser.add_argument(
            "--seed", type=int, default=seed, help="seed of the model"
        )
    return parser


def whole_number(minimum):
    """An argparse `type`: a whole number of at least `minimum`."""

    def parse(text):
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected >= {minimum}, got {value}"
            )
        return value

    return parse


_positive = whole_number(1)


def command_line(script, args):
    """The command that reproduces a run, with every option spelled out.

    Args:
        script: path of the benchmark script, from the repository root.
        args: the parsed `argparse.Namespace`.

    Returns:
        A shell command line.
    """
    options = " ".join(
        f"--{name.replace('_', '-')} {value}"
        for name, value in sorted(vars(args).items())
    )
    return f"{PYTHON} {script} {options}".strip()


def print_title(title):
    """Prints `title` between two rules."""
    rule = "=" * 78
    print(rule)
    print(title)
    print(rule)


def print_header(title, script, args):
    """Prints a benchmark's title, the command to reproduce it, versions."""
    print_title(title)
    print(f"reproduce: {command_line(script, args)}")
    print(
        f"versions:  keras {keras.__version__}, tensorflow {tf.__version__}, "
        f"keras-quant {keras_quant.__version__}, python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print()
