"""The Edge TPU pre-check on real conversions of small Keras models."""

import json

import keras
import numpy as np
import pytest

import keras_quant
from keras_quant.conversion.routes import convert
from keras_quant.runtime import edgetpu
from keras_quant.runtime.edgetpu import precheck


def calibrated(model, samples):
    """`model` observed and calibrated on `samples`."""
    observed = keras_quant.observe(model)
    observed.predict(samples, verbose=0)
    return observed


def findings_of(result, rule):
    return [f for f in result.findings if f.startswith(f"{rule}: ")]


def test_dynamic_batch_int8_fails_on_its_input_shape(calibrated_cnn):
    result = precheck(convert(calibrated_cnn, "int8_only"))

    assert not result.passed
    static = findings_of(result, "static shape")
    assert any("input 'image'" in f and "[-1, 8, 8, 1]" in f for f in static)
    # Flatten of a dynamic batch computes the shape in int32 with SHAPE.
    assert result.unsupported_ops == ("SHAPE",)
    assert any("SHAPE output" in f for f in findings_of(result, "8-bit"))


def test_static_batch_int8_passes(calibrated_cnn, tmp_path):
    tflite = convert(calibrated_cnn, "int8_only", target="micro")
    path = tmp_path / "cnn.tflite"
    path.write_bytes(tflite)

    result = precheck(path)

    assert result.passed, result.text()
    assert result.findings == ()
    assert result.ops == (
        "CONV_2D",
        "FULLY_CONNECTED",
        "MAX_POOL_2D",
        "RESHAPE",
        "SOFTMAX",
    )
    # int8 weights: 12*3*3 + 192*32 + 32*10; int32 biases: 12 + 32 + 10;
    # the int32 [2] Flatten target shape.
    assert result.parameter_bytes == 108 + 6144 + 320 + 4 * 54 + 8
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
    assert result == precheck(tflite)


def test_float_model_fails_naming_float_tensors(trained_cnn):
    result = precheck(convert(trained_cnn, "float32"))

    assert not result.passed
    eight_bit = findings_of(result, "8-bit")
    assert "8-bit: CONV_2D input 'image' is float32" in eight_bit
    assert any("float32 constant" in f for f in eight_bit)
    assert any(f.startswith("8-bit: SOFTMAX output") for f in eight_bit)


def test_op_missing_from_coral_table_is_named(digits):
    assert "HARD_SWISH" not in edgetpu.SUPPORTED_OPS
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3)(inputs)
    outputs = keras.layers.Activation("hard_swish", name="swish")(x)
    model = calibrated(keras.Model(inputs, outputs), digits["val"][0])

    result = precheck(convert(model, "int8_only", target="micro"))

    assert result.unsupported_ops == ("HARD_SWISH",)
    assert len(result.findings) == 1
    assert result.findings[0].startswith("supported ops: HARD_SWISH output")
    assert "HARD_SWISH" in result.text()


@pytest.mark.parametrize("shape, passed", [((10,), True), ((4, 10), False)])
def test_softmax_limit_allows_only_a_1d_input(shape, passed):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape)
    model = keras.Model(inputs, keras.layers.Softmax()(inputs))
    samples = np.random.default_rng(0).normal(size=(32, *shape))
    model = calibrated(model, samples.astype("float32"))

    result = precheck(convert(model, "int8_only", target="micro"))

    assert result.ops == ("SOFTMAX",)
    assert result.passed is passed, result.text()
    if not passed:
        (finding,) = result.findings
        assert finding.startswith(f"{edgetpu.SOFTMAX_INPUT}: SOFTMAX output")
        assert "input shape [1, 4, 10] is not 1-D" in finding


def test_text_says_pre_check_and_never_claims_a_compilation(
    calibrated_cnn, trained_cnn
):
    failed = precheck(convert(trained_cnn, "float32")).text()
    passed = precheck(
        convert(calibrated_cnn, "int8_only", target="micro")
    ).text()

    header = "Edge TPU pre-check (static; not compiled): "
    assert passed.startswith(header + "passed\n")
    assert failed.startswith(header) and "finding(s)" in failed.split("\n")[0]
    for text in (passed, failed):
        assert "pre-check" in text
        assert "compiled" not in text.replace("not compiled", "")
    assert "fix (8-bit)" in failed and "fix (8-bit)" not in passed


def test_rejects_bytes_that_are_not_tflite():
    with pytest.raises(ValueError, match="TFL3"):
        precheck(b"not a model at all")
