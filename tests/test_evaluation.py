import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_quant import data as data_lib
from keras_quant.conversion import routes as conversion
from keras_quant.measurement import evaluation
from keras_quant.runtime import litert


def test_metrics_from_predictions_match_evaluate(trained_cnn, digits):
    x, y = digits["test"]
    loss, accuracy = trained_cnn.evaluate(x, y, verbose=0)
    found = evaluation.metrics_from_predictions(
        trained_cnn, y, trained_cnn.predict(x, verbose=0)
    )
    assert found == pytest.approx(
        {"loss": loss, "accuracy": accuracy}, rel=1e-5
    )


def test_uncompiled_model_has_no_metrics():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert evaluation.metrics_from_predictions(model, None, None) == {}


def test_dataset_and_arrays_compare_the_same(calibrated_cnn, digits):
    tflite = conversion.convert(calibrated_cnn, "int8")
    x, y = digits["test"]
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(40)
    from_arrays = evaluation.compare(calibrated_cnn, tflite, (x, y))
    from_dataset = evaluation.compare(calibrated_cnn, tflite, dataset)
    assert from_dataset == from_arrays
    assert from_arrays.samples == len(x)
    float_out = calibrated_cnn.predict(x, verbose=0)
    quant_out = litert.run(tflite, x)
    assert (
        from_arrays.max_abs_output_diff == np.abs(float_out - quant_out).max()
    )


def test_comparison_does_not_move_ranges(calibrated_cnn, digits):
    before = [o.range() for o in calibrated_cnn.observers]
    tflite = conversion.convert(calibrated_cnn, "float16")
    evaluation.compare(
        calibrated_cnn, tflite, (digits["test"][0] * 5, digits["test"][1])
    )
    assert [o.range() for o in calibrated_cnn.observers] == before


def test_bad_validation_data():
    with pytest.raises(TypeError, match=r"tuple `\(x, y\)`"):
        data_lib.as_arrays([np.zeros(3), np.zeros(3)])
