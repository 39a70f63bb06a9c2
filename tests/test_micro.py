"""`target="micro"`: integer-only files verified in the real TensorFlow Lite
for Microcontrollers interpreter (the `tflite-micro` package)."""

import json

import keras
import numpy as np
import pytest
from keras import layers

import keras_quant
from keras_quant import cli
from keras_quant.conversion.isolation import run_isolated
from keras_quant.conversion.routes import convert
from keras_quant.errors import ExportError
from keras_quant.runtime import inspection
from keras_quant.runtime import litert
from keras_quant.runtime import micro
from keras_quant.targets import MICRO_OPS

RNG = np.random.default_rng(0)


def observed(model, x):
    """`model` observed and calibrated on `x`."""
    watched = keras_quant.observe(model)
    watched.predict(x, verbose=0)
    return watched


def features(shape, count=64):
    return RNG.normal(size=(count, *shape)).astype("float32")


@pytest.fixture(scope="module")
def cnn_export(tmp_path_factory, trained_cnn, digits):
    """The digits CNN (free batch size) exported for TFLM with the test
    images."""
    model = observed(trained_cnn, digits["val"][0])
    path = tmp_path_factory.mktemp("micro") / "cnn.tflite"
    result = keras_quant.export(
        model,
        path,
        mode="int8_only",
        target="micro",
        validation_data=digits["test"],
    )
    return result, path.read_bytes()


def test_the_ops_table_is_the_installed_tflm_kernels():
    # Asked of the package itself: a change of tflite-micro that adds or
    # drops a kernel fails here until `targets.MICRO_OPS` follows.
    assert run_isolated(micro.registered_ops) == sorted(MICRO_OPS)


def test_a_cnn_runs_in_tflm_as_it_runs_in_litert(cnn_export, digits):
    result, tflite = cnn_export
    report = result.micro
    x, y = digits["test"]
    assert result.target == "micro"
    assert report.samples == len(x)
    assert report.runtime == f"tflite-micro {micro.version()}"
    # TFLM's int8 kernels are not LiteRT's reference kernels bit for bit:
    # on this CNN a step on 0.02 % of the logits, up to 4 steps on 0.3 %
    # of the values after SOFTMAX (decision D47).
    assert 0 <= report.differing_share <= 0.01
    assert report.max_step_difference <= 8
    tflm, litert_accuracy = (
        report.metrics["accuracy"],
        result.quantized_metrics["accuracy"],
    )
    assert abs(tflm - litert_accuracy) <= 2 / len(x)
    assert tflm > 0.85
    assert report.ops == tuple(micro.op_names(tflite))
    assert result.to_dict()["micro"]["arena_bytes"] == report.arena_bytes


def test_the_file_has_static_shapes_and_runs_in_its_arena(cnn_export):
    result, tflite = cnn_export
    summary = inspection.summarize(tflite)
    runner = litert.interpreter(tflite)
    for detail in runner.get_input_details() + runner.get_output_details():
        assert list(detail["shape_signature"]) == list(detail["shape"])
        assert detail["shape"][0] == 1
    assert summary.float_ops() == []
    arena = result.micro.arena_bytes
    assert run_isolated(micro.problem, tflite, arena) is None
    # The smallest arena: 16 bytes less fails (or crashes TFLM).
    try:
        smaller = run_isolated(micro.problem, tflite, arena - micro.ARENA_STEP)
    except ExportError:  # the child was killed: TFLM overran the arena
        smaller = "crashed"
    assert smaller is not None


def test_a_dynamic_batch_model_becomes_loadable_in_tflm():
    # A Dense over a sequence and LayerNormalization with a free batch
    # size: the converter computes the batch at run time with SHAPE and
    # REDUCE_PROD, and TFLM has no REDUCE_PROD.
    inputs = keras.Input((4, 8))
    outputs = layers.LayerNormalization()(layers.Dense(8)(inputs))
    model = observed(keras.Model(inputs, outputs), features((4, 8)))
    free = convert(model, "int8_only")
    assert "REDUCE_PROD" in micro.op_names(free)
    assert "REDUCE_PROD" in run_isolated(micro.problem, free)
    fixed = convert(model, "int8_only", target="micro")
    assert run_isolated(micro.problem, fixed) is None
    assert not {"REDUCE_PROD", "SHAPE"} & set(micro.op_names(fixed))


def test_gelu_is_rewritten_into_ops_tflm_has(tmp_path):
    inputs = keras.Input((16,))
    hidden = layers.Dense(16, name="hidden")(inputs)
    outputs = layers.Activation("gelu", name="gelu")(hidden)
    model = observed(keras.Model(inputs, outputs), features((16,), 256))
    plain = convert(model, "int8_only")
    assert "GELU" in micro.op_names(plain)
    assert "GELU" in run_isolated(micro.problem, plain)
    x = features((16,), 128)
    result = keras_quant.export(
        model,
        tmp_path / "gelu.tflite",
        mode="int8_only",
        target="micro",
        validation_data=(x, model.predict(x, verbose=0)),
    )
    assert "GELU" not in result.micro.ops
    assert "LOGISTIC" in result.micro.ops
    # The tanh form of GELU, computed in int8, is as close to Keras's GELU
    # as LiteRT's own int8 GELU kernel.
    expected = model.predict(x, verbose=0)
    errors = [
        np.mean((litert.run(tflite, x) - expected) ** 2)
        for tflite in (plain, (tmp_path / "gelu.tflite").read_bytes())
    ]
    assert errors[1] <= 1.5 * errors[0]


