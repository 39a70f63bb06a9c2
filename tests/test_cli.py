"""The `keras-quant` command, in process and as the installed script."""

import io
import json
import os
import subprocess
import sys
import threading
import zipfile

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


def test_compare_and_its_budget(files, int8_tflite, capsys):
    code = run(
        "compare",
        files / "float.keras",
        int8_tflite,
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


def test_compare_fails_models_whose_outputs_do_not_agree(
    files, int8_tflite, capsys
):
    """Two unrelated models: the metric gate alone may pass (a generous
    budget, or a loss lower by chance); their outputs cannot agree."""
    unrelated = files / "unrelated.tflite"
    if not unrelated.exists():
        keras.utils.set_random_seed(7)
        keras_quant.export(small_cnn(name="unrelated"), unrelated, "float32")
    argv = ["compare", files / "float.keras", unrelated, "--data"]
    argv += [files / "test.npz"]
    code, out, err = run_captured(capsys, *argv, "--max-drop", 100)
    sqnr = float(out.split("output SQNR: ")[1].split(" dB")[0])
    assert code == 1 and sqnr < 10
    assert_one_error_line(
        err, f"the models do not agree: output SQNR {sqnr:.2f} dB, below "
    )
    assert "more than --max-drop" not in err  # the metric gate passed
    code, _, err = run_captured(capsys, *argv, "--min-sqnr", 20)
    assert code == 1 and "below --min-sqnr 20 dB" in err
    code, _, err = run_captured(
        capsys, *argv, "--max-drop", 100, "--min-sqnr", -100
    )
    assert code == 0 and err == ""
    argv = ["compare", files / "float.keras", int8_tflite, "--data"]
    code, out, _ = run_captured(
        capsys, *argv, files / "test.npz", "--max-drop", 2
    )
    assert code == 0
    assert float(out.split("output SQNR: ")[1].split(" dB")[0]) > 10


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


# --- Every failure is one line, never a traceback -----------------------


def run_captured(capsys, *argv):
    """`keras-quant argv` in this process: (exit code, stdout, stderr)."""
    code = run(*argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err, message):
    assert err.count("\n") == 1 and err.startswith("keras-quant: error: ")
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["frob"], "invalid choice: 'frob'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["export"], "required: model"),
        (["compare", "a.tflite"], "required"),
        (["compare", "m.keras", "--max-drop", "nan"], "expected a finite"),
    ],
)
def test_argument_errors_are_one_line_with_no_usage_block(argv, message):
    code, out, err = script(*argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "usage:" not in err
    assert message in err and err.rstrip().endswith("--help')")


@pytest.fixture(scope="module")
def int8_tflite(files):
    """The observed model exported to int8 once."""
    path = files / "fixture_int8.tflite"
    keras_quant.export(keras.saving.load_model(files / "observed.keras"), path)
    return path


def rewritten(source, destination, change):
    """`source` .tflite with `change(model)` applied, written to
    `destination`."""
    model = flatbuffer_utils.read_model(str(source))
    change(model)
    flatbuffer_utils.write_model(model, str(destination))
    return destination


def two_input_channels(model):
    """Makes the model's input (8, 8, 2): the convolution, which takes one
    channel, cannot be prepared, so LiteRT refuses to allocate."""
    subgraph = model.subgraphs[0]
    tensor = subgraph.tensors[subgraph.inputs[0]]
    tensor.shape = np.array([1, 8, 8, 2], np.int32)
    tensor.shapeSignature = np.array([-1, 8, 8, 2], np.int32)


def max_pool_read_as_split(model):
    """One opcode changed, MAX_POOL_2D to SPLIT: the flatbuffer stays
    valid, but SPLIT reads a second input the op does not have, and
    LiteRT's allocation crashes with SIGSEGV."""
    from ai_edge_litert.schema_py_generated import BuiltinOperator

    for code in model.operatorCodes:
        if code.builtinCode == BuiltinOperator.MAX_POOL_2D:
            code.builtinCode = BuiltinOperator.SPLIT
            code.deprecatedBuiltinCode = BuiltinOperator.SPLIT


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-o", "{folder}/o{{0}}.tflite"], "only name it may hold in braces"),
        (["-o", "{folder}/o{{x}}.tflite"], "only name it may hold in braces"),
        (["-o", "{folder}"], "is a folder; name a .tflite file in it"),
        (["--report-dir", "{folder}/float.keras"], "is a file; name a folder"),
        (["--report-dir", "/proc/keras-quant-report"], "cannot create"),
        # Filled in silently ('str.tflite'), before the fix.
        (
            ["-o", "{folder}/o{{mode.__class__.__name__}}.tflite"],
            "no attribute or index",
        ),
        (["-o", "{folder}/o{{mode[0]}}.tflite"], "no attribute or index"),
        # Raw OSError or ValueError, after converting.
        (["-o", "{folder}/" + "o" * 300 + ".tflite"], "longer than the 255"),
        (["-o", "{folder}/o{{mode:>300}}.tflite"], "longer than the 255"),
        (["-o", "{folder}/o\0.tflite"], "holds a NUL byte"),
        (["-o", "{folder}/nosuch/../o.tflite"], "nosuch', which does not"),
        (["--report-dir", "{folder}/nosuch/../r"], "nosuch', which does not"),
        (["--report-dir", "{folder}/r\0"], "holds a NUL byte"),
    ],
)
def test_unusable_destinations_are_one_line_and_exit_2(
    files, capsys, argv, message
):
    argv = [a.format(folder=files) for a in argv]
    if "-o" not in argv:
        argv += ["-o", str(files / "destination.tflite")]
    before = set(os.listdir(files))
    code, _, err = run_captured(
        capsys, "export", files / "observed.keras", "-m", "int8", *argv
    )
    assert code == 2
    assert_one_error_line(err, message)
    assert set(os.listdir(files)) == before  # no file, temporary or folder


