import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_quant
from keras_quant.conversion import routes as conversion
from keras_quant.conversion.converter import quiet
from keras_quant.errors import NonFiniteActivationError
from keras_quant.errors import NotCalibratedError
from keras_quant.errors import UnsupportedModelError
from keras_quant.errors import UnwritablePathError
from keras_quant.runtime import inspection
from keras_quant.runtime import litert
from tests.conftest import assert_untouched

ARCHITECTURES = ["small_cnn", "residual_cnn", "nested_cnn"]


@pytest.fixture(scope="module")
def converted(calibrated_models):
    """Every architecture converted in every mode, once."""
    cache = {}

    def get(architecture, mode, io_dtype=None):
        key = (architecture, mode, io_dtype)
        if key not in cache:
            model = calibrated_models[architecture]
            cache[key] = conversion.convert(model, mode, io_dtype=io_dtype)
        return inspection.summarize(cache[key]), cache[key]

    return get


def io_dtypes(summary):
    tensors = summary.tensors
    return (
        {tensors[i].dtype for i in summary.inputs},
        {tensors[i].dtype for i in summary.outputs},
    )


def inner_activations(summary):
    """Activation tensors except the model's float inputs and outputs and
    the QUANTIZE/DEQUANTIZE ops next to them, and int32 shape arithmetic."""
    boundary = set(summary.inputs) | set(summary.outputs)
    for op in summary.ops:
        if op.name in ("QUANTIZE", "DEQUANTIZE"):
            boundary.update(op.inputs + op.outputs)
    return [
        t
        for t in summary.activations()
        if t.index not in boundary and t.dtype != "int32"
    ]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("io_dtype", ["int8", "uint8"])
def test_int8_only_is_integer_end_to_end(converted, architecture, io_dtype):
    summary, _ = converted(architecture, "int8_only", io_dtype)
    assert io_dtypes(summary) == ({io_dtype}, {io_dtype})
    assert summary.float_ops() == []
    assert not [t.name for t in summary.tensors.values() if t.is_float]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_int8_has_int8_activations_and_float_io(converted, architecture):
    summary, _ = converted(architecture, "int8")
    assert io_dtypes(summary) == ({"float32"}, {"float32"})
    assert {t.dtype for t in inner_activations(summary)} == {"int8"}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_int16x8_has_int16_activations_and_int8_weights(
    converted, architecture
):
    summary, _ = converted(architecture, "int16x8")
    assert io_dtypes(summary) == ({"float32"}, {"float32"})
    assert {t.dtype for t in inner_activations(summary)} == {"int16"}
    for _, weight, bias in summary.weights():
        assert weight.dtype == "int8"
        assert bias is None or bias.dtype == "int64"
    for tensor in inner_activations(summary):
        assert list(tensor.zero_points) == [0]  # 16x8: symmetric int16


def test_dynamic_range_quantizes_weights_only(converted):
    summary, _ = converted("small_cnn", "dynamic")
    weights = [w for _, w, _ in summary.weights()]
    # The converter leaves weights under 1024 elements in float.
    large = [w for w in weights if np.prod(w.shape) >= 1024]
    assert large and {w.dtype for w in large} == {"int8"}
    assert {t.dtype for t in summary.activations()} <= {"float32", "int32"}


def test_float16_stores_weights_as_float16(converted):
    summary, _ = converted("small_cnn", "float16")
    producers = {o: op for op in summary.ops for o in op.outputs}
    for _, weight, _ in summary.weights():
        dequantize = producers[weight.index]
        assert dequantize.name == "DEQUANTIZE"
        assert summary.tensors[dequantize.inputs[0]].dtype == "float16"


def test_float32_is_unquantized(converted):
    summary, _ = converted("small_cnn", "float32")
    assert {t.dtype for t in summary.tensors.values()} <= {"float32", "int32"}


