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


def build_observed(estimator, batch_norm):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(6, 3, padding="same", use_bias=not batch_norm)(inputs)
    if batch_norm:
        x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    observed = keras_quant.observe(model, estimator)
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