def test_report_into_a_read_only_folder_is_one_line_and_exit_2(files, capsys):
    code, _, err = run_captured(
        capsys,
        "report",
        files / "observed.keras",
        "--data",
        files / "val.npz",
        "-o",
        "/proc/keras-quant-report",
    )
    assert code == 2
    assert_one_error_line(err, "--output /proc/keras-quant-report")


def test_inspect_fails_a_tflite_litert_cannot_allocate(
    files, int8_tflite, capsys
):
    path = rewritten(
        int8_tflite, files / "two_channels.tflite", two_input_channels
    )
    code, out, err = run_captured(capsys, "inspect", path)
    assert code == 1
    assert "LiteRT allocation: FAILED: " in out
    assert_one_error_line(err, f"LiteRT cannot allocate {path}: ")
    assert "failed to prepare" in err  # LiteRT's reason
    code, out, _ = run_captured(capsys, "inspect", path, "--json")
    assert (
        code == 1 and "failed to prepare" in json.loads(out)["allocation_error"]
    )


def test_inspect_survives_a_tflite_that_crashes_litert(files, int8_tflite):
    """In a fresh process: before the fix, LiteRT's crash killed it."""
    path = rewritten(
        int8_tflite, files / "split.tflite", max_pool_read_as_split
    )
    code, out, err = script("inspect", path)
    assert code == 1
    assert "LiteRT allocation: FAILED" in out
    assert_one_error_line(err, "killed by SIGSEGV")


def test_compare_refuses_a_tflite_litert_cannot_allocate(
    files, int8_tflite, capsys
):
    path = rewritten(
        int8_tflite, files / "two_channels.tflite", two_input_channels
    )
    code, _, err = run_captured(
        capsys,
        "compare",
        files / "float.keras",
        path,
        "--data",
        files / "test.npz",
    )
    assert code == 1
    assert_one_error_line(err, f"LiteRT cannot run {path}: ")


@pytest.mark.parametrize(
    "arrays, message",
    [
        (
            {"x": np.zeros((0, 8, 8, 1), "float32"), "y": np.zeros(0)},
            "is empty",
        ),
        ({"x": np.float32(1), "y": np.int32(1)}, "is a single value"),
        (
            {"x": np.zeros((3, 8, 8, 1)), "y": np.float32(1)},
            "is a single value",
        ),
        ({"x": np.array(["a", "b"]), "y": np.zeros(2)}, "expected numbers"),
        (
            {"x": np.zeros((3, 8, 8, 1)), "y": np.zeros(2)},
            "3 samples and 'y' 2",
        ),
        ({"x": np.zeros((3, 4, 4, 1)), "y": np.zeros(3)}, "the model takes"),
        # TensorFlow's InvalidArgumentError: "unexpected ... report it".
        (
            {"x": np.zeros((3, 8, 8, 1)), "y": np.array([0, 12, 1])},
            "label value of 12 which is outside the valid range of [0, 10); "
            "check its 'y'",
        ),
        (
            {"x": np.zeros((3, 8, 8, 1)), "y": np.array([0, np.nan, 1])},
            "cannot be evaluated on",
        ),
    ],
)
def test_unusable_data_arrays_are_one_line_and_exit_2(
    files, int8_tflite, capsys, arrays, message
):
    data = files / "unusable.npz"
    np.savez(data, **arrays)
    code, _, err = run_captured(
        capsys, "compare", files / "float.keras", int8_tflite, "--data", data
    )
    assert code == 2
    assert_one_error_line(err, message)