@pytest.mark.parametrize("mode", ["int8", "int8_only", "int16x8"])
def test_tflite_quantization_spec(converted, mode):
    summary, tflite = converted("residual_cnn", mode)
    runner = litert.interpreter(tflite)
    runner.allocate_tensors()
    for _, weight, bias in summary.weights():
        values = runner.get_tensor(weight.index)
        channels = weight.shape[weight.quantized_dimension]
        assert len(weight.scales) == channels  # per-axis
        assert not np.any(weight.zero_points)
        assert values.min() >= -127 and values.max() <= 127
        expected_bias = "int64" if mode == "int16x8" else "int32"
        assert bias.dtype == expected_bias and not np.any(bias.zero_points)
    for tensor in inner_activations(summary):
        assert len(tensor.scales) == 1  # per-tensor
        if tensor.dtype == "int8":
            assert -128 <= int(tensor.zero_points[0]) <= 127


def accuracy(predictions, labels):
    return float(np.mean(np.argmax(predictions, axis=-1) == labels))


def converter_int8(model, samples):
    def representative_dataset():
        for i in range(len(samples)):
            yield [samples[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    with quiet():
        return converter.convert()


def test_int8_accuracy_is_close_to_float_and_to_the_converter(
    trained_cnn, calibrated_cnn, digits, tmp_path
):
    x_test, y_test = digits["test"]
    result = keras_quant.export(
        calibrated_cnn, tmp_path / "m.tflite", validation_data=(x_test, y_test)
    )
    float_accuracy = result.float_metrics["accuracy"]
    ours = accuracy(litert.run(result.path, x_test), y_test)
    theirs = accuracy(
        litert.run(
            converter_int8(trained_cnn, digits["train"][0][:100]), x_test
        ),
        y_test,
    )
    assert float_accuracy > 0.9
    assert float_accuracy - ours <= 0.01
    assert ours >= theirs
    assert result.quantized_metrics["accuracy"] == pytest.approx(ours)


def test_int8_outputs_track_the_float_model(calibrated_cnn, digits, tmp_path):
    x_test = digits["test"][0]
    result = keras_quant.export(
        calibrated_cnn, tmp_path / "m.tflite", "int8_only"
    )
    quantized = litert.run(result.path, x_test)
    reference = calibrated_cnn.predict(x_test, verbose=0)
    agreement = np.mean(quantized.argmax(-1) == reference.argmax(-1))
    assert agreement >= 0.98
    # Softmax outputs have scale 1/256: on average within one step.
    assert np.mean(np.abs(quantized - reference)) <= 1 / 256


def test_result_reports_sizes_and_metrics(calibrated_cnn, digits, tmp_path):
    path = tmp_path / "deep" / "folder" / "m.tflite"
    result = keras_quant.export(
        calibrated_cnn, path, "int8", validation_data=digits["test"]
    )
    assert os.path.getsize(path) == result.size_bytes
    assert result.size_ratio < 0.5
    assert result.size_ratio == result.size_bytes / result.float32_size_bytes
    assert set(result.float_metrics) == {"loss", "accuracy"}
    assert result.metric_drop("accuracy") == pytest.approx(
        result.float_metrics["accuracy"] - result.quantized_metrics["accuracy"]
    )
    assert set(result.ranges) == {o.point for o in calibrated_cnn.observers}
    assert result.to_dict()["mode"] == "int8"


def test_written_file_has_ordinary_permissions(calibrated_cnn, tmp_path):
    mask = os.umask(0o022)
    try:
        result = keras_quant.export(
            calibrated_cnn, tmp_path / "m.tflite", "float32"
        )
    finally:
        os.umask(mask)
    assert os.stat(result.path).st_mode & 0o777 == 0o644


def test_export_of_a_loaded_model_matches(calibrated_cnn, digits, tmp_path):
    calibrated_cnn.save_modes = ()
    calibrated_cnn.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    before = keras_quant.export(calibrated_cnn, tmp_path / "a.tflite")
    after = keras_quant.export(loaded, tmp_path / "b.tflite")
    assert after.ranges == before.ranges
    x = digits["test"][0]
    np.testing.assert_array_equal(
        litert.run(after.path, x), litert.run(before.path, x)
    )


# Bad input: a clear error, and nothing written or overwritten.


def test_unknown_mode(calibrated_cnn, good_file):
    with pytest.raises(ValueError, match=r"'int8_only'.*Received: mode='int4'"):
        keras_quant.export(calibrated_cnn, good_file, mode="int4")
    assert_untouched(good_file)


def test_io_dtype_outside_integer_only_mode(calibrated_cnn, good_file):
    with pytest.raises(ValueError, match="io_dtype"):
        keras_quant.export(calibrated_cnn, good_file, "int8", io_dtype="uint8")
    with pytest.raises(ValueError, match="Received: io_dtype='int16'"):
        keras_quant.export(
            calibrated_cnn, good_file, "int8_only", io_dtype="int16"
        )
    assert_untouched(good_file)


def test_model_without_observers(trained_cnn, good_file):
    with pytest.raises(
        NotCalibratedError, match=r"keras_quant.observe\(model\)"
    ):
        keras_quant.export(trained_cnn, good_file, "int8")
    assert_untouched(good_file)


def test_model_never_calibrated_names_the_points(trained_cnn, good_file):
    observed = keras_quant.observe(trained_cnn)
    with pytest.raises(NotCalibratedError) as error:
        keras_quant.export(observed, good_file, "int16x8")
    for point in ("image", "re_lu", "dense", "probabilities/pre_activation"):
        assert point in str(error.value)
    assert_untouched(good_file)


def test_float_modes_need_no_calibration(trained_cnn, tmp_path):
    result = keras_quant.export(trained_cnn, tmp_path / "m.tflite", "float16")
    assert result.ranges == {}


def test_nan_activations(trained_cnn, digits, good_file):
    observed = keras_quant.observe(trained_cnn)
    x = digits["val"][0].copy()
    x[3, 2, 2, 0] = np.nan
    observed.predict(x, verbose=0)
    with pytest.raises(NonFiniteActivationError, match=r"image \(1\)"):
        keras_quant.export(observed, good_file, "int8")
    assert_untouched(good_file)


@pytest.mark.parametrize("name", ["model.tfl", "model.keras", "model"])
def test_wrong_suffix(calibrated_cnn, good_file, name):
    with pytest.raises(ValueError, match=r"end in '.tflite'"):
        keras_quant.export(calibrated_cnn, good_file.parent / name)
    assert_untouched(good_file)


def test_unwritable_folder(calibrated_cnn, good_file):
    target = good_file / "m.tflite"  # a folder that is a file
    with pytest.raises(UnwritablePathError, match="folder you can write to"):
        keras_quant.export(calibrated_cnn, target)
    assert_untouched(good_file)


def test_read_only_folder(calibrated_cnn, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "m.tflite").write_bytes(b"a good model")
    folder.chmod(0o555)
    try:
        writable = os.access(folder, os.W_OK)
        if writable:  # root ignores permissions; use a folder root cannot write
            folder = "/proc/keras-quant"
        with pytest.raises(UnwritablePathError):
            keras_quant.export(calibrated_cnn, f"{folder}/m.tflite")
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert (tmp_path / "locked" / "m.tflite").read_bytes() == b"a good model"


@pytest.mark.parametrize("thing", [None, "model.keras", np.zeros(3)], ids=str)
def test_not_a_keras_model(thing, good_file):
    with pytest.raises(UnsupportedModelError, match="Expected a Keras 3 model"):
        keras_quant.export(thing, good_file, "float32")
    assert_untouched(good_file)


def test_failed_conversion_keeps_the_existing_file(digits, good_file):
    class Untracked(keras.layers.Layer):
        def call(self, x):
            return keras.ops.sin(x)  # no int8 kernel for SIN

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, Untracked()(inputs))
    observed = keras_quant.observe(model)
    observed.predict(digits["val"][0], verbose=0)
    with pytest.raises(keras_quant.ExportError, match="SIN"):
        keras_quant.export(observed, good_file, "int8_only")
    assert_untouched(good_file)


def observed_on(layers_stack, shape, data):
    inputs = keras.Input(shape)
    value = inputs
    for layer in layers_stack:
        value = layer(value)
    observed = keras_quant.observe(keras.Model(inputs, value))
    observed.predict(data, verbose=0)
    return observed


PREPROCESSING_AND_TRANSPOSED = {
    "rescaling_offset": [
        keras.layers.Rescaling(1 / 127.5, offset=-1),
        keras.layers.Conv2D(4, 3, activation="relu"),
    ],
    "normalization": [
        keras.layers.Normalization(
            mean=[60.0, 120.0], variance=[900.0, 3600.0]
        ),
        keras.layers.Conv2D(4, 3),
    ],
    "conv_transpose": [
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2DTranspose(3, 3, strides=2, activation="relu"),
    ],
}


@pytest.mark.parametrize("case", sorted(PREPROCESSING_AND_TRANSPOSED))
@pytest.mark.parametrize("mode", ["int8_only", "int16x8"])
def test_layers_tflite_splits_are_fully_quantized(case, mode):
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 255, (64, 8, 8, 2)).astype("float32")
    stack = [
        type(layer).from_config(layer.get_config())
        for layer in PREPROCESSING_AND_TRANSPOSED[case]
    ]
    observed = observed_on(stack, (8, 8, 2), data)
    tflite = conversion.convert(observed, mode)
    assert inspection.summarize(tflite).float_ops() in (
        [],
        ["QUANTIZE", "DEQUANTIZE"],
    )
    expected = observed.predict(data, verbose=0)
    error = np.abs(litert.run(tflite, data) - expected).max()
    assert error <= 0.05 * np.ptp(expected)


