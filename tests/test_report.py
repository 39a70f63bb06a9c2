"""Reports: JSON contents, and the HTML rendered by headless Chromium."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib import image

import keras_quant
from keras_quant.callbacks import RangeCalibration
from keras_quant.callbacks import TFLiteExport
from keras_quant.exporting import report
from tests.conftest import small_cnn

# matplotlib's default blue (histogram bars) and the red of range lines.
BLUE = np.array([31, 119, 180]) / 255
RED = np.array([214, 39, 40]) / 255


def chromium():
    path = shutil.which("chromium")
    assert path, "Debian's chromium is needed: `make test` installs it."
    return path


def screenshot(html_path, png_path, height=2400):
    """Renders a page in headless Chromium and returns the RGB pixels."""
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={os.path.dirname(png_path)}/profile",
            f"--screenshot={png_path}",
            f"--window-size=1200,{height}",
            f"file://{html_path}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return image.imread(png_path)[..., :3]


def pixels_like(pixels, color, tolerance=0.03):
    return int(np.sum(np.all(np.abs(pixels - color) < tolerance, axis=-1)))


@pytest.mark.slow  # needs a browser
def test_html_renders_its_plots_in_chromium(calibrated_cnn, digits, tmp_path):
    result = keras_quant.export(
        calibrated_cnn,
        tmp_path / "m.tflite",
        validation_data=digits["val"],
        report_dir=tmp_path / "report",
    )
    html_path = tmp_path / "report" / "report.html"
    page = html_path.read_text()
    # Self-contained: every image inline, nothing fetched.
    assert page.count("src='data:image/png;base64,") == 2
    assert "http" not in page
    pixels = screenshot(html_path, str(tmp_path / "shot.png"))
    # The histogram bars and SQNR bars are drawn, the ranges marked.
    assert pixels_like(pixels, BLUE) > 20_000
    assert pixels_like(pixels, RED) > 500
    assert f"{result.size_bytes / 1024:.1f}" in page


def test_json_holds_modes_ranges_and_errors(calibrated_cnn, digits, tmp_path):
    results = keras_quant.export_many(
        calibrated_cnn,
        {mode: tmp_path / f"m_{mode}.tflite" for mode in ("int8", "float16")},
        validation_data=digits["val"],
    )
    json_path, _ = report.write_report(
        tmp_path, calibrated_cnn, results, digits["val"]
    )
    with open(json_path) as file:
        content = json.load(file)
    assert [row["mode"] for row in content["modes"]] == ["int8", "float16"]
    for row, result in zip(content["modes"], results):
        assert row["size_kb"] == round(result.size_bytes / 1024, 1)
        assert row["accuracy"] == result.quantized_metrics["accuracy"]
        assert row["latency_us"] > 0
    assert content["ranges"] == {
        o.point: list(o.range()) for o in calibrated_cnn.observers
    }
    points = content["sensitivity"]["points"]
    assert {p["point"] for p in points} == set(content["ranges"])


def test_without_data_the_report_has_ranges_only(calibrated_cnn, tmp_path):
    result = keras_quant.export(
        calibrated_cnn, tmp_path / "m.tflite", report_dir=tmp_path
    )
    page = (tmp_path / "report.html").read_text()
    assert "No validation data was given" in page
    assert page.count("data:image/png;base64,") == 1  # ranges, no errors
    content = json.loads((tmp_path / "report.json").read_text())
    assert content["sensitivity"] is None
    assert content["exports"][0]["size_bytes"] == result.size_bytes


def test_auto_report_lists_every_candidate(calibrated_cnn, digits, tmp_path):
    result = keras_quant.export(
        calibrated_cnn,
        tmp_path / "m.tflite",
        "auto",
        validation_data=digits["val"],
        target="gpu",
        report_dir=tmp_path,
    )
    content = json.loads((tmp_path / "report.json").read_text())
    assert [row["mode"] for row in content["modes"]] == [
        t.label for t in result.selection.trials
    ]
    assert content["selection"]["reason"] == result.selection.reason
    page = (tmp_path / "report.html").read_text()
    assert "class='chosen'" in page
    assert "takes the first within the budget" in page


def test_callback_and_save_hook_write_reports(digits, tmp_path):
    observed = keras_quant.observe(small_cnn(), save_report=True)
    export = TFLiteExport(
        tmp_path / "m_{mode}.tflite",
        modes=("int8", "int8_only"),
        validation_data=digits["val"],
        report_dir=tmp_path / "report_{epoch}",
        save_freq="epoch",
    )
    observed.fit(
        *digits["train"],
        validation_data=digits["val"],
        epochs=1,
        verbose=0,
        callbacks=[RangeCalibration(), export],
    )
    content = json.loads((tmp_path / "report_1" / "report.json").read_text())
    assert [row["mode"] for row in content["modes"]] == ["int8", "int8_only"]
    observed.save(tmp_path / "model.keras")
    saved = json.loads((tmp_path / "model.report.json").read_text())
    assert [row["mode"] for row in saved["modes"]] == ["int8"]
    assert (tmp_path / "model.report.html").exists()
    loaded = keras_quant.ObservedModel.from_config(observed.get_config())
    assert loaded.save_report


@pytest.mark.parametrize("count", [1, 13])
def test_many_points_split_into_figures(count):
    ranges = {f"p{i}": (0.0, 1.0) for i in range(count)}
    tensors = {p: np.linspace(0, 1, 50) for p in ranges}
    figures = report._histogram_figures(ranges, tensors)
    assert len(figures) == -(-count // report.POINTS_PER_FIGURE)
    assert all(png.startswith(b"\x89PNG") for _, png in figures)


def test_html_speaks_in_labels_and_units_and_names_its_data(
    calibrated_cnn, digits, tmp_path
):
    results = keras_quant.export_many(
        calibrated_cnn,
        {mode: tmp_path / f"m_{mode}.tflite" for mode in ("int8", "float16")},
        validation_data=digits["val"],
    )
    _, html_path = report.write_report(
        tmp_path, calibrated_cnn, results, digits["val"]
    )
    page = open(html_path).read()
    for heading in ("Size (KB)", "Size / float32", "Latency, 1 thread (µs)"):
        assert f"<th>{heading}</th>" in page
    assert "size_kb" not in page and "latency_us" not in page
    count = len(digits["val"][0])
    assert f"Measured on {count} samples of the validation data" in page
    # The numbers are the terminal's: metrics to four decimals.
    int8 = results[0]
    assert f"<td>{int8.quantized_metrics['accuracy']:.4f}</td>" in page
    assert f"<td>{int8.float_metrics['accuracy']:.4f}</td>" in page
