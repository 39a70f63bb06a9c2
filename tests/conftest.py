"""Fixtures: real data (scikit-learn's digits) and small trained models."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers
from sklearn.datasets import load_digits

import keras_quant

# Imports tfmot, which switches TensorFlow to legacy Keras: run apart.
collect_ignore = ["tfmot_scenarios.py"]


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.tflite"
    path.write_bytes(b"a good model")
    return path


def assert_untouched(path):
    """The `good_file` is as it was, alone in its folder."""
    assert path.read_bytes() == b"a good model"
    assert sorted(os.listdir(path.parent)) == [path.name]


@pytest.fixture(scope="session")
def digits():
    """Digits split into train / validation / test, images in [0, 1]."""
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return {
        "train": (x[:1100], y[:1100]),
        "val": (x[1100:1450], y[1100:1450]),
        "test": (x[1450:], y[1450:]),
    }


def traced_graph(model, training):
    """The graph of `model`'s call traced by TensorFlow, batch size free."""
    function = tf.function(lambda x: model(x, training=training))
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]))
    return function.get_concrete_function(spec).graph


def compile_classifier(model, from_logits=False):
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=from_logits
        ),
        metrics=["accuracy"],
    )
    return model


def small_cnn(name="cnn"):
    """Conv-BN-ReLU, pooling and a softmax head: the common case."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(12, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(32, activation="relu")(x)
    outputs = layers.Dense(10, activation="softmax", name="probabilities")(x)
    return compile_classifier(keras.Model(inputs, outputs, name=name))


def residual_cnn():
    """Residual Add, a Concatenate branch and global average pooling."""
    inputs = keras.Input((8, 8, 1))
    a = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    b = layers.Conv2D(8, 3, padding="same", use_bias=False)(a)
    b = layers.BatchNormalization()(b)
    x = layers.ReLU()(layers.Add()([a, b]))
    x = layers.Concatenate()([x, a])
    x = layers.GlobalAveragePooling2D()(x)
    return compile_classifier(
        keras.Model(inputs, layers.Dense(10)(x)), from_logits=True
    )


def nested_cnn():
    """A Functional model and a Sequential model nested in a third."""
    inner_in = keras.Input((8, 8, 1))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inner_in)
    x = layers.BatchNormalization()(x)
    inner = keras.Model(inner_in, layers.ReLU()(x), name="features")
    head = keras.Sequential(
        [
            keras.Input((8, 8, 8)),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(24, activation="relu"),
        ],
        name="head",
    )
    inputs = keras.Input((8, 8, 1))
    outputs = layers.Dense(10, activation="softmax")(head(inner(inputs)))
    return compile_classifier(keras.Model(inputs, outputs))


def train(model, digits, epochs=8):
    keras.utils.set_random_seed(1)
    x, y = digits["train"]
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="session")
def trained_cnn(digits):
    keras.utils.set_random_seed(0)
    return train(small_cnn(), digits)


@pytest.fixture
def calibrated_cnn(trained_cnn, digits):
    """An observed `small_cnn`, calibrated on the validation images."""
    observed = keras_quant.observe(trained_cnn)
    observed.evaluate(*digits["val"], verbose=0)
    return observed


@pytest.fixture(scope="session")
def calibrated_models(digits):
    """Each architecture trained, observed and calibrated once."""
    models = {}
    for build in (small_cnn, residual_cnn, nested_cnn):
        keras.utils.set_random_seed(0)
        observed = keras_quant.observe(train(build(), digits))
        observed.evaluate(*digits["val"], verbose=0)
        models[build.__name__] = observed
    return models
