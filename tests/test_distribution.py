"""keras-quant under tf.distribute: ranges equal those of one device on
the same data, QAT trains the same weights on every replica, and exports
read the state inside a strategy's scope as outside it.

conftest.py splits the CPU into two logical devices, so MirroredStrategy
runs two replicas, each seeing half of every global batch.
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_quant
from keras_quant.observation import qat
from keras_quant.observation.observers import Observer
from keras_quant.observation.observers import read
from tests.conftest import small_cnn


def build_observed(estimator, batch_norm, **kwargs):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(6, 3, padding="same", use_bias=not batch_norm)(inputs)
    if batch_norm:
        x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    observed = keras_quant.observe(model, estimator, **kwargs)
    observed.compile(
        keras.optimizers.SGD(learning_rate=0.0),
        "sparse_categorical_crossentropy",
    )
    return observed


def state(observed):
    return [
        (o.range(), read(o.batches_seen_))
        for o in observed.observers
        if o.fixed_range is None
    ]


def collect(strategy, estimator, run, batch_norm=True):
    with strategy.scope():
        observed = build_observed(estimator, batch_norm)
    run(observed)
    return state(observed)


@pytest.fixture(scope="module")
def mirrored():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    return strategy


@pytest.mark.parametrize(
    "estimator", ["minmax", "ema", "percentile", "mse", "entropy"]
)
def test_validation_ranges_match_one_device(mirrored, digits, estimator):
    x, y = digits["train"][0][:512], digits["train"][1][:512]

    def run(observed):
        observed.evaluate(x, y, batch_size=64, verbose=0)

    single = collect(tf.distribute.get_strategy(), estimator, run)
    distributed = collect(mirrored, estimator, run)
    assert [s[1] for s in single] == [8] * len(single)
    assert distributed == single


def test_training_ranges_match_one_device(mirrored, digits):
    x, y = digits["train"][0][:512], digits["train"][1][:512]

    def run(observed):
        calibration = keras_quant.callbacks.RangeCalibration(
            phase="train", momentum=0.8
        )
        observed.fit(
            x,
            y,
            batch_size=64,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[calibration],
        )

    single = collect(
        tf.distribute.get_strategy(), "minmax", run, batch_norm=False
    )
    distributed = collect(mirrored, "minmax", run, batch_norm=False)
    assert [s[1] for s in single] == [16] * len(single)
    np.testing.assert_equal(distributed, single)


def test_replay_sample_holds_the_first_inputs_of_every_replica(
    mirrored, digits, tmp_path
):
    """Both replicas hand their share of each batch to the host sample:
    it fills with distinct inputs of the first global batches, and is
    saved with the model."""
    x, y = digits["train"][0][:512], digits["train"][1][:512]
    with mirrored.scope():
        observed = build_observed("minmax", False, replay_samples=100)
    (observer,) = [o for o in observed.observers if o.replay is not None]
    observed.evaluate(x, y, batch_size=64, verbose=0)
    sample = observer.replay_sample()
    first = x[: 2 * 64].reshape(128, 1, -1)
    # bfloat16 keeps 8 bits of mantissa: within 0.4 % of an input.
    close = np.isclose(sample.reshape(-1, 64), first, rtol=2**-8, atol=0)
    matches = close.all(-1)  # (first inputs, samples)
    assert sample.shape == (100, 8, 8, 1)
    assert matches.any(0).all()  # every sample is one of them
    assert len({tuple(np.flatnonzero(m)) for m in matches.T}) == 100
    observed.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    (again,) = [o for o in loaded.observers if o.replay is not None]
    np.testing.assert_array_equal(again.replay_sample(), sample)


def replica_values(variable):
    """Each replica's copy of a Keras variable built under a strategy."""
    return [np.asarray(copy.numpy()) for copy in variable.value.values]


def test_read_takes_mirrored_scalars_inside_the_scope(mirrored):
    """Host reads of keras-quant's variables inside `strategy.scope()`:
    numpy cannot convert a scalar mirrored variable there."""
    with mirrored.scope():
        count = keras.Variable(
            7, dtype="int64", trainable=False, aggregation="only_first_replica"
        )
        observer = Observer("percentile")
        observer(keras.ops.convert_to_tensor([[-1.0, 3.0], [0.0, 2.0]]))
        assert read(count) == 7
        assert observer.calibrated
        assert read(observer.batches_seen_) == 1
        assert observer.min_.numpy() == -1.0
        assert observer.range()[0] <= 0.0 < 2.0 <= observer.range()[1]
        assert len(observer.state_values()) == 9


