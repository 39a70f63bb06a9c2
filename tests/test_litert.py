import keras
import numpy as np
import pytest
from keras import layers

import keras_quant
from keras_quant.conversion import routes as conversion
from keras_quant.runtime import litert


@pytest.fixture(scope="module")
def two_in_two_out():
    """Inputs and outputs named against alphabetical order on purpose."""
    keras.utils.set_random_seed(5)
    first = keras.Input((3,), name="zeta")
    second = keras.Input((5,), name="alpha")
    hidden = layers.Concatenate()(
        [layers.Dense(4)(first), layers.Dense(4)(second)]
    )
    outputs = [
        layers.Dense(2, name="z")(hidden),
        layers.Dense(7, name="a")(hidden),
    ]
    model = keras.Model([first, second], outputs)
    observed = keras_quant.observe(model)
    rng = np.random.default_rng(0)
    data = [rng.random((64, 3), "float32"), rng.random((64, 5), "float32")]
    observed.predict(data, verbose=0)
    return observed, data


@pytest.mark.parametrize("mode", ["float32", "int8", "int8_only", "int16x8"])
def test_inputs_and_outputs_keep_keras_order(two_in_two_out, mode):
    observed, data = two_in_two_out
    outputs = litert.run(
        conversion.convert(observed, mode), data, batch_size=10
    )
    expected = observed.predict(data, verbose=0)
    assert [o.shape for o in outputs] == [(64, 2), (64, 7)]
    for got, want in zip(outputs, expected):
        # Outputs are in the right order if each is close to its twin.
        assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_integer_io_is_quantized_and_dequantized(calibrated_cnn, digits):
    x = digits["test"][0]
    float_out = litert.run(conversion.convert(calibrated_cnn, "int8"), x)
    for io_dtype in ("int8", "uint8"):
        tflite = conversion.convert(
            calibrated_cnn, "int8_only", io_dtype=io_dtype
        )
        integer_out = litert.run(tflite, x)
        assert integer_out.dtype == np.float32
        # Same integer kernels inside: int8 and uint8 I/O differ only by
        # the zero-point shift, so the dequantized outputs agree.
        np.testing.assert_allclose(integer_out, float_out, atol=1 / 256 + 1e-7)


def test_quantize_rounds_and_saturates():
    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    values = np.array([0.0, 0.24, 0.26, 1000.0, -1000.0])
    np.testing.assert_array_equal(
        litert.quantize(values, detail), [-3, -3, -2, 127, -128]
    )
    np.testing.assert_allclose(
        litert.dequantize(np.array([-3, 127], np.int8), detail), [0.0, 65.0]
    )


def test_latency_runs_the_model_on_the_sample(calibrated_cnn, digits):
    tflite = conversion.convert(calibrated_cnn, "int8_only")
    seconds = litert.latency(tflite, digits["test"][0][:1], runs=5)
    assert isinstance(seconds, float) and seconds > 0
    with pytest.raises(ValueError):  # the sample's shape is checked
        litert.latency(tflite, np.zeros((1, 4, 4, 1), "float32"), runs=1)
