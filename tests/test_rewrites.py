"""The float-graph rewrites compute exactly what the ops they replace did."""

import keras
import numpy as np
import pytest

import keras_quant
from keras_quant.conversion import engine
from keras_quant.conversion import rewrites
from keras_quant.conversion.converter import run_converter
from keras_quant.runtime import litert


@pytest.fixture(scope="module")
def layer_norm_tflite():
    inputs = keras.Input((5, 7))
    outputs = keras.layers.LayerNormalization()(inputs)
    return run_converter(keras.Model(inputs, outputs), keras_quant.Mode.FLOAT32)


@pytest.mark.parametrize(
    "mode, replaced",
    [
        ("int8", {"NEG"}),
        ("int8_only", {"NEG"}),
        ("int16x8", {"NEG", "SQUARED_DIFFERENCE"}),
    ],
)
def test_rewrite_replaces_the_op_and_keeps_the_float_results(
    layer_norm_tflite, mode, replaced, tmp_path
):
    before = engine.operator_names(layer_norm_tflite)
    rewritten = rewrites.apply(layer_norm_tflite, mode)
    after = engine.operator_names(rewritten)
    assert replaced <= set(before) and not replaced & set(after)
    data = np.random.default_rng(0).normal(3, 2, size=(16, 5, 7))
    (tmp_path / "a.tflite").write_bytes(layer_norm_tflite)
    (tmp_path / "b.tflite").write_bytes(rewritten)
    expected = litert.run(tmp_path / "a.tflite", data.astype("float32"))
    found = litert.run(tmp_path / "b.tflite", data.astype("float32"))
    np.testing.assert_allclose(found, expected, rtol=1e-6, atol=1e-6)


def test_nothing_to_rewrite_returns_the_same_bytes():
    inputs = keras.Input((4,))
    tflite = run_converter(
        keras.Model(inputs, keras.layers.Dense(2)(inputs)),
        keras_quant.Mode.FLOAT32,
    )
    assert rewrites.apply(tflite, "int16x8") is tflite
    assert rewrites.quantize_unused_outputs(tflite) is tflite
