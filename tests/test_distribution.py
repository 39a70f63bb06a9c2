"""Ranges under tf.distribute equal those of one device on the same data.

conftest.py splits the CPU into two logical devices, so MirroredStrategy
runs two replicas, each seeing half of every global batch.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_quant
from keras_quant.observation.observers import read


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
