import collections
import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_quant
from keras_quant.observation import recording
from keras_quant.observation.layers import Split
from keras_quant.observation.observed_model import replay_sample
from keras_quant.observation.observers import read
from tests.conftest import small_cnn
from tests.conftest import traced_graph


def test_observed_model_computes_the_same_outputs(trained_cnn, digits):
    observed = keras_quant.observe(trained_cnn)
    x = digits["test"][0]
    np.testing.assert_array_equal(
        observed.predict(x, verbose=0), trained_cnn.predict(x, verbose=0)
    )


def test_training_the_observed_model_trains_the_original(digits):
    keras.utils.set_random_seed(0)
    model = small_cnn()
    observed = keras_quant.observe(model)
    before = [w.copy() for w in model.get_weights()]
    observed.fit(*digits["train"], epochs=1, verbose=0)
    after = model.get_weights()
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))
    x = digits["test"][0][:32]
    np.testing.assert_allclose(observed(x), model(x), atol=1e-6)


def test_observe_compiles_like_the_original(trained_cnn):
    observed = keras_quant.observe(trained_cnn)
    assert observed.compiled
    assert (
        observed.get_compile_config()["loss"]
        == (trained_cnn.get_compile_config()["loss"])
    )


def test_one_observer_per_point(trained_cnn):
    observed = keras_quant.observe(trained_cnn)
    points = [p.name for p in keras_quant.find_points(trained_cnn)]
    assert [o.point for o in observed.observers] == points
    splits = [layer for layer in observed.layers if isinstance(layer, Split)]
    assert [s.layer.name for s in splits] == ["probabilities"]


def test_a_split_layer_is_computed_once_while_it_records(trained_cnn, digits):
    """The softmax layer's observed logits come from the one computation
    of the layer: the recording graph has the plain graph's MatMuls, the
    outputs are the original model's, the range that of the logits."""
    observed = keras_quant.observe(trained_cnn)
    x = digits["val"][0][:64]
    np.testing.assert_array_equal(
        observed.predict(x, verbose=0), trained_cnn.predict(x, verbose=0)
    )
    dense = trained_cnn.get_layer("probabilities")
    features = keras.Model(trained_cnn.inputs, dense.input).predict(
        x, verbose=0
    )
    logits = features @ dense.kernel.numpy() + dense.bias.numpy()
    split = next(layer for layer in observed.layers if isinstance(layer, Split))
    np.testing.assert_allclose(
        split.observers[0].range(),
        (min(logits.min(), 0.0), logits.max()),
        rtol=1e-5,
    )

    def matmuls(model):
        graph = traced_graph(model, training=False)
        return [op.type for op in graph.get_operations()].count("MatMul")

    assert matmuls(observed) == matmuls(trained_cnn)