def test_pickled_object_arrays_are_refused(files, int8_tflite, capsys):
    data = files / "pickled.npz"
    np.savez(data, x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    code, _, err = run_captured(
        capsys, "compare", files / "float.keras", int8_tflite, "--data", data
    )
    assert code == 2
    assert_one_error_line(err, "allow_pickle=False")


# --- Files that are not regular files; data that is not arrays --------


class PipeWriter(threading.Thread):
    """Opens each named pipe of `paths` for writing whenever a reader waits
    on it, and closes it at once: a command that opens one reads an empty
    file instead of waiting forever (as it did before pipes were refused).
    `opened` counts the readers it met: 0 if none was ever opened."""

    def __init__(self, paths):
        super().__init__(daemon=True)
        self.paths, self.opened = [str(p) for p in paths], 0
        self.stopped = threading.Event()
        for path in self.paths:
            os.mkfifo(path)

    def run(self):
        while not self.stopped.wait(0.05):
            for path in self.paths:
                try:  # ENXIO while nobody reads
                    handle = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    continue
                self.opened += 1
                os.close(handle)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stopped.set()
        self.join()


FIFO_COMMANDS = [
    ["inspect", "{pipe}.tflite"],
    ["inspect", "{pipe}.tflite", "--json", "--target", "edgetpu"],
    ["compare", "{pipe}.keras", "{int8}", "--data", "{folder}/test.npz"],
    ["compare", "{float}", "{pipe}.tflite", "--data", "{folder}/test.npz"],
    ["compare", "{float}", "{int8}", "--data", "{pipe}.npz"],
    ["export", "{pipe}.keras", "-m", "float16", "-o", "{out}"],
    ["export", "{float}", "--calibration-data", "{pipe}.npz", "-o", "{out}"],
    ["export", "{float}", "--calibration-data", "{images}", "-o", "{out}"],
    ["export", "{observed}", "--validation-data", "{pipe}.npz", "-o", "{out}"],
    ["report", "{observed}", "--data", "{pipe}.npz", "-o", "{out}_report"],
]


@pytest.mark.parametrize("argv", FIFO_COMMANDS, ids=lambda a: " ".join(a[:4]))
def test_named_pipes_are_refused_before_they_are_opened(
    files, int8_tflite, tmp_path, capsys, argv
):
    # `keras-quant inspect fifo.tflite` used to wait forever.
    (tmp_path / "images").mkdir()
    pipes = [tmp_path / f"pipe{s}" for s in (".tflite", ".keras", ".npz")]
    with PipeWriter([*pipes, tmp_path / "images" / "0.png"]) as writer:
        code, _, err = run_captured(
            capsys,
            *[
                a.format(
                    pipe=tmp_path / "pipe",
                    folder=files,
                    int8=int8_tflite,
                    float=files / "float.keras",
                    observed=files / "observed.keras",
                    images=tmp_path / "images",
                    out=tmp_path / "out.tflite",
                )
                for a in argv
            ],
        )
    assert code == 2
    assert_one_error_line(err, "is a named pipe (FIFO), not a regular file")
    assert writer.opened == 0
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["images", *(p.name for p in pipes)]
    )


