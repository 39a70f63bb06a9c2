"""The same training script on TensorFlow, JAX and PyTorch: the same
ranges, the same six files, exported through TensorFlow when the backend
is not."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_quant
from keras_quant.exporting import checkpoint
from tests.children import backend_run
from tests.conftest import small_cnn

SCRIPT = os.path.join(os.path.dirname(__file__), "children", "backend_run.py")
REPOSITORY = os.path.dirname(os.path.dirname(__file__))
BACKENDS = ("tensorflow", "jax", "torch")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "float.keras"
    small_cnn().save(path)
    return path


@pytest.fixture(scope="module")
def runs(model_file, tmp_path_factory):
    """`{backend: folder}` after the script ran on each backend."""
    folders = {}
    for backend in BACKENDS:
        if backend != "tensorflow":
            pytest.importorskip(backend)  # the [backends] extra
        folder = tmp_path_factory.mktemp(backend)
        done = subprocess.run(
            [sys.executable, SCRIPT, str(model_file), str(folder)],
            capture_output=True,
            text=True,
            cwd=REPOSITORY,
            env={
                **os.environ,
                "KERAS_BACKEND": backend,
                "PYTHONPATH": REPOSITORY,
            },
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        folders[backend] = folder
    return folders


def load_ranges(folder):
    with open(folder / "ranges.json") as stream:
        return json.load(stream)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_ranges_equal_tensorflow_on_the_same_data_and_weights(runs, backend):
    expected = load_ranges(runs["tensorflow"])
    found = load_ranges(runs[backend])
    assert found.pop("backend") == backend
    assert expected.pop("backend") == "tensorflow"
    assert found.keys() == expected.keys()
    for run, points in expected.items():
        assert found[run].keys() == points.keys(), run
        for point, bounds in points.items():
            np.testing.assert_allclose(
                found[run][point],
                bounds,
                rtol=1e-5,
                atol=tolerance(run, bounds),
                err_msg=f"{run} {point}",
            )


def tolerance(run, bounds):
    """Float rounding, or for QAT one int8 step of the range: its forward
    pass rounds to that grid, so a last-bit difference between backends
    can move a value to the next step, and the ranges follow."""
    step = (bounds[1] - bounds[0]) / 255
    return step if run == "qat" else 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoint_saves_six_files_and_training_goes_on(runs, backend):
    folder = runs[backend]
    names = {f"ckpt_{mode}.tflite" for mode in backend_run.SAVE_MODES}
    assert names <= set(os.listdir(folder))
    assert checkpoint.is_complete(folder / "ckpt.keras")
    record = json.loads((folder / "ckpt.quant.json").read_text())
    assert record["skipped"] == {}
    assert (folder / "logs").is_dir()  # TensorBoard ranges, every backend


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_export_from_another_backend_is_byte_identical(runs, backend, tmp_path):
    """The files a JAX or PyTorch process wrote through its TensorFlow
    child equal those this TensorFlow process writes from the same
    checkpoint."""
    folder = runs[backend]
    model = keras.saving.load_model(folder / "ckpt.keras")
    assert model.save_modes == backend_run.SAVE_MODES
    for mode in backend_run.SAVE_MODES:
        path = tmp_path / f"{mode}.tflite"
        keras_quant.export(model, path, mode)
        written = (folder / f"ckpt_{mode}.tflite").read_bytes()
        assert path.read_bytes() == written, mode


def test_nan_and_inf_batches_are_skipped_alike_on_every_backend():
    """A point whose tensor has NaN or Inf skips the batch and counts it,
    with the same min, max and counts on TensorFlow, JAX and PyTorch (on
    XLA a min or max may drop a NaN; the sum does not)."""
    script = os.path.join(
        os.path.dirname(__file__), "children", "nan_collection.py"
    )
    found = {}
    for backend in BACKENDS:
        done = subprocess.run(
            [sys.executable, script],
            env={**os.environ, "KERAS_BACKEND": backend},
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        found[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    # min, max, NaN/Inf batches, batches seen. Column 1 has a NaN, column
    # 3 an Inf, in the first batch; the second is [0.5, 3, 4, 2]. The
    # middle point (ema, momentum 0.9) sees 2 * [-2, 4], then 2 * [4].
    np.testing.assert_allclose(
        found["tensorflow"],
        [
            [3.0, 3.0, 1, 1],
            [0.9 * -4.0 + 0.1 * 8.0, 8.0, 0, 2],
            [6.0, 6.0, 1, 1],
        ],
        rtol=1e-6,
    )
    for backend in ("jax", "torch"):
        np.testing.assert_allclose(
            found[backend], found["tensorflow"], rtol=1e-6
        )
