"""The examples run end to end, so they cannot rot."""

import json
import os
import runpy

import pytest

# Runs whole scripts or a second process: left out of `make test-fast`.
pytestmark = pytest.mark.slow

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def test_digits_demo(tmp_path, capsys):
    demo = runpy.run_path(os.path.join(EXAMPLES, "digits_demo.py"))
    demo["main"](["--out", str(tmp_path), "--epochs", "12"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["mode"] for row in report["exports"]] == [
        "float32",
        "dynamic",
        "int8",
        "int8_only",
        "float16",
        "int16x8",
    ]
    assert (tmp_path / "digits_int8.tflite").exists()
    assert len(os.listdir(tmp_path / "modes")) == 6
    html_report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(html_report["modes"]) == 6
    assert "OK: int8 accuracy drop" in capsys.readouterr().out