def test_an_op_tflm_lacks_is_refused_naming_layer_and_op(tmp_path):
    inputs = keras.Input((8,))
    hidden = layers.Dense(8)(inputs)
    outputs = layers.Lambda(lambda t: keras.ops.sort(t), name="sorted")(hidden)
    model = observed(keras.Model(inputs, outputs), features((8,)))
    path = tmp_path / "m.tflite"
    with pytest.raises(ExportError, match=r"'sorted' \(TOPK_V2\)") as error:
        keras_quant.export(model, path, mode="int8_only", target="micro")
    assert "Nothing was written" in str(error.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "shape, mode, target, message",
    [
        # A free sequence length: refused before any work.
        ((None, 8), "int8_only", "micro", "'frames'.*needs static shapes"),
        ((8,), "float16", "micro", "runs the modes.*'float16'"),
        ((8,), "int8_only", "mcu", "target='mcu'"),
    ],
)
def test_what_tflm_cannot_take_is_refused_naming_it(
    tmp_path, shape, mode, target, message
):
    inputs = keras.Input(shape, name="frames")
    model = keras.Model(inputs, layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match=message):
        keras_quant.export(
            model, tmp_path / "m.tflite", mode=mode, target=target
        )
    assert list(tmp_path.iterdir()) == []


def test_a_converter_failure_names_the_mode_asked_for():
    inputs = keras.Input((8,))
    outputs = layers.Lambda(lambda t: keras.ops.cumprod(t, axis=-1))(inputs)
    model = observed(keras.Model(inputs, outputs), features((8,)))
    with pytest.raises(ExportError, match=r"\(mode 'int8_only'\)"):
        convert(model, "int8_only")


# --- The command line ------------------------------------------------------


def keras_quant_cli(capsys, *argv):
    """`keras-quant argv` in this process: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_line_exports_for_tflm_and_inspects_for_targets(
    capsys, tmp_path, trained_cnn, digits
):
    model = observed(trained_cnn, digits["val"][0])
    model.save(tmp_path / "cnn.keras")
    np.savez(tmp_path / "test.npz", x=digits["test"][0], y=digits["test"][1])
    code, out, _ = keras_quant_cli(
        capsys,
        "export",
        tmp_path / "cnn.keras",
        "--mode",
        "int8_only",
        "--target",
        "micro",
        "--validation-data",
        tmp_path / "test.npz",
        "-o",
        tmp_path / "cnn_micro.tflite",
    )
    assert code == 0
    assert "in TFLM (tflite-micro" in out and "smallest arena" in out
    exported = tmp_path / "cnn_micro.tflite"
    code, out, _ = keras_quant_cli(
        capsys, "inspect", exported, "--target", "micro", "--json"
    )
    found = json.loads(out)["target"]
    assert code == 0 and found["name"] == "micro" and found["runs"]
    assert found["arena_bytes"] > 0 and found["missing_ops"] == []
    code, out, _ = keras_quant_cli(
        capsys, "inspect", exported, "--target", "edgetpu"
    )
    assert code == 0
    assert "Edge TPU pre-check (static; not compiled): passed" in out


def test_inspect_fails_a_file_tflm_cannot_run(capsys, tmp_path):
    inputs = keras.Input((16,))
    outputs = layers.Activation("gelu")(layers.Dense(16)(inputs))
    model = observed(keras.Model(inputs, outputs), features((16,)))
    path = tmp_path / "gelu.tflite"
    path.write_bytes(convert(model, "int8_only"))
    code, out, err = keras_quant_cli(
        capsys, "inspect", path, "--target", "micro"
    )
    assert code == 1
    assert "ops it has no kernel for: ['GELU']" in out
    assert err.startswith("keras-quant: error: TFLM cannot run")
    assert "GELU" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def digits_mlp(digits):
    """A small MLP on the digits, trained a little and calibrated."""
    inputs = keras.Input((8, 8, 1))
    hidden = layers.Dense(16, activation="relu")(layers.Flatten()(inputs))
    model = keras.Model(inputs, layers.Dense(10)(hidden))
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    keras.utils.set_random_seed(0)
    model.fit(*digits["train"], epochs=3, verbose=0)
    return observed(model, digits["val"][0])


def test_the_report_shows_the_tflm_run(tmp_path, digits, digits_mlp):
    model = digits_mlp
    result = keras_quant.export(
        model,
        tmp_path / "mlp.tflite",
        mode="int8_only",
        target="micro",
        validation_data=digits["test"],
        report_dir=tmp_path / "report",
    )
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["exports"][0]["micro"] == json.loads(
        json.dumps(result.micro.to_dict())
    )
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>TensorFlow Lite for Microcontrollers</h2>" in page
    assert f"{result.micro.arena_bytes:,}" in page


def test_auto_for_micro_gives_a_verified_integer_only_file(
    tmp_path, digits, digits_mlp
):
    model = digits_mlp
    result = keras_quant.export(
        model,
        tmp_path / "auto.tflite",
        mode="auto",
        target="micro",
        validation_data=digits["test"],
    )
    assert result.mode.value == "int8_only" and result.target == "micro"
    assert result.micro.samples == len(digits["test"][0])
    assert abs(
        result.micro.metrics["accuracy"] - result.quantized_metrics["accuracy"]
    ) <= 2 / len(digits["test"][0])
