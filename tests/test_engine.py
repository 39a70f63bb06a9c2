"""The quantization engine on layers the fake-quant route could not hold:
ranges mapped by name, a replay sample for the tensors inside layers."""

import re

import keras
import numpy as np
import pytest

import keras_quant
from keras_quant.conversion import engine
from keras_quant.conversion import graphs
from keras_quant.conversion import scopes
from keras_quant.conversion import tensor_map
from keras_quant.conversion.converter import run_converter
from keras_quant.runtime import inspection
from keras_quant.runtime import litert

RNG = np.random.default_rng(0)


def calibrated(model, data):
    observed = keras_quant.observe(model)
    observed.predict(data, verbose=0)
    return observed


def transformer_block():
    """LayerNormalization, attention and gelu: eleven ops per norm, none
    of whose inner tensors an observer sees."""
    inputs = keras.Input((6, 8))
    x = keras.layers.LayerNormalization()(inputs)
    x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(x, x)
    x = keras.layers.Add()([inputs, x])
    y = keras.layers.Dense(16, activation="gelu")(x)
    x = keras.layers.Add()([x, keras.layers.Dense(8)(y)])
    return keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(x))


def output_error(model, path, data, batch_size=256):
    expected = model.predict(data, batch_size=batch_size, verbose=0)
    found = litert.run(path, data, batch_size=batch_size)
    return np.max(np.abs(found - expected)) / np.ptp(expected)


@pytest.mark.parametrize(
    "mode, bound", [("int8", 0.05), ("int8_only", 0.05), ("int16x8", 0.01)]
)
def test_transformer_block_quantizes_inside_its_layers(mode, bound, tmp_path):
    """Every op inside LayerNormalization, attention and gelu is integer:
    NEG (and, in 16x8, SQUARED_DIFFERENCE) are rewritten into ops the
    quantizer holds."""
    data = RNG.normal(size=(64, 6, 8)).astype("float32")
    observed = calibrated(transformer_block(), data)
    result = keras_quant.export(observed, tmp_path / "m.tflite", mode)
    summary = inspection.summarize(result.path)
    names = [op.name for op in summary.ops]
    assert "BATCH_MATMUL" in names and "RSQRT" in names
    assert "NEG" not in names
    assert set(summary.float_ops()) <= {"QUANTIZE", "DEQUANTIZE"}
    if mode != "int8_only":  # integer input and output are not comparable
        assert output_error(observed, result.path, data) <= bound
    else:
        assert summary.float_ops() == []


def lstm_model(steps):
    inputs = keras.Input((steps, 4), batch_size=1)
    return keras.Model(
        inputs, keras.layers.Dense(3)(keras.layers.LSTM(8)(inputs))
    )


@pytest.mark.parametrize("mode", ["int8", "int8_only", "int16x8"])
def test_recurrent_layer_with_fixed_steps_is_unrolled_into_integers(
    mode, tmp_path
):
    data = np.cumsum(RNG.normal(size=(32, 12, 4)), axis=1).astype("float32")
    observed = calibrated(lstm_model(12), data / 4)
    result = keras_quant.export(observed, tmp_path / "m.tflite", mode)
    summary = inspection.summarize(result.path)
    names = {op.name for op in summary.ops}
    assert "WHILE" not in names and {"SPLIT", "LOGISTIC", "TANH"} <= names
    assert set(summary.float_ops()) <= {"QUANTIZE", "DEQUANTIZE"}
    if mode != "int8_only":
        error = output_error(observed, result.path, data / 4, batch_size=1)
        assert error <= 0.05


def test_recurrent_loop_over_variable_steps_stays_float(tmp_path):
    """No fixed step count, nothing to unroll: the WHILE loop stays float
    around integer ops in int8, and int8_only is refused naming it."""
    observed = calibrated(lstm_model(None), RNG.normal(size=(16, 12, 4)))
    result = keras_quant.export(observed, tmp_path / "m.tflite", "int8")
    summary = inspection.summarize(result.path)
    assert "WHILE" in summary.float_ops()
    assert ("FULLY_CONNECTED", "int8") in [
        (op.name, summary.tensors[op.outputs[0]].dtype) for op in summary.ops
    ]
    with pytest.raises(keras_quant.ExportError, match="WHILE"):
        keras_quant.export(observed, tmp_path / "o.tflite", "int8_only")
    assert not (tmp_path / "o.tflite").exists()


def test_keras_operations_that_are_not_layers_are_quantized(tmp_path):
    """MobileNetV3's hard-swish is `relu6(x + 3) / 6` written with
    operators: functional-graph operations that are not layers."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = x * keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    data = RNG.random((64, 8, 8, 3)).astype("float32")
    observed = calibrated(model, data)
    result = keras_quant.export(observed, tmp_path / "m.tflite", "int8_only")
    assert inspection.summarize(result.path).float_ops() == []
    assert output_error(observed, result.path, data) <= 0.05


def test_observed_ranges_land_on_the_tensors_that_hold_them(calibrated_cnn):
    """Each observed point's range becomes the scale of its TFLite tensor,
    found by name scope: Conv + BatchNormalization + ReLU fuse into one
    tensor, which carries the observer after the ReLU."""
    scoped, ops = graphs.scoped_float_graph(calibrated_cnn)
    float_tflite = run_converter(scoped, keras_quant.Mode.FLOAT32)
    ranges = tensor_map.observed_ranges(float_tflite, calibrated_cnn, ops)
    points = dict((o.point, o.range()) for o in calibrated_cnn.observers)
    relu = next(p for p in points if "re_lu" in p)
    fused = [name for name in ranges if "Relu" in name.split(";")[0]]
    assert len(fused) == 1 and ranges[fused[0]] == points[relu]
    tflite = engine.quantize(float_tflite, ranges, None, "int8")
    tensors = {t.name: t for t in inspection.summarize(tflite).tensors.values()}
    low, high = points[relu]
    fused_name = scopes.unscoped(fused[0])  # the file names it unscoped
    assert np.isclose(tensors[fused_name].scales[0], (high - low) / 255)


@pytest.mark.parametrize("mode", ["int8", "int16x8", "dynamic_int4"])
def test_exported_names_carry_no_engine_scopes(calibrated_cnn, mode, tmp_path):
    """The `kq_op<i>` scopes only map ranges to tensors: the exported
    file names its tensors after the Keras layers, each name once."""
    result = keras_quant.export(calibrated_cnn, tmp_path / "m.tflite", mode)
    names = [t.name for t in inspection.summarize(result.path).tensors.values()]
    assert not [name for name in names if "kq_op" in name]
    assert len(set(names)) == len(names)
    weighted = {
        graphs.layer_name(layer)
        for layer in calibrated_cnn.layers
        if getattr(graphs.unsplit(layer), "kernel", None) is not None
    }
    # TensorFlow enters a layer's scope as `<layer>_1` inside a function.
    parts = {re.sub(r"_1$", "", p) for n in names for p in re.split("[/;]", n)}
    assert weighted and weighted <= parts