def counting_mlp(traces, batch_size=None):
    """A small MLP whose Lambda layer appends to `traces` when traced."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,), batch_size=batch_size)
    x = keras.layers.Dense(16, activation="relu")(inputs)
    x = keras.layers.Lambda(lambda t: traces.append(1) or t)(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def test_predict_traces_once_for_a_smaller_last_batch(digits):
    """40 inputs in batches of 32 end with a batch of 8: Keras traces a
    plain model's predict twice, the observed model's once, and every
    batch, the last included, is computed and recorded."""
    traces = []
    model = counting_mlp(traces)
    observed = keras_quant.observe(model)
    x = digits["test"][0][:40].reshape(40, -1)
    traces.clear()
    outputs = observed.predict(x, batch_size=32, verbose=0)
    assert len(traces) == 1
    np.testing.assert_allclose(outputs, model(x), atol=1e-6)
    x_last = x[32:].copy()
    x_last[0, 0] = 7.0  # only the last batch holds this maximum
    traces.clear()
    keras_quant.reset_ranges(observed)
    observed.predict(np.concatenate([x[:32], x_last]), verbose=0)
    assert len(traces) == 0
    assert observed.observers[0].range() == (0.0, 7.0)


def test_predict_with_a_fixed_batch_size_keeps_keras_tracing(digits):
    """A model whose inputs fix the batch size is traced as Keras does."""
    traces = []
    observed = keras_quant.observe(counting_mlp(traces, batch_size=8))
    x = digits["test"][0][:16].reshape(16, -1)
    traces.clear()
    observed.predict(x, batch_size=8, verbose=0)
    assert len(traces) == 1
    assert observed.observers[0].range() == (0.0, float(x.max()))


class FlattenWithBatchSize(keras.layers.Layer):
    """Reshapes with the batch size as a Python int: traceable only when
    the batch size is known."""

    def call(self, inputs):
        return keras.ops.reshape(inputs, (int(inputs.shape[0]), -1))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], int(np.prod(input_shape[1:])))


def test_predict_works_when_a_layer_needs_the_batch_size(digits):
    """A model that cannot be traced with the batch size unknown predicts
    as Keras predicts it, and its observers record."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(10)(FlattenWithBatchSize()(x))
    model = keras.Model(inputs, outputs)
    observed = keras_quant.observe(model)
    x = digits["test"][0][:64].reshape(64, 8, 8, 1)
    np.testing.assert_allclose(
        observed.predict(x, batch_size=32, verbose=0), model(x), atol=1e-5
    )
    assert all(o.calibrated for o in observed.observers)


def test_observing_twice_is_refused(calibrated_cnn):
    with pytest.raises(ValueError, match="already has observers"):
        keras_quant.observe(calibrated_cnn)


def test_evaluate_calibrates_without_callbacks(trained_cnn, digits):
    observed = keras_quant.observe(trained_cnn)
    observed.fit(*digits["train"], epochs=1, verbose=0)  # default: no record
    assert not any(
        o.calibrated for o in observed.observers if not o.fixed_range
    )
    observed.evaluate(*digits["val"], verbose=0)
    assert all(o.calibrated for o in observed.observers)
    assert observed.observers[0].range() == (0.0, 1.0)


def test_reset_ranges(calibrated_cnn):
    keras_quant.reset_ranges(calibrated_cnn)
    assert [o.point for o in calibrated_cnn.observers if o.calibrated] == [
        "probabilities"  # the softmax output's range is fixed by the spec
    ]


def in_fresh_python(script, path):
    """The last line `script` prints in a new interpreter, given `path`."""
    found = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return found.stdout.strip().splitlines()[-1]


def test_saved_model_loads_with_ranges_and_no_custom_objects(
    calibrated_cnn, digits, tmp_path
):
    calibrated_cnn.save_modes = ()
    calibrated_cnn.save(tmp_path / "m.keras")
    loaded = json.loads(
        in_fresh_python(
            "import keras, keras_quant, json, sys;"
            "m = keras.models.load_model(sys.argv[1]);"
            "print(json.dumps([[o.point, o.range()] for o in m.observers]))",
            tmp_path / "m.keras",
        )
    )
    expected = [[o.point, list(o.range())] for o in calibrated_cnn.observers]
    assert loaded == expected


def test_original_model_stays_free_of_keras_quant(trained_cnn, tmp_path):
    keras_quant.observe(trained_cnn)
    trained_cnn.save(tmp_path / "plain.keras")
    modules = in_fresh_python(
        "import keras, sys;"
        "m = keras.models.load_model(sys.argv[1]);"
        "print(sorted({type(l).__module__.split('.')[0] for l in m.layers}))",
        tmp_path / "plain.keras",
    )
    assert modules == "['keras']"


