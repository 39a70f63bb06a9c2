"""The examples run end to end, so they cannot rot."""

import json
import os
import runpy

import pytest

import keras_quant

# Runs whole scripts or a second process: left out of `make test-fast`.
pytestmark = pytest.mark.slow

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def test_digits_demo(tmp_path, capsys):
    demo = runpy.run_path(os.path.join(EXAMPLES, "digits_demo.py"))
    demo["main"](["--out", str(tmp_path), "--epochs", "12"])
    report = json.loads((tmp_path / "report.json").read_text())
    every_mode = [mode.value for mode in keras_quant.Mode]
    assert "int8x4" in every_mode  # the int4 modes too
    assert [row["mode"] for row in report["exports"]] == every_mode
    assert (tmp_path / "digits_int8.tflite").exists()
    assert len(os.listdir(tmp_path / "modes")) == len(every_mode)
    html_report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(html_report["modes"]) == len(every_mode)
    assert "OK: int8 accuracy drop" in capsys.readouterr().out
