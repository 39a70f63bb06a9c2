"""tfmot interop, run in a fresh interpreter (see tests/tfmot_scenarios.py).

`make` installs the `[tfmot]` extra (tensorflow-model-optimization and
tf-keras), so these run in CI.
"""

import json
import os
import subprocess
import sys

import pytest

# Runs whole scripts or a second process: left out of `make test-fast`.
pytestmark = pytest.mark.slow

SCENARIOS = os.path.join(os.path.dirname(__file__), "tfmot_scenarios.py")


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfmot")
    found = subprocess.run(
        [sys.executable, SCENARIOS, str(folder)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert found.returncode == 0, found.stderr[-3000:]
    return json.loads(found.stdout.strip().splitlines()[-1])


def test_tfmot_model_exports_integer_only_without_data(outcome):
    assert outcome["io"] == ["int8", "int8"]
    assert outcome["float_ops"] == []


def test_export_callback_runs_inside_tf_keras_fit(outcome):
    assert "cb_int8_only.tflite" in outcome["callback_files"]


def test_metrics_compare_float_and_litert(outcome):
    float_metrics, quantized_metrics = outcome["metrics"]
    assert set(float_metrics) == {"loss", "accuracy"}
    assert (
        abs(float_metrics["accuracy"] - quantized_metrics["accuracy"]) <= 0.01
    )


def test_clear_errors_for_what_tfmot_models_cannot_do(outcome):
    assert outcome["int16x8"] == "ExportError"
    assert outcome["plain_int8"] == "NotCalibratedError"
    assert outcome["plain_float16"] is True


def test_report_of_a_tfmot_model(outcome):
    assert outcome["report_files"] == ["report.html", "report.json"]