def test_save_writes_tflite_and_report_beside(calibrated_cnn, tmp_path):
    calibrated_cnn.save_modes = ("int8", "float16")
    calibrated_cnn.save(tmp_path / "m.keras")
    assert sorted(os.listdir(tmp_path)) == [
        "m.keras",
        "m.quant.json",
        "m_float16.tflite",
        "m_int8.tflite",
    ]
    report = json.loads((tmp_path / "m.quant.json").read_text())
    assert [e["mode"] for e in report["exports"]] == ["int8", "float16"]
    sizes = {e["mode"]: e["size_bytes"] for e in report["exports"]}
    assert sizes["int8"] == os.path.getsize(tmp_path / "m_int8.tflite")
    assert report["skipped"] == {}


def test_save_before_calibration_skips_range_modes(trained_cnn, tmp_path):
    observed = keras_quant.observe(trained_cnn, save_modes=("int8", "dynamic"))
    with pytest.warns(UserWarning, match="skipped 'int8'"):
        observed.save(tmp_path / "m.keras")
    assert sorted(os.listdir(tmp_path)) == [
        "m.keras",
        "m.quant.json",
        "m_dynamic.tflite",
    ]
    report = json.loads((tmp_path / "m.quant.json").read_text())
    assert report["skipped"]["int8"].startswith("NotCalibratedError")
    assert "image" in report["skipped"]["int8"]


def test_save_modes_survive_save_and_load(trained_cnn, tmp_path):
    observed = keras_quant.observe(trained_cnn, save_modes=("float16",))
    observed.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.save_modes == ("float16",)


def test_unknown_save_mode_is_rejected(trained_cnn):
    with pytest.raises(ValueError, match="Received: mode='int4'"):
        keras_quant.observe(trained_cnn, save_modes=("int4",))


def test_model_checkpoint_exports_each_save(digits, tmp_path):
    keras.utils.set_random_seed(0)
    observed = keras_quant.observe(small_cnn(), save_modes=("int8_only",))
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "e{epoch}.keras")
    observed.fit(
        *digits["train"],
        validation_data=digits["val"],
        epochs=2,
        verbose=0,
        callbacks=[keras_quant.callbacks.RangeCalibration(), checkpoint],
    )
    for epoch in (1, 2):
        assert (tmp_path / f"e{epoch}_int8_only.tflite").exists()
    assert read(observed.observers[0].batches_seen_) > 0


def test_mixed_architectures_observe(calibrated_models):
    for observed in calibrated_models.values():
        assert all(o.calibrated for o in observed.observers)


def test_set_recording_reaches_already_traced_steps(digits):
    keras.utils.set_random_seed(0)
    observed = keras_quant.observe(small_cnn())
    observed.fit(*digits["train"], epochs=1, verbose=0)  # traced: no record
    keras_quant.observation.observed_model.set_recording(
        observed, keras_quant.observation.observers.RECORD_TRAINING
    )
    observed.fit(*digits["train"], epochs=1, batch_size=100, verbose=0)
    assert read(observed.observers[0].batches_seen_) == 11
    assert observed.observers[0].traced_mask == 2


def test_save_with_nan_activations_still_saves(trained_cnn, digits, tmp_path):
    observed = keras_quant.observe(trained_cnn, save_modes=("int8", "float16"))
    x = digits["val"][0].copy()
    x[0, 0, 0, 0] = np.nan
    observed.predict(x, verbose=0)
    with pytest.warns(UserWarning, match="NonFiniteActivationError"):
        observed.save(tmp_path / "m.keras")
    report = json.loads((tmp_path / "m.quant.json").read_text())
    assert report["skipped"]["int8"].startswith("NonFiniteActivationError")
    assert [e["mode"] for e in report["exports"]] == ["float16"]
    assert (tmp_path / "m.keras").exists()


def test_input_observers_keep_the_first_inputs_they_record(tmp_path):
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    observed = keras_quant.observe(model, replay_samples=40)
    data = np.random.default_rng(0).normal(size=(100, 5)).astype("float32")
    observed.predict(data, batch_size=32, verbose=0)
    (sample,) = replay_sample(observed)
    # bfloat16 keeps 8 bits of mantissa: within 0.4 % of each input.
    np.testing.assert_allclose(sample, data[:40], rtol=2**-8, atol=1e-30)
    observed.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(replay_sample(loaded)[0], sample)
    keras_quant.reset_ranges(loaded)
    assert replay_sample(loaded) is None