def npz_bytes(**members):
    """An .npz whose members are arrays (saved as .npy) or raw bytes (a
    member np.savez would never write; NumPy returns its bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, value in members.items():
            if isinstance(value, bytes):
                archive.writestr(name, value)
            else:
                array = io.BytesIO()
                np.save(array, value, allow_pickle=True)
                archive.writestr(f"{name}.npy", array.getvalue())
    return buffer.getvalue()


# `.npz` files whose 'x' or 'y' is not an array of samples, and the error.
BAD_MEMBERS = {
    "raw_y": (
        lambda x: npz_bytes(x=x, y=b"not an array"),
        "member 'y' is not an array",
    ),
    "raw_x": (
        lambda x: npz_bytes(x=b"pixels", y=np.zeros(len(x))),
        "member 'x' is not an array",
    ),
    "pickled_y": (
        lambda x: npz_bytes(x=x, y=np.array({"a": 1}, dtype=object)),
        "allow_pickle=False",
    ),
    "zero_d_y": (
        lambda x: npz_bytes(x=x, y=np.int32(1)),
        "'y' is a single value (a 0-d array)",
    ),
    "zero_d_x": (
        lambda x: npz_bytes(x=np.float32(1), y=np.zeros(len(x))),
        "is a single value (a 0-d array)",
    ),
}

DATA_COMMANDS = [
    ["compare", "{float}", "{int8}", "--data", "{data}"],
    ["export", "{observed}", "--validation-data", "{data}", "-o", "{out}"],
    ["report", "{observed}", "--data", "{data}", "-o", "{out}_report"],
    ["export", "{float}", "--calibration-data", "{data}", "-o", "{out}"],
]


@pytest.mark.parametrize(
    "kind, command",
    [
        (kind, command)
        for kind in sorted(BAD_MEMBERS)
        for command in DATA_COMMANDS
        # calibration reads 'x' alone
        if "--calibration-data" not in command or kind.endswith("_x")
    ],
    ids=lambda value: value if isinstance(value, str) else value[2],
)
def test_npz_members_that_are_not_samples_are_one_line_and_exit_2(
    files, int8_tflite, digits, tmp_path, capsys, kind, command
):
    # A raw 'y' member used to end in "unexpected AttributeError ...
    # please report it".
    make, message = BAD_MEMBERS[kind]
    data = tmp_path / f"{kind}.npz"
    data.write_bytes(make(digits["test"][0][:10]))
    argv = [
        a.format(
            float=files / "float.keras",
            observed=files / "observed.keras",
            int8=int8_tflite,
            data=data,
            out=tmp_path / "out.tflite",
        )
        for a in command
    ]
    code, _, err = run_captured(capsys, *argv)
    assert code == 2
    assert_one_error_line(err, message)
    assert str(data) in err
    assert os.listdir(tmp_path) == [data.name]


@pytest.mark.parametrize(
    "command",
    [
        ["export", "{observed}", "-m", "auto", "--validation-data", "{data}"],
        ["export", "{observed}", "-m", "int8", "--validation-data", "{data}"],
        ["report", "{observed}", "-m", "float16", "--data", "{data}"],
    ],
    ids=lambda a: f"{a[0]} {a[3]}",
)
@pytest.mark.parametrize(
    "spoil, message",
    [
        (
            lambda x, y: (np.full_like(x, np.nan), y),
            "holds 22400 NaN values in its inputs (x), of 22400 values",
        ),
        (
            lambda x, y: (x, np.where(y == 1, -np.inf, y)),
            "infinite values in its labels (y)",
        ),
    ],
    ids=["nan_inputs", "infinite_labels"],
)
def test_non_finite_data_is_one_line_and_exit_2(
    files, digits, tmp_path, capsys, command, spoil, message
):
    # `export --mode auto` used to measure NaN metrics, pick int8, exit 0.
    x, y = spoil(*digits["val"])
    data = tmp_path / "spoilt.npz"
    np.savez(data, x=x, y=y)
    out = tmp_path / "out.tflite"
    argv = [
        a.format(observed=files / "observed.keras", data=data) for a in command
    ]
    argv += ["-o", str(tmp_path / "report") if argv[0] == "report" else out]
    code, _, err = run_captured(capsys, *argv)
    assert code == 2
    assert_one_error_line(err, message)
    assert f"{data} holds " in err
    assert os.listdir(tmp_path) == [data.name]


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "m.keras", "m.tflite", "--data", "d.npz", "--max-drop", v]
        for v in ("nan", "inf", "-1", "lots")
    ]
    + [
        ["compare", "m.keras", "m.tflite", "--data", "d.npz", "--min-sqnr", v]
        for v in ("nan", "inf", "ten")
    ]
    + [
        ["export", "m.keras", "--max-accuracy-drop", "nan"],
        ["export", "m.keras", "--samples", "0"],
        ["export", "m.keras", "--samples", "1.5"],
        ["report", "m.keras", "--data", "d.npz", "--image-scale", "0"],
        ["report", "m.keras", "--data", "d.npz", "--image-scale", "inf"],
    ],
)
def test_numbers_are_checked_as_they_are_parsed(capsys, argv):
    code, _, err = run_captured(capsys, *argv)
    assert code == 2
    assert f"{argv[-2]}: {argv[-1]!r}: expected a" in err.replace("/", " ")
    assert "Traceback" not in err


def test_broken_stdout_pipe_exits_quietly(int8_tflite):
    """`keras-quant inspect m.tflite --json | head -1`: the reader has gone
    before the output is written."""
    command = os.path.join(os.path.dirname(sys.executable), "keras-quant")
    process = subprocess.Popen(
        [command, "inspect", str(int8_tflite), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=300) == 1
    assert err == ""


def test_broken_stdout_in_process(int8_tflite, monkeypatch):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            raise OSError("no file descriptor")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert run("inspect", int8_tflite) == 1


def test_ctrl_c_while_starting_up_is_one_line_and_exit_130(monkeypatch, capsys):
    class InterruptedImport:
        """Ctrl-C while the command's modules (Keras, TF) are imported."""

        def find_spec(self, name, path=None, target=None):
            if name == "keras_quant.cli.commands":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "keras_quant.cli.commands")
    monkeypatch.setattr(sys, "meta_path", [InterruptedImport(), *sys.meta_path])
    code, out, err = run_captured(capsys, "inspect", "m.tflite")
    assert code == 130
    assert err == "keras-quant: interrupted\n" and out == ""