def average_model(replay_samples="auto"):
    """Average is an ADD then a MUL in TFLite: no observer sees the ADD."""
    data = np.random.default_rng(0).random((32, 6), "float32")
    a, b = keras.layers.Dense(4), keras.layers.Dense(4)
    inputs = keras.Input((6,))
    outputs = keras.layers.Average()([a(inputs), b(inputs)])
    model = keras.Model(inputs, outputs)
    observed = keras_quant.observe(model, replay_samples=replay_samples)
    observed.predict(data, verbose=0)
    return observed, data


@pytest.mark.parametrize(
    "layers, shape",
    [
        ("average", (6,)),
        (
            [
                keras.layers.Conv2D(4, 3),
                keras.layers.Activation("hard_sigmoid"),
            ],
            (8, 8, 3),
        ),
    ],
    ids=["average", "hard_sigmoid"],
)
def test_int16x8_covers_tensors_no_observer_sees(layers, shape, tmp_path):
    """The replay sample gives a range to the ADD inside Average and to
    the `+ 3` the converter folds into a hard_sigmoid's convolution, which
    the statistics route of D2 refused."""
    if layers == "average":
        observed, data = average_model()
    else:
        data = np.random.default_rng(0).random((32, *shape), "float32")
        observed = observed_on(layers, shape, data)
    result = keras_quant.export(observed, tmp_path / "m.tflite", "int16x8")
    assert inspection.summarize(result.path).float_ops() == [
        "QUANTIZE",
        "DEQUANTIZE",
    ]
    expected = observed.predict(data, verbose=0)
    found = litert.run(result.path, data)
    # int8 weights dominate: a weight step is 1/254 of each channel's range.
    assert np.max(np.abs(found - expected)) <= 0.01 * np.ptp(expected)