def dense_classifier():
    inputs = keras.Input((8, 8, 1))
    x = layers.Flatten()(inputs)
    x = layers.Dense(16, activation="relu")(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def test_qat_trains_every_kernel_on_every_replica(mirrored, digits):
    """A split layer (Dense with softmax: its kernel fake-quantized, an
    observer between its two ops) trains on both replicas: the observer's
    cross-replica exchange lets the other replica run, which must not see
    this replica's fake-quantized kernel in the shared layer."""
    x, y = digits["train"][0][:128], digits["train"][1][:128]
    keras.utils.set_random_seed(5)
    with mirrored.scope():
        model = dense_classifier()
        initial = [np.array(w) for w in model.get_weights()]
        trained = keras_quant.quantize_aware(model)
        trained.compile(
            keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy"
        )
        trained.fit(x, y, batch_size=64, epochs=1, verbose=0)
    for layer in model.layers:
        for attribute, _ in qat.kernels_of(layer):
            assert isinstance(getattr(layer, attribute), keras.Variable)
    for variable in trained.weights:
        first, *others = replica_values(variable)
        for other in others:
            np.testing.assert_array_equal(other, first, err_msg=variable.path)
    for before, after in zip(initial, model.get_weights()):
        assert np.abs(after - before).max() > 0


@pytest.mark.slow
@pytest.mark.parametrize("observed_first", [False, True])
def test_qat_fit_and_int8_only_export(
    mirrored, digits, tmp_path, observed_first
):
    """QAT of the digits CNN under MirroredStrategy, then its int8_only
    export inside the scope: the replicas end with the same weights (all
    but BatchNormalization's moving statistics, which Keras keeps per
    replica) and the export classifies."""
    x, y = digits["train"][0][:1024], digits["train"][1][:1024]
    keras.utils.set_random_seed(6)
    with mirrored.scope():
        model = small_cnn()
        source = keras_quant.observe(model) if observed_first else model
        trained = keras_quant.quantize_aware(source)
        trained.fit(x, y, batch_size=32, epochs=2, verbose=0)
        result = keras_quant.export(
            trained,
            tmp_path / "qat.tflite",
            mode="int8_only",
            validation_data=digits["val"],
        )
    for variable in trained.weights:
        if "moving_" in variable.path:
            continue
        first, *others = replica_values(variable)
        for other in others:
            np.testing.assert_array_equal(other, first, err_msg=variable.path)
    assert result.io_dtype == "int8"
    assert result.quantized_metrics["accuracy"] > 0.5
    assert (
        abs(
            result.quantized_metrics["accuracy"]
            - result.float_metrics["accuracy"]
        )
        < 0.03
    )


@pytest.fixture(scope="module")
def exports_in_and_out(mirrored, digits, tmp_path_factory):
    """An observed model trained under the strategy, its ranges collected
    on validation data during `fit`; exported in int8 and auto mode inside
    the strategy's scope and outside it."""
    x, y = digits["train"][0][:256], digits["train"][1][:256]
    with mirrored.scope():
        observed = build_observed("percentile", True, replay_samples=64)
        observed.compile(
            keras.optimizers.SGD(learning_rate=0.05),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        observed.fit(
            x, y, batch_size=64, epochs=1, verbose=0, validation_data=(x, y)
        )
    folder = tmp_path_factory.mktemp("in_and_out")
    results = {}
    for where in ("inside", "outside"):
        scope = (
            mirrored.scope() if where == "inside" else contextlib.nullcontext()
        )
        with scope:
            sample = next(
                o for o in observed.observers if o.replay is not None
            ).replay_sample()
            results[where] = {
                "sample": sample,
                **{
                    mode: keras_quant.export(
                        observed,
                        folder / f"{where}_{mode}.tflite",
                        mode=mode,
                        validation_data=digits["val"],
                    )
                    for mode in ("int8", "auto")
                },
            }
    return results


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int8", "auto"])
def test_export_inside_the_scope_matches_outside(exports_in_and_out, mode):
    inside = exports_in_and_out["inside"][mode]
    outside = exports_in_and_out["outside"][mode]
    assert inside.mode == outside.mode
    assert inside.ranges == outside.ranges and inside.ranges
    # The loss too: Keras divides a loss computed inside a strategy's
    # scope by its replicas (`scale_loss_for_distribution`); the metrics
    # are computed outside it.
    for name in ("float_metrics", "quantized_metrics"):
        got, expected = getattr(inside, name), getattr(outside, name)
        assert got == pytest.approx(expected, rel=1e-6)
        assert "accuracy" in got and "loss" in got
    assert inside.max_abs_output_diff == outside.max_abs_output_diff


@pytest.mark.slow
def test_replay_sample_reads_inside_the_scope(exports_in_and_out):
    inside = exports_in_and_out["inside"]["sample"]
    np.testing.assert_array_equal(
        inside, exports_in_and_out["outside"]["sample"]
    )
    assert inside.shape == (64, 8, 8, 1)
