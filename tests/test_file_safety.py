"""Nothing lost: a failed, killed or full-disk export or save leaves every
destination as it was or complete, with its permissions."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import keras
import numpy as np
import pytest

import keras_quant
from keras_quant.exporting import checkpoint
from keras_quant.exporting import files
from tests.children import write_checkpoints
from tests.conftest import assert_untouched

CHILDREN = os.path.join(os.path.dirname(__file__), "children")
REPOSITORY = os.path.dirname(os.path.dirname(__file__))
TEMPORARY = files.TEMPORARY_PREFIX


def test_failed_comparison_keeps_the_previous_file(calibrated_cnn, good_file):
    images = np.zeros((10, 5, 5, 1), "float32")  # the model takes 8x8
    with pytest.raises(ValueError):
        keras_quant.export(
            calibrated_cnn,
            good_file,
            "int8",
            validation_data=(images, np.zeros(10, "int32")),
        )
    assert_untouched(good_file)


def test_folder_destination_is_refused_before_converting(
    calibrated_cnn, tmp_path
):
    folder = tmp_path / "m.tflite"
    folder.mkdir()
    with pytest.raises(keras_quant.UnwritablePathError, match="is a folder"):
        keras_quant.export(calibrated_cnn, folder, "float16")
    assert os.listdir(folder) == []


def test_report_dir_that_is_a_file_is_refused_before_converting(
    calibrated_cnn, good_file
):
    with pytest.raises(keras_quant.UnwritablePathError, match="is a file"):
        keras_quant.export(
            calibrated_cnn,
            good_file.parent / "m.tflite",
            "float16",
            report_dir=good_file,
        )
    assert_untouched(good_file)


def test_reexport_keeps_the_files_permissions(calibrated_cnn, tmp_path):
    path = tmp_path / "m.tflite"
    keras_quant.export(calibrated_cnn, path, "float16")
    os.chmod(path, 0o600)
    keras_quant.export(calibrated_cnn, path, "dynamic")
    assert os.stat(path).st_mode & 0o777 == 0o600
    calibrated_cnn.save_modes = ("float16",)
    calibrated_cnn.save(tmp_path / "c.keras")
    for name in ("c.keras", "c_float16.tflite", "c.quant.json"):
        os.chmod(tmp_path / name, 0o640)
    calibrated_cnn.save(tmp_path / "c.keras")
    for name in ("c.keras", "c_float16.tflite", "c.quant.json"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o640


def first_kernel(model):
    return next(
        layer.kernel for layer in model.layers if hasattr(layer, "kernel")
    )


def snapshot(folder):
    return {
        name: (folder / name).read_bytes()
        for name in os.listdir(folder)
        if not name.startswith(TEMPORARY)
    }


@pytest.fixture
def own_cnn(trained_cnn, digits):
    """A calibrated copy of the trained CNN whose weights a test may
    change (`calibrated_cnn` shares the session's)."""
    model = keras.models.clone_model(trained_cnn)
    model.set_weights(trained_cnn.get_weights())
    observed = keras_quant.observe(model)
    observed.evaluate(*digits["val"], verbose=0)
    return observed


def test_a_checkpoint_whose_export_fails_is_not_written(
    own_cnn, tmp_path, monkeypatch
):
    """The report fails after the `.keras` and `.tflite` were written:
    none of them replaces the previous checkpoint's."""
    own_cnn.save_modes = ("float16",)
    own_cnn.save_report = True
    own_cnn.save(tmp_path / "c.keras")
    assert checkpoint.is_complete(tmp_path / "c.keras")
    before = snapshot(tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    from keras_quant.exporting import save_hook

    monkeypatch.setattr(save_hook.report_lib, "write_report", full_disk)
    kernel = first_kernel(own_cnn)
    kernel.assign(kernel * 2)
    with pytest.raises(OSError, match="No space"):
        own_cnn.save(tmp_path / "c.keras")
    assert snapshot(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == sorted(before)  # no temporaries


@contextlib.contextmanager
def small_tmpfs(folder, size):
    """A tmpfs of `size` mounted on `folder`, or a skip where this process
    may not mount one (it needs root)."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill(folder, leave):
    """Fills `folder`'s file system but for about `leave` bytes."""
    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as stream:
        stream.write(b"\0" * max(free - leave, 0))


@pytest.mark.slow
def test_full_disk_leaves_the_previous_checkpoint(own_cnn, tmp_path):
    own_cnn.save_modes = ("float16", "dynamic")
    own_cnn.save_report = False
    kernel = first_kernel(own_cnn)
    outcomes = []
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        own_cnn.save(disk / "c.keras")
        size = sum(len(data) for data in snapshot(disk).values())
        for leave in (0, 8 << 10, size // 2, size, 2 * size + (64 << 10)):
            before = snapshot(disk)
            kernel.assign(kernel * 1.5)
            fill(disk, leave)
            try:
                own_cnn.save(disk / "c.keras")
                outcomes.append("saved")
                assert checkpoint.is_complete(disk / "c.keras")
            except OSError:
                outcomes.append("refused")
                after = snapshot(disk)
                after.pop("filler")
                assert after == before
            os.unlink(disk / "filler")
            assert not [n for n in os.listdir(disk) if n.startswith(TEMPORARY)]
    print(f"full disk, leaving 0 B to {size} B free: {outcomes}")
    assert "refused" in outcomes  # the disk really was full
    assert outcomes[-1] == "saved"  # and with room, the save goes through


def run_until_killed(script, folder, wait_for_lines, delay):
    """Starts a child, waits for its `wait_for_lines`-th line, then kills it
    with SIGKILL `delay` seconds later."""
    child = subprocess.Popen(
        [sys.executable, os.path.join(CHILDREN, script), str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": REPOSITORY},
    )
    for _ in range(wait_for_lines):
        assert child.stdout.readline(), "the child ended before writing"
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()


def clean_temporaries(folder):
    left = [n for n in os.listdir(folder) if n.startswith(TEMPORARY)]
    for name in left:
        os.unlink(folder / name)
    return len(left)


@pytest.mark.slow
def test_killed_checkpoint_writer_leaves_only_whole_files(tmp_path):
    """60 SIGKILLs at random moments of a loop writing three-file
    checkpoints the way `ObservedModel.save` does: every file is always
    a whole one, and whenever the record is complete, it is right."""
    rng = np.random.default_rng(0)
    kills = torn = 0
    for kill in range(60):
        run_until_killed(
            "write_checkpoints.py", tmp_path, kill == 0, rng.uniform(0, 0.3)
        )
        kills += 1
        clean_temporaries(tmp_path)
        for name in write_checkpoints.NAMES:
            assert write_checkpoints.is_whole((tmp_path / name).read_bytes())
        generations = {
            (tmp_path / name).read_bytes()[:8]
            for name in write_checkpoints.NAMES
        }
        if checkpoint.is_complete(tmp_path / "m.keras"):
            assert len(generations) == 1
        else:
            torn += 1
    print(f"{kills} kills, {torn} left a checkpoint its record rejects")
    assert kills == 60


@pytest.mark.slow
def test_killed_save_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILLs during `ObservedModel.save` with two exports: the `.keras`
    always opens as a zip and the `.tflite` files always load."""
    from keras_quant.runtime import litert

    rng = np.random.default_rng(1)
    for _ in range(5):
        run_until_killed("save_observed.py", tmp_path, 1, rng.uniform(0, 1.5))
        clean_temporaries(tmp_path)
        with zipfile.ZipFile(tmp_path / "m.keras") as archive:
            assert archive.testzip() is None
        for mode in ("float16", "dynamic"):
            path = tmp_path / f"m_{mode}.tflite"
            litert.allocate(litert.interpreter(path.read_bytes()))
    model = keras.saving.load_model(tmp_path / "m.keras")
    assert model.save_modes == ("float16", "dynamic")
