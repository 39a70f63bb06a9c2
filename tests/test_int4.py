"""int4 weights: three modes through the engine, blocks, inspection, and
quantization-aware training that the export matches."""

import keras
import numpy as np
import pytest

import keras_quant
from keras_quant.cli import main as cli_main
from keras_quant.conversion import graphs
from keras_quant.measurement import sensitivity
from keras_quant.modes import Mode
from keras_quant.runtime import inspection
from keras_quant.runtime import litert
from tests.conftest import compile_classifier

INT4_MODES = ("int4_weights", "dynamic_int4", "int8x4")


def mlp_cnn():
    """Conv, pooling and two Dense layers (64 inputs to the last)."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D()(x))
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(10)(x)
    return compile_classifier(keras.Model(inputs, outputs), from_logits=True)


@pytest.fixture(scope="module")
def trained(digits):
    keras.utils.set_random_seed(0)
    model = mlp_cnn()
    model.fit(*digits["train"], epochs=6, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def observed(trained, digits):
    observed = keras_quant.observe(trained)
    observed.evaluate(*digits["val"], verbose=0)
    return observed


def int4_weights(path):
    """The int4 tensors of a model (weights; in `int4_weights` mode they
    feed DEQUANTIZE ops)."""
    tensors = inspection.summarize(path).tensors.values()
    return [tensor for tensor in tensors if tensor.dtype == "int4"]


@pytest.mark.parametrize("mode", INT4_MODES)
def test_int4_modes_store_four_bit_weights(observed, digits, mode, tmp_path):
    int8 = keras_quant.export(observed, tmp_path / "int8.tflite", "int8")
    result = keras_quant.export(
        observed, tmp_path / "m.tflite", mode, validation_data=digits["test"]
    )
    assert len(int4_weights(result.path)) == 3  # the conv and both Dense
    assert result.size_bytes < 0.7 * int8.size_bytes
    assert inspection.spec_violations(result.path) == []
    drop = result.metric_drop("accuracy")
    assert drop < 0.05  # digits survive 4-bit weights


def test_blocks_of_input_features(observed, tmp_path):
    result = keras_quant.export(
        observed, tmp_path / "m.tflite", "dynamic_int4", block_size=32
    )
    blocked = [w for w in int4_weights(result.path) if w.block_size]
    assert len(blocked) == 2 and {w.block_size for w in blocked} == {32}
    assert result.block_size == 32


@pytest.mark.parametrize(
    "mode, block_size, error, message",
    [
        ("int8", 32, ValueError, "`block_size` applies to"),
        ("dynamic_int4", 48, ValueError, "one of \\[32, 64, 128, 256\\]"),
        ("dynamic_int4", 128, ValueError, "'dense_.*' has 64 inputs"),
    ],
)
def test_bad_block_size(observed, tmp_path, mode, block_size, error, message):
    with pytest.raises(error, match=message):
        keras_quant.export(
            observed, tmp_path / "m.tflite", mode, block_size=block_size
        )
    assert not (tmp_path / "m.tflite").exists()


def within_one_step(qat, expected, found):
    """Fraction of outputs within one int8 step of the output's range (for
    float outputs, the step of the range the output observer learned)."""
    low, high = qat.observers[-1].range()
    step = (high - low) / 255
    return np.mean(np.abs(expected - found) <= step * (1 + 1e-4))


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode, block_size",
    [("int4_weights", None), ("dynamic_int4", 64), ("int8x4", None)],
)
def test_qat_int4_export_matches_the_keras_model(
    trained, digits, mode, block_size, tmp_path
):
    qat = keras_quant.quantize_aware(trained, mode=mode, block_size=block_size)
    qat.fit(*digits["train"], epochs=1, batch_size=32, verbose=0)
    result = keras_quant.export(
        qat, tmp_path / "m.tflite", mode, block_size=block_size
    )
    x = digits["test"][0]
    expected = qat.predict(x, verbose=0)
    found = litert.run(result.path, x)
    assert within_one_step(qat, expected, found) >= 0.99


def test_qat_refuses_modes_it_cannot_train_for(trained):
    with pytest.raises(ValueError, match="trains for one of"):
        keras_quant.quantize_aware(trained, mode="float16")
    with pytest.raises(ValueError, match="does not divide"):
        keras_quant.quantize_aware(trained, mode="dynamic_int4", block_size=256)


def test_command_line_writes_and_shows_blocks(observed, tmp_path, capsys):
    observed.save_modes = ()
    observed.save(tmp_path / "m.keras")
    code = cli_main(
        [
            "export",
            str(tmp_path / "m.keras"),
            "--mode",
            "dynamic_int4",
            "--block-size",
            "32",
            "-o",
            str(tmp_path / "m.tflite"),
        ]
    )
    assert code == 0
    code = cli_main(["inspect", str(tmp_path / "m.tflite")])
    out = capsys.readouterr().out
    assert code == 0 and "int4" in out and "in blocks of 32" in out
    layer = sensitivity.weighted_layers(observed)[0]
    code = cli_main(
        [
            "export",
            str(tmp_path / "m.keras"),
            "--mode",
            "int8x4",
            "--keep-8bit",
            layer,
            "-o",
            str(tmp_path / "k.tflite"),
        ]
    )
    assert code == 0 and f"8-bit layers ['{layer}']" in capsys.readouterr().out


def test_keep_8bit_keeps_the_named_layers_weights_int8(observed, tmp_path):
    """A mixed file: the kept layer's weights int8 per channel, the others
    int4; its size falls between the two."""
    layers = sensitivity.weighted_layers(observed)
    assert len(layers) == 3
    plain = keras_quant.export(observed, tmp_path / "p.tflite", "int8x4")
    mixed = keras_quant.export(
        observed, tmp_path / "m.tflite", "int8x4", keep_8bit=[layers[-1]]
    )
    int8 = keras_quant.export(observed, tmp_path / "i.tflite", "int8")
    assert mixed.keep_8bit == (layers[-1],)
    assert len(int4_weights(mixed.path)) == 2
    tensors = inspection.summarize(mixed.path).tensors.values()
    kept = [t for t in tensors if layers[-1] in t.name and t.dtype == "int8"]
    assert any(len(t.scales) == 10 for t in kept)  # per channel
    assert plain.size_bytes < mixed.size_bytes < int8.size_bytes
    assert inspection.spec_violations(mixed.path) == []
    assert "8-bit ['" in mixed.label


@pytest.mark.parametrize(
    "mode, keep_8bit, message",
    [
        ("int8", ["dense"], "`keep_8bit` keeps layers at 8 bits"),
        ("dynamic_int4", ["nope"], "does not have: \\['nope'\\]"),
    ],
)
def test_bad_keep_8bit(observed, tmp_path, mode, keep_8bit, message):
    with pytest.raises(ValueError, match=message):
        keras_quant.export(
            observed, tmp_path / "m.tflite", mode, keep_8bit=keep_8bit
        )
    assert not (tmp_path / "m.tflite").exists()


def output_error(observed, path, x):
    """Relative error of a `.tflite` file's outputs against float."""
    expected = graphs.float_graph(observed).predict(x, verbose=0)
    found = keras_quant.run_tflite(path, x)
    return np.linalg.norm(found - expected) / np.linalg.norm(expected)


def test_analyze_ranks_layers_for_keep_8bit(observed, digits, tmp_path):
    """In a 4-bit mode, `analyze` measures each weighted layer kept at 8
    bits; keeping the first it ranks lowers the exported model's error."""
    x = digits["val"][0]
    found = keras_quant.analyze(observed, x, mode="int8x4")
    assert found.mode is Mode.INT8X4
    assert {g.layer for g in found.layers} == set(
        sensitivity.weighted_layers(observed)
    )
    assert "layer kept 8-bit" in found.table()
    best = found.layers_to_keep()[0]
    plain = keras_quant.export(observed, tmp_path / "p.tflite", "int8x4")
    kept = keras_quant.export(
        observed, tmp_path / "k.tflite", "int8x4", keep_8bit=[best]
    )
    assert output_error(observed, kept.path, x) < output_error(
        observed, plain.path, x
    )
    with pytest.raises(ValueError, match="layers_to_keep"):
        found.layers_to_keep_float()
    with pytest.raises(ValueError, match="mode='float16'"):
        keras_quant.analyze(observed, x, mode="float16")
