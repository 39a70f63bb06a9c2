"""`analyze`: per-point errors, checked against NumPy on the same tensors."""

import keras
import numpy as np
import pytest

import keras_quant
from keras_quant.conversion import routes as conversion
from keras_quant.measurement import sensitivity
from keras_quant.observation.observed_model import find_observers


def test_errors_match_numpy_on_the_same_tensors(calibrated_cnn, digits):
    x = digits["test"][0][:200]
    result = keras_quant.analyze(calibrated_cnn, x)
    tensors = sensitivity.point_tensors(calibrated_cnn, x)
    assert result.samples == 200
    assert {p.point for p in result.points} == set(tensors)
    for found in result.points:
        f, q = (np.asarray(t, np.float64) for t in tensors[found.point])
        relative = np.linalg.norm(f - q) / np.linalg.norm(f)
        sqnr = 10 * np.log10(np.sum(f**2) / np.sum((f - q) ** 2))
        assert found.relative_error == pytest.approx(relative, rel=1e-9)
        assert found.sqnr_db == pytest.approx(sqnr, rel=1e-9)
    errors = [p.relative_error for p in result.points]
    assert errors == sorted(errors, reverse=True)


def test_float_tensors_are_the_keras_activations(calibrated_cnn, digits):
    x = digits["test"][0][:64]
    tensors = sensitivity.point_tensors(calibrated_cnn, x)
    # Observers inside a `Split` have no symbolic output to read.
    observers = [o for o in find_observers(calibrated_cnn) if o._inbound_nodes]
    assert len(observers) >= 4
    probe = keras.Model(calibrated_cnn.inputs, [o.output for o in observers])
    for observer, expected in zip(observers, probe.predict(x, verbose=0)):
        np.testing.assert_allclose(
            tensors[observer.point][0], expected, rtol=1e-4, atol=1e-5
        )


def test_int8_tensors_lie_on_the_grid_of_their_range(calibrated_cnn, digits):
    tensors = sensitivity.point_tensors(calibrated_cnn, digits["test"][0])
    for observer in find_observers(calibrated_cnn):
        low, high = observer.range()
        scale = (high - low) / 255.0
        values = np.unique(tensors[observer.point][1])
        assert len(values) <= 256
        steps = np.diff(values) / scale
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-2)
        assert values.min() >= low - scale and values.max() <= high + scale


def test_added_error_is_the_error_beyond_the_inputs(calibrated_models, digits):
    model = calibrated_models["residual_cnn"]
    result = keras_quant.analyze(model, digits["test"])
    upstream = sensitivity._upstream_points(model)
    by_point = {p.point: p for p in result.points}
    # The Add joins two branches: its point has two points upstream.
    assert max(len(points) for points in upstream.values()) == 2
    for point, found in by_point.items():
        before = [by_point[p].relative_error for p in upstream[point]]
        assert found.added_error == pytest.approx(
            found.relative_error - max(before, default=0.0)
        )
    inputs = [p for p in result.points if p.layer is None]
    assert (
        len(inputs) == 1 and inputs[0].added_error == inputs[0].relative_error
    )


def test_layer_gains_are_measured_output_errors(calibrated_cnn, digits):
    x = digits["val"][0][:200]
    result = keras_quant.analyze(calibrated_cnn, x)
    reference = calibrated_cnn.predict(x, verbose=0)

    def output_error(keep_float):
        tflite = conversion.convert(
            calibrated_cnn, "int8", keep_float=keep_float
        )
        found = keras_quant.run_tflite(tflite, x)
        return np.linalg.norm(found - reference) / np.linalg.norm(reference)

    assert result.output_error == pytest.approx(output_error(()), rel=1e-5)
    layers = {p.layer for p in result.points if p.layer is not None}
    assert {g.layer for g in result.layers} == layers
    for found in result.layers:
        assert found.output_error == pytest.approx(
            output_error([found.layer]), rel=1e-5
        )
        assert found.gain == pytest.approx(
            result.output_error - found.output_error
        )
    gains = [g.gain for g in result.layers]
    assert gains == sorted(gains, reverse=True)
    assert result.layers_to_keep_float() == [
        g.layer for g in result.layers if g.gain > 0
    ]


def test_table_and_dict_list_every_point(calibrated_cnn, digits):
    result = keras_quant.analyze(calibrated_cnn, digits["val"], samples=50)
    assert result.samples == 50
    lines = result.table().splitlines()
    assert lines[0].split()[:2] == ["point", "layer"]
    assert lines[len(result.points) + 3].startswith("layer kept float")
    assert len(lines) == 1 + len(result.points) + 3 + len(result.layers)
    assert len(result.to_dict()["points"]) == len(result.points)


def test_uncalibrated_model_is_refused(trained_cnn, digits):
    with pytest.raises(keras_quant.NotCalibratedError, match="evaluate"):
        keras_quant.analyze(keras_quant.observe(trained_cnn), digits["val"])
