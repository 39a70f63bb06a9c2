"""The `keras-quant` command, in process and as the installed script."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from tensorflow.lite.tools import flatbuffer_utils

import keras_quant
from keras_quant import cli
from keras_quant.runtime import inspection
from tests.conftest import small_cnn
from tests.conftest import train

MODES = ("float32", "dynamic", "int8", "int8_only", "float16", "int16x8")


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits):
    """A float and an observed (calibrated) .keras, and .npz data."""
    folder = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    model = train(small_cnn(name="cli_cnn"), digits, epochs=3)
    model.save(folder / "float.keras")
    observed = keras_quant.observe(model, save_modes=())
    observed.evaluate(*digits["val"], verbose=0)
    observed.save(folder / "observed.keras")
    np.savez(folder / "val.npz", x=digits["val"][0], y=digits["val"][1])
    np.savez(folder / "test.npz", x=digits["test"][0], y=digits["test"][1])
    return folder


def run(*argv):
    """`keras-quant argv` in this process: (exit code, stdout, stderr)."""
    return cli.main([str(a) for a in argv])


def script(*argv):
    """The installed `keras-quant` script in a fresh process."""
    command = os.path.join(os.path.dirname(sys.executable), "keras-quant")
    found = subprocess.run(
        [command, *map(str, argv)], capture_output=True, text=True, timeout=300
    )
    return found.returncode, found.stdout, found.stderr


def test_help_of_every_command():
    code, out, err = script("--help")
    assert code == 0 and err == ""
    for command in ("export", "inspect", "compare", "report"):
        assert command in out
    assert "Exit codes" in out
    for command, option in [
        ("export", "--calibration-data"),
        ("inspect", "--json"),
        ("compare", "--max-drop"),
        ("report", "--data"),
    ]:
        code, out, _ = script(command, "--help")
        assert code == 0 and option in out


def test_a_run_prints_its_results_and_no_log_lines(files):
    path = files / "quiet.tflite"
    code, out, err = script(
        "export", files / "observed.keras", "-m", "int8", "-o", path
    )
    assert code == 0 and err == ""
    assert out == f"{out.splitlines()[0]}\n"
    assert out.startswith(f"wrote {path}: int8")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "missing.tflite"], "missing.tflite: no such file"),
        (["inspect", "{folder}/junk.tflite"], "is not a TFLite model"),
        (["inspect", "{folder}/cut.tflite"], "cannot read"),
        (["export", "{folder}/junk.keras"], "not a .keras file"),
        (["export", "{folder}/float.keras"], "need --calibration-data"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(files, argv, message):
    (files / "junk.tflite").write_bytes(b"not a model at all")
    (files / "junk.keras").write_bytes(b"not a zip")
    observed = keras.saving.load_model(files / "observed.keras")
    keras_quant.export(observed, files / "whole.tflite")
    whole = (files / "whole.tflite").read_bytes()
    (files / "cut.tflite").write_bytes(whole[: len(whole) // 3])
    code, out, err = script(*[a.format(folder=files) for a in argv])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("keras-quant: error: ")
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("mode", MODES)
def test_inspect_reports_what_litert_reads(files, mode, capsys):
    path = files / f"m_{mode}.tflite"
    assert run("export", files / "observed.keras", "-m", mode, "-o", path) == 0
    assert capsys.readouterr().out.startswith(f"wrote {path}: {mode}")
    assert run("inspect", path, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    runner = Interpreter(model_path=str(path))
    for key, details in (
        ("inputs", runner.get_input_details()),
        ("outputs", runner.get_output_details()),
    ):
        for found, detail in zip(shown[key], details):
            assert found["dtype"] == np.dtype(detail["dtype"]).name
            scales, zero_points = detail["quantization"]
            assert found["scales"] == ([scales] if scales else [])
            assert found["zero_points"] == ([zero_points] if scales else [])
    expected_io = "int8" if mode == "int8_only" else "float32"
    assert shown["inputs"][0]["dtype"] == expected_io
    weight_types = {w["weight"]["dtype"] for w in shown["weights"]}
    assert (
        weight_types
        == {
            "float32": {"float32"},
            "dynamic": {"int8", "float32"},
            "int8": {"int8"},
            "int8_only": {"int8"},
            "float16": {"float16", "float32"},
            "int16x8": {"int8"},
        }[mode]
        or mode == "float16"
    )
    assert shown["spec_violations"] == []
    assert run("inspect", path) == 0
    text = capsys.readouterr().out
    assert "TFLite quantization spec: followed" in text
    assert f"input: '{shown['inputs'][0]['name']}' {expected_io}" in text


def test_inspect_flags_a_spec_violation_with_exit_1(files, capsys):
    path = files / "m_int8.tflite"
    run("export", files / "observed.keras", "-m", "int8", "-o", path)
    model = flatbuffer_utils.read_model(str(path))
    summary = inspection.summarize(str(path))
    (_, weight, _), *_ = summary.weights()
    tensor = model.subgraphs[0].tensors[weight.index]
    tensor.quantization.zeroPoint[0] = 3
    flatbuffer_utils.write_model(model, str(files / "broken.tflite"))
    assert run("inspect", files / "broken.tflite") == 1
    captured = capsys.readouterr()
    assert "zero points not all 0" in captured.out
    assert "NOT followed" in captured.out
    assert captured.err.startswith("keras-quant: error: 1 departure")


def test_export_float_model_with_calibration_npz(files, capsys, digits):
    out = files / "calibrated_{mode}.tflite"
    code = run(
        "export",
        files / "float.keras",
        "--calibration-data",
        files / "val.npz",
        "-m",
        "int8",
        "int8_only",
        "-o",
        out,
        "--validation-data",
        files / "test.npz",
        "--report-dir",
        files / "export_report",
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "accuracy" in printed
    report = json.loads((files / "export_report" / "report.json").read_text())
    assert [row["mode"] for row in report["modes"]] == ["int8", "int8_only"]
    for mode in ("int8", "int8_only"):
        assert (files / f"calibrated_{mode}.tflite").exists()
    # The same quantization as observing and calibrating in Python.
    float_model = keras.saving.load_model(files / "float.keras")
    observed = keras_quant.observe(float_model)
    observed.predict(digits["val"][0], verbose=0)
    keras_quant.export(observed, files / "python.tflite")
    assert quantization(files / "calibrated_int8.tflite") == quantization(
        files / "python.tflite"
    )


def quantization(path):
    """Every activation's (dtype, scales, zero points), in graph order."""
    return [
        (t.dtype, [float(x) for x in t.scales], [int(z) for z in t.zero_points])
        for t in inspection.summarize(str(path)).activations()
    ]