@pytest.mark.parametrize(
    "steps", [("xla", "host"), ("host", "xla"), ("host", "xla", "host")]
)
def test_replay_sample_continues_between_xla_and_host_steps(steps):
    """A step compiled by XLA cannot call back to Python and keeps the
    sample in its variables; the other steps keep it on the host. Each
    new trace takes over where the other kind stopped."""
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    observed = keras_quant.observe(model, replay_samples=40)
    data = np.random.default_rng(1).normal(size=(48, 5)).astype("float32")
    for kind, chunk in zip(steps, np.array_split(data, len(steps))):
        step = tf.function(observed, jit_compile=kind == "xla")
        for start in range(0, len(chunk), 8):
            step(chunk[start : start + 8])
    (sample,) = replay_sample(observed)
    np.testing.assert_allclose(sample, data[:40], rtol=2**-8, atol=1e-30)


def test_replay_sample_is_kept_on_the_host_in_a_traced_step():
    """A TensorFlow step hands the recorded inputs to Python in one op
    and assigns none of the sample's variables; they are written when
    the state is read or saved."""
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    observed = keras_quant.observe(model, replay_samples=8)
    (observer,) = [
        o for o in recording.find_observers(observed) if o.replay is not None
    ]
    graph = traced_graph(observed, False)
    kinds = collections.Counter(op.type for op in graph.get_operations())
    assert kinds["PyFunc"] == 1
    written = {
        op.inputs[0].op.name
        for op in graph.get_operations()
        if op.type == "AssignVariableOp"
    }
    assert not any("sample" in name for name in written)
    data = np.arange(30, dtype="float32").reshape(6, 5)
    observed.predict(data, verbose=0)
    assert int(observer.samples_kept_.numpy()) == 0  # not yet written
    state = observer.state_values()
    np.testing.assert_array_equal(state[-2][:6], data)
    assert state[-1] == 6


def test_no_replay_sample_when_asked_for_none():
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    observed = keras_quant.observe(model, replay_samples=0)
    observed.predict(np.ones((8, 5), "float32"), verbose=0)
    assert replay_sample(observed) is None


def test_saved_rows_are_announced_once_and_can_be_stripped(
    tmp_path, digits, capsys
):
    # The replay sample is rows of the user's data: save says so, once
    # per model, and `strip_samples` / `keras-quant strip` erase them
    # from a saved file.
    from keras_quant import cli
    from keras_quant.observation.observed_model import kept_rows
    from keras_quant.observation.observed_model import replay_samples_of

    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(inputs))
    model = keras_quant.observe(keras.Model(inputs, outputs), save_modes=())
    x = digits["val"][0][:40]
    model.predict(x, verbose=0)
    with pytest.warns(UserWarning, match="holds 40 input rows"):
        model.save(tmp_path / "a.keras")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        model.save(tmp_path / "b.keras")
    assert not [w for w in said if "input rows" in str(w.message)]  # once

    def rows_in(path):
        return kept_rows(keras.models.load_model(path))

    assert rows_in(tmp_path / "a.keras") == 40
    assert keras_quant.strip_samples(tmp_path / "a.keras") == 40
    stripped = keras.models.load_model(tmp_path / "a.keras")
    assert kept_rows(stripped) == 0
    assert [o.range() for o in stripped.observers] == [
        o.range() for o in model.observers
    ]
    # Not only forgotten: every stored row is overwritten with zeros.
    for sample in replay_samples_of(stripped):
        assert not np.any(sample.state_values()[0])
    assert cli.main(["strip", str(tmp_path / "b.keras")]) == 0
    assert "erased 40 input rows" in capsys.readouterr().out
    assert rows_in(tmp_path / "b.keras") == 0
