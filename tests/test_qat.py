import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_quant
from keras_quant.conversion import routes as conversion
from keras_quant.errors import NotCalibratedError
from keras_quant.errors import UnsupportedModelError
from keras_quant.observation import qat
from keras_quant.observation.observers import read
from keras_quant.runtime import inspection
from keras_quant.runtime import litert
from tests.conftest import small_cnn


@pytest.fixture(scope="module")
def trained_qat(calibrated_models, digits):
    """Each architecture fine-tuned for one epoch with QAT."""
    models = {}
    for name, observed in calibrated_models.items():
        model = keras_quant.quantize_aware(observed)
        model.compile(
            keras.optimizers.Adam(1e-3),
            observed.loss,
            metrics=["accuracy"],
        )
        keras.utils.set_random_seed(4)
        model.fit(*digits["train"], epochs=1, batch_size=32, verbose=0)
        models[name] = model
    return models


def output_scale(summary):
    return float(summary.tensors[summary.outputs[0]].scales[0])


@pytest.mark.parametrize("name", ["small_cnn", "residual_cnn", "nested_cnn"])
def test_litert_matches_the_keras_qat_model(trained_qat, digits, name):
    model = trained_qat[name]
    tflite = conversion.convert(model, "int8_only")
    summary = inspection.summarize(tflite)
    x = digits["test"][0]
    difference = np.abs(litert.run(tflite, x) - model.predict(x, verbose=0))
    step = output_scale(summary)
    assert np.mean(difference <= step * (1 + 1e-5)) >= 0.99
    assert summary.float_ops() == []


def test_export_needs_no_data_and_keeps_accuracy(trained_qat, digits, tmp_path):
    model = trained_qat["small_cnn"]
    result = keras_quant.export(
        model,
        tmp_path / "q.tflite",
        "int8_only",
        validation_data=digits["test"],
    )
    assert result.io_dtype == "int8"
    assert abs(result.metric_drop("accuracy")) <= 0.01


def test_kernel_fake_quant_is_what_tflite_stores(trained_qat):
    model = trained_qat["small_cnn"]
    dense = next(
        layer.layer
        for layer in model.layers
        if isinstance(layer, qat.QuantizeWeights)
        and isinstance(layer.layer, keras.layers.Dense)
    )
    simulated = keras.ops.convert_to_numpy(
        qat.fake_quantize_kernel(dense.kernel, (-1,))
    )
    tflite = conversion.convert(model, "int8")
    summary = inspection.summarize(tflite)
    runner = litert.interpreter(tflite)
    runner.allocate_tensors()
    weights = {
        w.shape: (runner.get_tensor(w.index), w.scales)
        for _, w, _ in summary.weights()
    }
    values, scales = weights[tuple(reversed(simulated.shape))]
    stored = values.astype(np.float64) * scales[:, None]
    np.testing.assert_allclose(stored.T, simulated, rtol=1e-5, atol=1e-7)


# Per-channel factors of either sign, powers of two so that scaling is
# exact in float32: with other factors the two orders compute k * s / m
# with different roundings, and an element within an ulp of a rounding
# tie lands on the neighbouring step (hypothesis found seed 27330 with
# factor -3: one element of 54, one step apart).
FOLDING_FACTORS = st.tuples(
    st.sampled_from([1.0, -1.0]), st.integers(-4, 4)
).map(lambda sign_exponent: sign_exponent[0] * 2.0 ** sign_exponent[1])


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 2**16),
    st.lists(FOLDING_FACTORS, min_size=3, max_size=3),
)
def test_per_channel_quantization_commutes_with_bn_folding(seed, factors):
    kernel = np.random.default_rng(seed).normal(size=(3, 3, 2, 3))
    kernel = kernel.astype("float32")
    scale = np.asarray(factors, "float32")
    folded_then_quantized = qat.fake_quantize_kernel(kernel * scale, (-1,))
    quantized_then_folded = qat.fake_quantize_kernel(kernel, (-1,)) * scale
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(folded_then_quantized),
        keras.ops.convert_to_numpy(quantized_then_folded),
        rtol=1e-5,
        atol=1e-6,
    )


def test_ranges_start_from_the_observed_model(calibrated_cnn):
    model = keras_quant.quantize_aware(calibrated_cnn)
    assert [o.range() for o in model.observers] == [
        o.range() for o in calibrated_cnn.observers
    ]
    assert all(o.quantize for o in model.observers)


def test_from_a_float_model_ranges_come_from_training(digits, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras_quant.quantize_aware(small_cnn())
    with pytest.raises(NotCalibratedError):
        keras_quant.export(model, tmp_path / "q.tflite", "int8")
    model.fit(*digits["train"], epochs=1, verbose=0)
    steps = -(-len(digits["train"][0]) // 32)
    assert read(model.observers[0].batches_seen_) == steps
    before = [o.range() for o in model.observers]
    model.evaluate(*digits["val"], verbose=0)  # inference: ranges frozen
    assert [o.range() for o in model.observers] == before
    result = keras_quant.export(model, tmp_path / "q.tflite", "int8_only")
    assert result.size_bytes > 0


def test_training_qat_trains_the_original_layers(trained_cnn, digits):
    model = keras_quant.quantize_aware(trained_cnn)
    before = [w.copy() for w in trained_cnn.get_weights()]
    model.fit(*digits["train"], epochs=1, verbose=0)
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(before, trained_cnn.get_weights())
    ]
    assert any(changed)


def test_save_load_and_resume(trained_qat, digits, tmp_path):
    model = trained_qat["nested_cnn"]
    model.save_modes = ("int8_only",)
    model.save(tmp_path / "q.keras")
    assert (tmp_path / "q_int8_only.tflite").exists()
    loaded = keras.models.load_model(tmp_path / "q.keras")
    assert [o.range() for o in loaded.observers] == [
        o.range() for o in model.observers
    ]
    x = digits["test"][0]
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    loaded.fit(*digits["train"], epochs=1, verbose=0)
    assert [o.range() for o in loaded.observers] != [
        o.range() for o in model.observers
    ]


def test_export_callback_on_a_qat_model(calibrated_cnn, digits, tmp_path):
    model = keras_quant.quantize_aware(calibrated_cnn)
    export = keras_quant.callbacks.TFLiteExport(
        tmp_path / "q_{mode}.tflite", modes=("int8", "int8_only")
    )
    model.fit(*digits["train"], epochs=1, verbose=0, callbacks=[export])
    assert [r.mode.value for r in export.results] == ["int8", "int8_only"]


def test_subclassed_model_is_refused():
    class Custom(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(UnsupportedModelError, match="Functional API"):
        keras_quant.quantize_aware(Custom())


def test_sequential_qat_model(digits, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(6, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        "adam", "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    qat_model = keras_quant.quantize_aware(model)
    qat_model.fit(*digits["train"], epochs=3, verbose=0)
    result = keras_quant.export(
        qat_model,
        tmp_path / "s.tflite",
        "int8_only",
        validation_data=digits["test"],
    )
    assert result.quantized_metrics["accuracy"] > 0.85
    assert abs(result.metric_drop("accuracy")) <= 0.01
