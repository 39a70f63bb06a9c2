"""Data movement between quantized tensors computed in integers
(`integer_io.moves_in_integers`): models the stock converter makes all
integer are all integer from keras-quant too, and as accurate."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_quant
from keras_quant.conversion import integer_io
from keras_quant.conversion.routes import convert
from keras_quant.runtime import inspection
from keras_quant.runtime import litert


def small_unet():
    """A U-Net step on the digits: UpSampling2D with a free batch size
    (EXPAND_DIMS and TILE in TFLite), a skip Concatenate."""
    inputs = keras.Input((8, 8, 1))
    a = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    b = layers.MaxPooling2D()(a)
    b = layers.Conv2D(16, 3, padding="same", activation="relu")(b)
    joined = layers.Concatenate()([a, layers.UpSampling2D()(b)])
    outputs = layers.Conv2D(1, 1, activation="sigmoid")(joined)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model


def conv_gru():
    """Conv1D then an unrolled GRU over the digits' rows: its zero initial
    state is a FILL of the batch size."""
    inputs = keras.Input((8, 8))
    hidden = layers.Conv1D(16, 3, activation="relu")(inputs)
    hidden = layers.GRU(16, unroll=True)(hidden)
    model = keras.Model(inputs, layers.Dense(10)(hidden))
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def sqnr(reference, values):
    error = np.sum((reference - values) ** 2)
    return 10 * np.log10(np.sum(reference**2) / error)


def converter_int8_only(model, calibration):
    """The stock converter's integer-only file, calibrated one input at a
    time on `calibration`."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [calibration[i : i + 1]] for i in range(len(calibration))
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.mark.parametrize(
    "build, moved",
    [(small_unet, {"EXPAND_DIMS", "TILE"}), (conv_gru, {"FILL"})],
)
def test_integer_only_as_the_converter_gives_it(build, moved, digits):
    keras.utils.set_random_seed(0)
    model = build()
    images, labels = digits["train"]
    x = images if build is small_unet else images[..., 0]
    y = (images > 0.5).astype("float32") if build is small_unet else labels
    model.fit(x, y, epochs=5, verbose=0)
    calibration, test = x[:350], digits["test"][0]
    test = test if build is small_unet else test[..., 0]
    observed = keras_quant.observe(model)
    observed.predict(calibration, verbose=0)
    tflite = convert(observed, "int8_only")
    summary = inspection.summarize(tflite)
    assert summary.float_ops() == []
    assert moved <= set(summary.op_names)
    # The batch size stays free: LiteRT runs 256 inputs at once.
    expected = model.predict(test, verbose=0)
    ours = sqnr(expected, litert.run(tflite, test, batch_size=256))
    theirs = sqnr(
        expected, litert.run(converter_int8_only(model, calibration), test)
    )
    assert ours >= theirs - 0.5


def test_a_model_without_such_ops_is_left_as_it_is(calibrated_cnn):
    tflite = convert(calibrated_cnn, "int8")
    assert integer_io.moves_in_integers(tflite) is tflite
