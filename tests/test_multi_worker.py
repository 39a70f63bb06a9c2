"""Two workers of a `tf.distribute.MultiWorkerMirroredStrategy` on
loopback, against one process on the same global batches.

The child script (`children/multi_worker.py`) trains an observed digits
CNN with `RangeCalibration`, a `TFLiteExport` and a `ModelCheckpoint`
exporting on save, then exports on the chief alone. Ranges must be equal
on both workers and to one process's; the chief alone writes `.tflite`
files; nothing may hang (a hang fails the test after `TIMEOUT` seconds,
the children killed).
"""

import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_quant
from keras_quant._compat import keras_internals
from keras_quant._compat import versions
from keras_quant.exporting import checkpoint
from keras_quant.exporting import workers
from keras_quant.measurement import evaluation

CHILD = pathlib.Path(__file__).parent / "children" / "multi_worker.py"
TIMEOUT = 300  # seconds for all the children of one run
RANGE_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
VALIDATION_SAMPLES = 256  # the child's; an accuracy may move by one


def free_ports(count):
    """`count` loopback ports nothing listens on (bound to port 0, then
    released together so they are distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def child_environment():
    """This environment for TensorFlow, without a cluster of its own."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.pop("TF_CONFIG", None)
    return env


@dataclasses.dataclass
class Child:
    """A child script running, writing into `folder`, its output in
    `folder.log`."""

    process: subprocess.Popen
    folder: pathlib.Path

    @property
    def log(self):
        return pathlib.Path(f"{self.folder}.log")

    def tail(self, lines=30):
        """The last lines it printed, under its name and exit code."""
        text = self.log.read_text().splitlines()[-lines:]
        code = self.process.returncode
        return f"--- {self.folder.name} (exit code {code}):\n" + "\n".join(text)


def start(folder, *args):
    """The child script with `args`, writing into `folder`."""
    folder.mkdir(parents=True)
    command = [sys.executable, str(CHILD), *args, "--out", str(folder)]
    with open(f"{folder}.log", "w") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_environment(),
        )
    return Child(process, folder)


def finish(children):
    """Waits for every child. Fails, once the others are killed, as soon as
    one fails or when they still run after `TIMEOUT` seconds (a hang)."""
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(child.process.poll() is None for child in children):
            if any(child.process.returncode for child in children):
                break  # one failed: the others would wait for it
            if time.monotonic() > deadline:
                stop(children)
                pytest.fail(
                    f"Still running after {TIMEOUT} s (a hang?), killed.\n"
                    + "\n".join(child.tail() for child in children)
                )
            time.sleep(0.2)
    finally:
        stop(children)
    if any(child.process.returncode for child in children):
        pytest.fail("A child failed.\n" + "\n".join(c.tail() for c in children))


def stop(children):
    """Kills the children still running (only these processes)."""
    for child in children:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait()


def run_workers(root, *args, single=True):
    """Both workers (and the single process) with `args`; `{name: folder}`."""
    ports = ",".join(str(port) for port in free_ports(2))
    children = [
        start(root / f"worker{i}", "--index", str(i), "--ports", ports, *args)
        for i in (0, 1)
    ]
    if single:
        children.append(start(root / "single", "--single", *args))
    finish(children)
    return {child.folder.name: child.folder for child in children}


