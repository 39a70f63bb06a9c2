"""Hostile destinations and data through the Python API: each one refused
before any conversion with one clear error, never a raw `OSError` after
it, and never a file (or a temporary one) left behind."""

import os
import re

import numpy as np
import pytest

import keras_quant
from keras_quant.exporting import files
from tests.conftest import assert_untouched


def listing(folder):
    return sorted(os.listdir(folder))


# --- 1. a path through a folder that does not exist ----------------------


@pytest.mark.parametrize(
    "through, problem",
    [("nosuch", "does not exist"), ("a_file", "is not a folder")],
)
def test_a_path_through_a_missing_folder_is_refused_before_converting(
    calibrated_cnn, good_file, through, problem
):
    # Python would collapse 'nosuch/..' to nothing; the system does not:
    # the rename at the end of the export used to fail, after converting.
    folder = good_file.parent
    (folder / "a_file").write_bytes(b"")
    path = str(folder / through / ".." / "m.tflite")
    with pytest.raises(keras_quant.UnwritablePathError, match=problem) as e:
        keras_quant.export(calibrated_cnn, path, "float16")
    assert f"{str(folder / through)!r}, which {problem}" in str(e.value)
    assert repr(str(folder / "m.tflite")) in str(e.value)  # the fix
    (folder / "a_file").unlink()
    assert_untouched(good_file)  # no temporary file, no folder made


def test_a_path_through_an_existing_folder_is_written_where_the_system_says(
    calibrated_cnn, tmp_path
):
    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real" / "deep")
    # 'link/..' is 'real', as the system resolves it (not tmp_path).
    keras_quant.export(calibrated_cnn, tmp_path / "link/../m.tflite", "float16")
    assert listing(tmp_path / "real") == ["deep", "m.tflite"]
    assert listing(tmp_path) == ["link", "real"]


def test_a_failed_rename_leaves_no_temporary_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        files.write_atomically(tmp_path / "nosuch/../m.bin", b"data")
    assert listing(tmp_path) == []
    with pytest.raises(FileNotFoundError):
        with files.staged():
            files.write_atomically(tmp_path / "a.bin", b"a")
            files.write_atomically(tmp_path / "nosuch/../b.bin", b"b")
            files.write_atomically(tmp_path / "c.bin", b"c")
    assert listing(tmp_path) == ["a.bin"]  # renamed before b failed


# --- 4. NaN or infinite validation data -----------------------------------


@pytest.mark.parametrize("mode", ["auto", "int8", "float16"])
@pytest.mark.parametrize(
    "spoil, message",
    [
        (
            lambda x, y: (np.full_like(x, np.nan), y),
            "holds 22400 NaN values in its inputs (x), of 22400 values",
        ),
        (
            lambda x, y: (x, np.where(y == 3, np.inf, y).astype("float32")),
            "infinite value",
        ),
    ],
    ids=["nan_inputs", "infinite_labels"],
)
def test_non_finite_validation_data_is_refused_in_every_mode(
    calibrated_cnn, digits, good_file, mode, spoil, message
):
    # mode="auto" used to measure NaN metrics and pick int8.
    x, y = spoil(*digits["val"])
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        keras_quant.export(
            calibrated_cnn,
            good_file.parent / "m.tflite",
            mode,
            validation_data=(x, y),
        )
    assert "labels (y)" in str(e.value) or "inputs (x)" in str(e.value)
    assert_untouched(good_file)


def test_non_finite_values_are_counted_by_array():
    from keras_quant import data

    x = [np.zeros((4, 2)), np.array([[np.nan, np.inf], [1, -np.inf]])]
    with pytest.raises(ValueError) as error:
        data.check_finite(x, np.zeros(4), where="here")
    assert str(error.value).startswith(
        "here holds 1 NaN value and 2 infinite values in its inputs (x[1]), "
        "of 4 values:"
    )
    data.check_finite(x[0], np.arange(4), where="here")  # finite: no error


# --- 6. names no file can have -----------------------------------------


@pytest.mark.parametrize(
    "name, error, message",
    [
        ("a\0b.tflite", ValueError, "holds a NUL byte"),
        ("a" * 300 + ".tflite", keras_quant.UnwritablePathError, "307 bytes"),
        ("a" * 300 + "/m.tflite", keras_quant.UnwritablePathError, "300 bytes"),
    ],
)
def test_impossible_names_are_refused_before_converting(
    calibrated_cnn, good_file, name, error, message
):
    with pytest.raises(error, match=message):
        keras_quant.export(calibrated_cnn, str(good_file.parent / name))
    assert_untouched(good_file)


def test_a_report_dir_through_a_missing_folder_is_refused(
    calibrated_cnn, good_file
):
    with pytest.raises(keras_quant.UnwritablePathError, match="nosuch"):
        keras_quant.export(
            calibrated_cnn,
            good_file.parent / "m.tflite",
            "float16",
            report_dir=good_file.parent / "nosuch" / ".." / "report",
        )
    assert_untouched(good_file)
