"""Every tutorial runs, and each page's code is its script's."""

import os
import pathlib
import re
import runpy
import subprocess
import sys

import pytest

# Runs whole scripts or a second process: left out of `make test-fast`.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "examples" / "tutorials"
PAGES = ROOT / "docs" / "tutorials"

# script -> files it must write into its output folder.
TUTORIALS = {
    "ptq_image_classification": ["digits_int8.tflite"],
    "qat": [
        "digits_qat_int8_only.tflite",
        "digits_qat.keras",
        "restored.tflite",
    ],
    "save_hook_checkpoint": [
        "best.keras",
        "best_int8.tflite",
        "best_float16.tflite",
        "best.quant.json",
        "best.report.html",
        "later_int8.tflite",
    ],
    "auto_mode": [
        "digits_auto.tflite",
        "auto_report/report.html",
        "digits_int8_head_float.tflite",
    ],
    "microcontroller": ["digits_micro.tflite"],
}


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_runs(name, tmp_path, monkeypatch, capsys):
    script = SCRIPTS / f"{name}.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path)])
    runpy.run_path(str(script), run_name="__main__")
    for written in TUTORIALS[name]:
        assert (tmp_path / written).is_file(), written
    assert capsys.readouterr().out  # it shows its results


def test_every_script_has_a_page_quoting_it():
    assert {p.stem for p in SCRIPTS.glob("*.py")} == set(TUTORIALS)
    quoted = {}
    for page in PAGES.glob("[0-9]-*.md"):
        text = page.read_text()
        (script,) = re.findall(r"examples/tutorials/(\w+)\.py\)", text)
        source = (SCRIPTS / f"{script}.py").read_text()
        blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
        assert blocks, page.name
        for block in blocks:
            assert block in source, f"{page.name} quotes code not in {script}"
        quoted[script] = page.name
    assert set(quoted) == set(TUTORIALS)


def test_a_tutorial_prints_no_tensorflow_or_litert_log_line(tmp_path):
    """Run as a user runs it, in a fresh process: results on stdout and
    nothing at all on stderr (no oneDNN, CUDA, Grappler or XNNPACK line)."""
    script = SCRIPTS / "ptq_image_classification.py"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**env, "KERAS_BACKEND": "tensorflow"},
        check=True,
    )
    assert "accuracy" in done.stdout
    assert done.stderr == ""
