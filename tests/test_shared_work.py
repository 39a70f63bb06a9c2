"""One export run traces, freezes and converts each thing once, and the
engine quantizes while the float modes convert (decision D48)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import keras_quant
from keras_quant.conversion import graphs
from keras_quant.conversion import routes
from keras_quant.runtime import inspection

RNG = np.random.default_rng(0)
SIX_MODES = ("float32", "dynamic", "int8", "int8_only", "float16", "int16x8")


def counted(monkeypatch, module, name):
    """Counts the calls of `module.name`, which still runs."""
    calls = []
    real = getattr(module, name)

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def export_six(model, folder):
    paths = {mode: folder / f"{mode}.tflite" for mode in SIX_MODES}
    return paths, keras_quant.export_many(model, paths)


def test_six_modes_trace_the_model_once(calibrated_cnn, tmp_path, monkeypatch):
    scoped = counted(monkeypatch, graphs, "scoped_float_graph")
    plain = counted(monkeypatch, graphs, "float_graph")
    conversions = counted(monkeypatch, routes, "run_frozen")
    export_six(calibrated_cnn, tmp_path)
    assert len(scoped) == 1 and plain == []
    # float32 (the engine's float model too), dynamic, float16.
    assert len(conversions) == 3


def test_float_modes_name_no_engine_scope_and_match_the_converter(
    trained_cnn, calibrated_cnn, digits, tmp_path
):
    paths, _ = export_six(calibrated_cnn, tmp_path)
    stock = tf.lite.TFLiteConverter.from_keras_model(trained_cnn).convert()
    x = digits["val"][0][:64]
    for mode in ("float32", "dynamic", "float16"):
        names = [
            t.name for t in inspection.summarize(paths[mode]).tensors.values()
        ]
        assert not [name for name in names if "kq_op" in name], mode
    np.testing.assert_array_equal(
        run(paths["float32"].read_bytes(), x), run(stock, x)
    )


def run(tflite, x):
    runner = Interpreter(model_content=tflite)
    runner.resize_tensor_input(0, x.shape)
    runner.allocate_tensors()
    runner.set_tensor(runner.get_input_details()[0]["index"], x)
    runner.invoke()
    return runner.get_tensor(runner.get_output_details()[0]["index"])


@pytest.mark.parametrize("steps", [12, None])
def test_float_modes_keep_a_recurrent_loop_the_engine_unrolls(steps, tmp_path):
    inputs = keras.Input((steps, 4), batch_size=1)
    model = keras.Model(
        inputs, keras.layers.Dense(3)(keras.layers.LSTM(8)(inputs))
    )
    observed = keras_quant.observe(model)
    observed.predict(RNG.normal(size=(16, 12, 4)), batch_size=1, verbose=0)
    paths = {m: tmp_path / f"{m}.tflite" for m in ("float32", "int8")}
    keras_quant.export_many(observed, paths)
    ops = {
        mode: {op.name for op in inspection.summarize(path).ops}
        for mode, path in paths.items()
    }
    assert "WHILE" in ops["float32"]
    assert ("WHILE" in ops["int8"]) == (steps is None)