def read_run(folder):
    """What a child wrote in `run.json`."""
    return json.loads((folder / "run.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`{name: (folder, run.json)}` of worker0 (the chief), worker1 and
    single, and how long they took together."""
    started = time.monotonic()
    folders = run_workers(tmp_path_factory.mktemp("multi_worker"))
    found = {
        name: (folder, read_run(folder)) for name, folder in folders.items()
    }
    return found, time.monotonic() - started


@pytest.mark.slow
def test_ranges_are_equal_on_both_workers_and_to_one_process(runs):
    found, _ = runs
    chief, other, single = (
        found[n][1] for n in ("worker0", "worker1", "single")
    )
    assert chief["ranges"] == other["ranges"]  # exactly
    assert chief["ranges"].keys() == single["ranges"].keys()
    for point, expected in single["ranges"].items():
        np.testing.assert_allclose(
            chief["ranges"][point], expected, **RANGE_TOLERANCE, err_msg=point
        )
    assert chief["trainable_weights"] == other["trainable_weights"]
    assert chief["history"] == other["history"]
    for name, values in single["history"].items():
        np.testing.assert_allclose(chief["history"][name], values, rtol=1e-5)


@pytest.mark.slow
def test_only_the_chief_writes_tflite_files(runs):
    found, _ = runs
    (chief_folder, chief), (other_folder, other) = (
        found["worker0"],
        found["worker1"],
    )
    assert sorted(p.name for p in chief_folder.glob("*.tflite")) == [
        "callback_float16.tflite",
        "callback_int8.tflite",
        "ckpt_float16.tflite",
        "m_float16.tflite",
        "m_int8.tflite",
    ]
    assert [r["mode"] for r in chief["exports"]] == ["int8", "float16"]
    assert list(other_folder.glob("*.tflite")) == []
    assert other["exports"] == [] and other["callback_exports"] == []
    # The save hook: the chief's checkpoint is whole, the other writes none.
    assert checkpoint.is_complete(chief_folder / "ckpt.keras")
    assert not list(other_folder.glob("ckpt*"))


@pytest.mark.slow
def test_the_chief_compares_like_one_process(runs):
    """The float predictions and metrics the chief computes alone are
    those of one process. Its int8 file differs a little: the tensors no
    observer sees take their ranges from the replay sample, which holds
    the chief's share of the first batches, not one process's."""
    found, _ = runs
    chief, single = found["worker0"][1], found["single"][1]
    chief_int8, single_int8 = chief["exports"][0], single["exports"][0]
    assert chief_int8["mode"] == single_int8["mode"] == "int8"
    for kind, tolerance in (
        ("float_metrics", 1e-5),
        ("quantized_metrics", 1e-3),
    ):
        assert chief_int8[kind].keys() == {"loss", "accuracy"}
        assert chief_int8[kind]["loss"] == pytest.approx(
            single_int8[kind]["loss"], rel=tolerance
        )
        assert chief_int8[kind]["accuracy"] == pytest.approx(
            single_int8[kind]["accuracy"], abs=1 / VALIDATION_SAMPLES
        )
    # The chief's float metrics are the ones its own validation logged.
    assert chief_int8["float_metrics"]["accuracy"] == pytest.approx(
        chief["history"]["val_accuracy"][-1]
    )


@pytest.mark.slow
def test_runs_finish_well_within_the_timeout(runs):
    _, seconds = runs
    assert seconds < TIMEOUT / 2


@pytest.mark.slow
def test_keras_fit_fails_there_without_the_fix(tmp_path):
    """keras-team/keras#20585, as `fix_multi_worker_training` documents:
    when this fails, Keras may have fixed it; drop the fix."""
    folders = run_workers(tmp_path, "--without-fix", single=False)
    for folder in folders.values():
        error = read_run(folder)["fit_error"]
        assert error is not None
        assert error.startswith("ValueError: Attempt to convert a value")
        assert "PerReplica" in error and "unsupported type" in error


def test_keras_fix_is_not_applied_to_an_unchecked_keras(monkeypatch):
    monkeypatch.setattr(keras_internals, "_multi_worker_fix", [])
    monkeypatch.setattr(versions, "installed", lambda name: (3, 99))
    with pytest.warns(UserWarning, match=r"not on 3\.99, so it is not"):
        assert keras_internals.fix_multi_worker_training() is False
    assert keras_internals._multi_worker_fix == []


def tiny_model(batch_norm=None):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3)(inputs)
    if batch_norm is not None:
        x = keras.layers.BatchNormalization(synchronized=batch_norm)(x)
    return keras.Model(inputs, x)


def test_one_process_with_two_replicas_exports_everything():
    """Two replicas on this process's two logical CPUs (conftest): no
    other worker, so nothing changes."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = keras_quant.observe(tiny_model(), save_modes=())
    assert strategy.num_replicas_in_sync == 2
    assert not evaluation.spans_workers(model)
    assert workers.exports_here(model)


def test_outside_strategy_leaves_the_scope():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inside = evaluation.outside_strategy(tf.distribute.has_strategy)
        assert tf.distribute.has_strategy()
    assert inside is False


def test_plain_twin_predicts_and_measures_like_its_model(digits):
    x, y = digits["val"][0][:64], digits["val"][1][:64]
    model = tiny_cnn()
    twin = evaluation.outside_strategy(evaluation.plain_twin, model)
    assert twin.weights[0] is model.weights[0]  # shared, not copied
    np.testing.assert_array_equal(
        twin.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    predictions = model.predict(x, verbose=0)
    assert evaluation._metrics(twin, y, predictions) == pytest.approx(
        evaluation._metrics(model, y, predictions)
    )
    again = evaluation.outside_strategy(evaluation.plain_twin, model)
    assert again is twin  # built once per model and compile config


def tiny_cnn():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(
        keras.layers.Flatten()(x)
    )
    model = keras.Model(inputs, outputs)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_warns_about_batch_norm_statistics_kept_per_replica():
    with pytest.warns(UserWarning, match=r"synchronized=True"):
        workers.warn_if_batch_norm_per_replica(tiny_model(batch_norm=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        workers.warn_if_batch_norm_per_replica(tiny_model(batch_norm=True))
        workers.warn_if_batch_norm_per_replica(tiny_model())