def test_export_with_a_folder_of_images(files, digits):
    import tensorflow as tf

    folder = files / "images"
    folder.mkdir(exist_ok=True)
    for i, image in enumerate(digits["val"][0][:20]):
        pixels = tf.cast(tf.round(image * 255), tf.uint8)
        tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(pixels))
    out = files / "from_images.tflite"
    code = run(
        "export", files / "float.keras", "--calibration-data", folder, "-o", out
    )
    assert code == 0 and out.exists()
    x = digits["test"][0]
    found = keras_quant.run_tflite(str(out), x)
    assert np.mean(found.argmax(-1) == digits["test"][1]) > 0.8


def test_compare_and_its_budget(files, capsys):
    good = files / "m_int8.tflite"
    run("export", files / "observed.keras", "-m", "int8", "-o", good)
    code = run(
        "compare",
        files / "float.keras",
        good,
        "--data",
        files / "test.npz",
        "--max-drop",
        "2",
    )
    printed = capsys.readouterr().out
    assert code == 0 and "accuracy" in printed and "drop" in printed
    untrained = keras.models.clone_model(
        keras.saving.load_model(files / "float.keras")
    )
    keras_quant.export(untrained, files / "untrained.tflite", "float32")
    code = run(
        "compare",
        files / "float.keras",
        files / "untrained.tflite",
        "--data",
        files / "test.npz",
        "--max-drop",
        "2",
    )
    assert code == 1
    assert "more than --max-drop 2" in capsys.readouterr().err


def test_report_command_writes_the_report(files):
    out = files / "report"
    code = run(
        "report",
        files / "observed.keras",
        "--data",
        files / "val.npz",
        "-m",
        "int8",
        "float16",
        "-o",
        out,
    )
    assert code == 0
    content = json.loads((out / "report.json").read_text())
    assert [row["mode"] for row in content["modes"]] == ["int8", "float16"]
    assert (out / "observed_int8.tflite").exists()
    assert "data:image/png;base64," in (out / "report.html").read_text()