def test_without_replay_sample_unobserved_tensors_are_refused(good_file):
    observed, _ = average_model(replay_samples=0)
    with pytest.raises(keras_quant.ExportError, match="replay sample"):
        keras_quant.export(observed, good_file, "int16x8")
    assert_untouched(good_file)
    result = keras_quant.export(observed, good_file.parent / "a.tflite", "int8")
    assert result.size_bytes > 0  # the fake-quant route's float fallback


def test_converter_errors_become_export_errors(good_file):
    inputs = keras.Input((5, 3))
    observed = keras_quant.observe(
        keras.Model(inputs, keras.layers.LSTM(4)(inputs))
    )
    with pytest.raises(keras_quant.ExportError, match="cannot convert"):
        keras_quant.export(observed, good_file, "float32")
    assert_untouched(good_file)


def test_sequential_model_on_tabular_data(tmp_path):
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    # The model input is quantized per tensor: features on scales from
    # 0.001 to 4000 would share one grid, with or without keras-quant.
    x = (data.data / data.data.max(axis=0)).astype("float32")
    y = data.target.astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    keras.utils.set_random_seed(0)
    normalizer = keras.layers.Normalization()
    normalizer.adapt(x[:400])
    model = keras.Sequential(
        [
            keras.Input((30,)),
            normalizer,
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    observed = keras_quant.observe(model)
    observed.fit(
        x[:400],
        y[:400],
        validation_data=(x[400:480], y[400:480]),
        epochs=20,
        verbose=0,
        callbacks=[keras_quant.callbacks.RangeCalibration()],
    )
    result = keras_quant.export(
        observed,
        tmp_path / "m.tflite",
        "int8_only",
        validation_data=(x[480:], y[480:]),
    )
    assert result.float_metrics["accuracy"] > 0.9
    assert result.metric_drop("accuracy") <= 0.01
    assert inspection.summarize(result.path).float_ops() == []


def test_dead_activations_export_a_model_litert_runs(tmp_path):
    inputs = keras.Input((6,))
    dead = keras.layers.Dense(
        4, activation="relu", kernel_initializer="zeros", name="dead"
    )
    outputs = keras.layers.Dense(3)(dead(inputs))
    observed = keras_quant.observe(keras.Model(inputs, outputs))
    data = np.random.default_rng(0).random((16, 6), "float32")
    observed.predict(data, verbose=0)
    result = keras_quant.export(observed, tmp_path / "m.tflite", "int8_only")
    assert result.ranges["dead"] == (0.0, 1.0)  # silent, not 1e-6 wide
    np.testing.assert_allclose(
        litert.run(result.path, data),
        observed.predict(data, verbose=0),
        atol=float(np.ptp(observed.predict(data, verbose=0))) / 100,
    )


def test_per_pixel_normalization_is_refused_for_integer_modes(
    digits, good_file
):
    x = digits["train"][0]
    normalization = keras.layers.Normalization(axis=(1, 2, 3), name="pixels")
    normalization.adapt(x)  # some pixels never vary: 1/std reaches 1e7
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(10)(
        keras.layers.Flatten()(normalization(inputs))
    )
    observed = keras_quant.observe(keras.Model(inputs, outputs))
    observed.predict(digits["val"][0], verbose=0)
    for mode in ("int8", "int8_only", "int16x8"):
        with pytest.raises(
            keras_quant.ExportError, match="'pixels' multiplies"
        ):
            keras_quant.export(observed, good_file, mode)
    assert_untouched(good_file)
    result = keras_quant.export(
        observed, good_file.parent / "f.tflite", "float16"
    )
    assert result.size_bytes > 0


def test_export_many_shares_one_float32_reference(calibrated_cnn, tmp_path):
    results = keras_quant.export_many(
        calibrated_cnn,
        {mode: tmp_path / f"m_{mode}.tflite" for mode in ("int8", "float32")},
    )
    int8, float32 = results
    assert int8.float32_size_bytes == float32.size_bytes
    assert float32.size_ratio == 1.0


def test_export_many_reports_failures_to_on_error(trained_cnn, tmp_path):
    observed = keras_quant.observe(trained_cnn)  # never calibrated
    failed = []
    results = keras_quant.export_many(
        observed,
        {"int8": tmp_path / "a.tflite", "float16": tmp_path / "b.tflite"},
        on_error=lambda mode, error: failed.append((mode.value, type(error))),
    )
    assert failed == [("int8", NotCalibratedError)]
    assert [r.mode.value for r in results] == ["float16"]
