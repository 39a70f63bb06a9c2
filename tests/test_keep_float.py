"""`keep_float`: chosen layers compute in float inside an int8 model."""

import os

import keras
import numpy as np
import pytest

import keras_quant
from keras_quant.conversion import routes as conversion
from keras_quant.runtime import inspection

COMPUTE_OPS = ("CONV_2D", "FULLY_CONNECTED", "ADD", "CONCATENATION")


def compute_op_types(path):
    """`[(op name, output dtype)]` of the ops that compute something."""
    summary = inspection.summarize(path)
    return [
        (op.name, summary.tensors[op.outputs[0]].dtype)
        for op in summary.ops
        if op.name in COMPUTE_OPS
    ]


def names_of(model, kind):
    """Names of the model's layers of one type (Keras numbers names
    globally, so tests look them up)."""
    return [layer.name for layer in model.layers if isinstance(layer, kind)]


def test_kept_layer_is_the_only_float_op(calibrated_cnn, digits, tmp_path):
    hidden = names_of(calibrated_cnn, keras.layers.Dense)[0]
    plain = keras_quant.export(calibrated_cnn, tmp_path / "plain.tflite")
    kept = keras_quant.export(
        calibrated_cnn,
        tmp_path / "kept.tflite",
        keep_float=[hidden],
        validation_data=digits["test"],
    )
    assert compute_op_types(plain.path) == [
        ("CONV_2D", "int8"),
        ("FULLY_CONNECTED", "int8"),
        ("FULLY_CONNECTED", "int8"),
    ]
    assert compute_op_types(kept.path) == [
        ("CONV_2D", "int8"),
        ("FULLY_CONNECTED", "float32"),
        ("FULLY_CONNECTED", "int8"),
    ]
    # The dense kernel (192 x 32) is stored as float32 instead of int8,
    # without its per-channel scales and zero points.
    grown = kept.size_bytes - plain.size_bytes
    assert 3 * 192 * 32 - 1024 <= grown <= 3 * 192 * 32
    assert kept.keep_float == (hidden,)
    assert kept.to_dict()["keep_float"] == [hidden]
    assert kept.metric_drop("accuracy") <= 0.01


def test_keeping_every_compute_layer_float_matches_float(
    calibrated_cnn, digits, tmp_path
):
    result = keras_quant.export(
        calibrated_cnn,
        tmp_path / "m.tflite",
        keep_float=[
            *names_of(calibrated_cnn, keras.layers.Conv2D),
            *names_of(calibrated_cnn, keras.layers.Dense),
            "probabilities",
        ],
        validation_data=digits["test"],
    )
    kinds = {dtype for _, dtype in compute_op_types(result.path)}
    assert kinds == {"float32"}
    # Only the activations between the float ops are still rounded.
    assert result.max_abs_output_diff < 0.05


def test_layer_inside_nested_model(calibrated_models, tmp_path):
    model = calibrated_models["nested_cnn"]
    # Observing flattens nested models; the head's Dense is still there.
    (inner_dense,) = [
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.Dense)
    ]
    result = keras_quant.export(
        model, tmp_path / "m.tflite", keep_float=[inner_dense]
    )
    assert ("FULLY_CONNECTED", "float32") in compute_op_types(result.path)
    assert ("FULLY_CONNECTED", "int8") in compute_op_types(result.path)


def test_unknown_layer_lists_the_layers(calibrated_cnn, tmp_path):
    with pytest.raises(ValueError, match="does not have: \\['dense_7'\\]"):
        keras_quant.export(
            calibrated_cnn, tmp_path / "m.tflite", keep_float=["dense_7"]
        )
    assert not os.listdir(tmp_path)


def test_other_modes_refuse_keep_float(calibrated_cnn, tmp_path):
    with pytest.raises(ValueError, match="needs mode='int8'"):
        keras_quant.export(
            calibrated_cnn,
            tmp_path / "m.tflite",
            mode="int8_only",
            keep_float=names_of(calibrated_cnn, keras.layers.Dense),
        )


def test_layer_without_ops_is_refused_and_nothing_written(digits, tmp_path):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    observed = keras_quant.observe(model)
    observed.predict(digits["val"][0], verbose=0)
    target = tmp_path / "m.tflite"
    target.write_bytes(b"good model")
    with pytest.raises(keras_quant.ExportError, match="\\['drop'\\]"):
        keras_quant.export(observed, target, keep_float=["drop"])
    assert target.read_bytes() == b"good model"
    assert sorted(os.listdir(tmp_path)) == ["m.tflite"]


def test_kept_float_outputs_agree_with_plain_int8_elsewhere(
    calibrated_cnn, digits
):
    """Keeping the head float changes only what comes after it."""
    x = digits["test"][0][:64]
    plain = keras_quant.run_tflite(
        conversion.convert(calibrated_cnn, "int8"), x
    )
    kept = keras_quant.run_tflite(
        conversion.convert(
            calibrated_cnn,
            "int8",
            keep_float=names_of(calibrated_cnn, keras.layers.Conv2D),
        ),
        x,
    )
    assert np.mean(np.argmax(plain, -1) == np.argmax(kept, -1)) >= 0.95
