"""Integer and bool model inputs keep a replay sample, as float ones do.

TFLite does not quantize an integer input (token ids) or a bool one (a
mask), so no observer reads it; the observed model keeps its first rows
itself, for the export engine to replay (decision D30).
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_quant
from keras_quant.conversion.routes import convert
from keras_quant.observation import recording
from keras_quant.observation.observed_model import REPLAY_MAX
from keras_quant.observation.observed_model import collected_ranges
from keras_quant.observation.observed_model import replay_sample
from keras_quant.runtime.inspection import summarize

REPOSITORY = os.path.dirname(os.path.dirname(__file__))


def token_model():
    """Token ids into an embedding, attention and LayerNormalization,
    whose inner tensors only a replay gives ranges to."""
    keras.utils.set_random_seed(0)
    ids = keras.Input((12,), dtype="int32", name="tokens")
    embedded = layers.Embedding(50, 16)(ids)
    attended = layers.MultiHeadAttention(2, 8)(embedded, embedded)
    hidden = layers.LayerNormalization()(attended + embedded)
    pooled = layers.GlobalAveragePooling1D()(hidden)
    return keras.Model(ids, layers.Dense(3)(pooled))


def tokens(count, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 50, (count, 12)).astype("int32")


def test_an_integer_input_keeps_its_first_rows_exactly(tmp_path):
    observed = keras_quant.observe(token_model(), replay_samples=40)
    data = tokens(100)
    observed.predict(data, batch_size=32, verbose=0)
    (sample,) = replay_sample(observed)
    assert sample.dtype == np.int32
    np.testing.assert_array_equal(sample, data[:40])
    # Not quantized, so no range: no observer reads the input.
    assert not any(o.point == "tokens" for o in observed.observers)
    assert "tokens" not in collected_ranges(observed)
    observed.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(replay_sample(loaded)[0], data[:40])
    keras_quant.reset_ranges(loaded)
    assert replay_sample(loaded) is None


def test_integer_and_bool_inputs_keep_samples_beside_a_float_one():
    features = keras.Input((5,), name="features")
    ids = keras.Input((6,), dtype="int32", name="ids")
    mask = keras.Input((6,), dtype="bool", name="mask")
    embedded = layers.Flatten()(layers.Embedding(20, 2)(ids))
    kept = keras.ops.repeat(keras.ops.cast(mask, "float32"), 2, axis=1)
    joined = layers.Concatenate()([features, embedded * kept])
    model = keras.Model([features, ids, mask], layers.Dense(2)(joined))
    observed = keras_quant.observe(model, replay_samples=24)
    rng = np.random.default_rng(1)
    data = [
        rng.normal(size=(40, 5)).astype("float32"),
        rng.integers(0, 20, (40, 6)).astype("int32"),
        rng.random((40, 6)) > 0.5,
    ]
    observed.predict(data, batch_size=16, verbose=0)
    sample = replay_sample(observed)
    assert [s.dtype for s in sample] == [np.float32, np.int32, np.bool_]
    np.testing.assert_allclose(sample[0], data[0][:24], rtol=2**-8)
    np.testing.assert_array_equal(sample[1], data[1][:24])
    np.testing.assert_array_equal(sample[2], data[2][:24])


def test_an_integer_sample_has_the_count_limits_of_a_float_one():
    ids = keras.Input((12,), dtype="int32")
    pooled = layers.GlobalAveragePooling1D()(layers.Embedding(50, 4)(ids))
    observed = keras_quant.observe(keras.Model(ids, layers.Dense(2)(pooled)))
    data = tokens(REPLAY_MAX + 44)
    observed.predict(data, batch_size=100, verbose=0)
    np.testing.assert_array_equal(replay_sample(observed)[0], data[:REPLAY_MAX])


@pytest.mark.parametrize(
    "steps", [("xla", "host"), ("host", "xla"), ("host", "xla", "host")]
)
def test_an_integer_sample_continues_between_xla_and_host_steps(steps):
    observed = keras_quant.observe(token_model(), replay_samples=40)
    data = tokens(48, seed=1)
    for kind, chunk in zip(steps, np.array_split(data, len(steps))):
        step = tf.function(observed, jit_compile=kind == "xla")
        for start in range(0, len(chunk), 8):
            step(chunk[start : start + 8])
    np.testing.assert_array_equal(replay_sample(observed)[0], data[:40])


def test_an_integer_sample_records_when_the_observers_record():
    observed = keras_quant.observe(token_model(), replay_samples=16)
    with recording.observers_paused(observed):
        observed.predict(tokens(8, seed=1), verbose=0)
    assert replay_sample(observed) is None
    first = tokens(16, seed=2)
    observed.predict(first, verbose=0)
    # A run cut short gives back the sample from before it.
    recording.begin_run(observed)
    assert replay_sample(observed) is None
    observed(tokens(16, seed=3))
    with pytest.warns(UserWarning, match="did not finish"):
        recording.abandon_unfinished(observed)
    np.testing.assert_array_equal(replay_sample(observed)[0], first)


@pytest.mark.slow
def test_a_token_model_exports_int16x8_and_int8_only():
    observed = keras_quant.observe(token_model())
    observed.predict(tokens(64), verbose=0)
    int16x8 = summarize(convert(observed, "int16x8"))
    assert int16x8.float_ops() == ["DEQUANTIZE"]  # the float output
    assert summarize(convert(observed, "int8_only")).float_ops() == []


# Run in a child with another Keras backend: JAX updates the sample in
# its compiled steps, PyTorch calls back to Python.
CHILD = """
    import sys
    import keras
    import numpy as np
    import keras_quant
    from keras_quant.observation.observed_model import replay_sample

    ids = keras.Input((6,), dtype="int32")
    mask = keras.Input((6,), dtype="bool")
    embedded = keras.layers.Embedding(20, 4)(ids)
    kept = keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    flat = keras.layers.Flatten()(embedded * kept)
    model = keras.Model([ids, mask], keras.layers.Dense(2)(flat))
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 20, (50, 6)).astype("int32")]
    data.append(rng.random((50, 6)) > 0.5)
    observed = keras_quant.observe(model, replay_samples=30, save_modes=())
    observed.predict(data, batch_size=8, verbose=0)
    path = sys.argv[1] + "/m.keras"
    observed.save(path)
    for holder in (observed, keras.models.load_model(path)):
        sample = replay_sample(holder)
        assert [s.dtype for s in sample] == [np.int32, np.bool_], sample
        for kept_rows, rows in zip(sample, data):
            np.testing.assert_array_equal(kept_rows, rows[:30])
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_integer_and_bool_samples_on_other_backends(backend, tmp_path):
    pytest.importorskip(backend)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        env={**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": REPOSITORY},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