def test_unexpected_error_is_one_line_and_its_traceback_with_verbose(
    monkeypatch, capsys
):
    from keras_quant.cli import commands

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(commands.COMMANDS, "inspect", broken)
    code, _, err = run_captured(capsys, "inspect", "m.tflite")
    assert code == 1
    assert_one_error_line(err, "unexpected RuntimeError: a bug")
    code, _, err = run_captured(capsys, "--verbose", "inspect", "m.tflite")
    assert code == 1
    assert err.startswith("Traceback") and "RuntimeError: a bug" in err
    assert err.splitlines()[-1].startswith("keras-quant: error: unexpected")


# --- compare: output figures, and a gate that never passes silently ------


@pytest.fixture(scope="module")
def uncompiled(files, digits):
    """A .keras model compiled with no loss or metric, its float32 .tflite,
    and the .tflite of the same layers with other weights."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    model.save(files / "uncompiled.keras")
    keras_quant.export(model, files / "uncompiled.tflite", "float32")
    other = keras.models.clone_model(model)
    keras_quant.export(other, files / "other_weights.tflite", "float32")
    return files


def test_compare_prints_output_figures_and_gates_outputs_without_metrics(
    uncompiled, capsys
):
    argv = ["compare", uncompiled / "uncompiled.keras"]
    data = ["--data", uncompiled / "test.npz"]
    code, out, _ = run_captured(
        capsys, *argv, uncompiled / "uncompiled.tflite", *data, "--max-drop", 1
    )
    assert code == 0
    assert "metrics: none" in out
    assert "mean |float - tflite| output: " in out
    assert "output SQNR: " in out and " dB" in out
    assert "output drop: +0.000 % of the float output range" in out
    code, out, err = run_captured(
        capsys,
        *argv,
        uncompiled / "other_weights.tflite",
        *data,
        "--max-drop",
        1,
    )
    assert code == 1
    sqnr = float(out.split("output SQNR: ")[1].split(" dB")[0])
    assert sqnr < 10
    assert_one_error_line(err, "more than --max-drop 1")
    assert "output dropped" in err


def test_compare_gate_that_cannot_be_evaluated_fails(uncompiled, capsys):
    x = np.full((4, 8, 8, 1), np.nan, "float32")
    np.savez(uncompiled / "nan.npz", x=x, y=np.zeros(4, "int32"))
    code, out, err = run_captured(
        capsys,
        "compare",
        uncompiled / "uncompiled.keras",
        uncompiled / "uncompiled.tflite",
        "--data",
        uncompiled / "nan.npz",
        "--max-drop",
        5,
    )
    assert code == 1
    assert "output SQNR: nan dB" in out
    assert_one_error_line(err, "--max-drop cannot be evaluated")


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "nosuch.tflite"],
        ["inspect", "nosuch.tflite", "--target", "micro"],
        ["export", "nosuch.keras", "--mode", "int8"],
        ["compare", "nosuch.keras", "nosuch.tflite", "--data", "d.npz"],
        ["report", "nosuch.keras", "--data", "nosuch.npz"],
    ],
)
def test_a_missing_file_is_answered_before_tensorflow_loads(argv, tmp_path):
    # What the user typed is checked first: a wrong path costs no
    # TensorFlow start-up (seconds).
    code = (
        "import sys; from keras_quant import cli; "
        f"status = cli.main({argv!r}); "
        "print(status, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.stdout.split() == ["2", "False", "False"], done.stderr
    assert "no such file" in done.stderr
