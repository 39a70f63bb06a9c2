"""Exporting a model that runs on JAX or PyTorch, through TensorFlow.

The TFLite converter traces TensorFlow graphs; a Keras model built on the
JAX or PyTorch backend has none. When the running backend is not
TensorFlow, `exporting.api.run` hands its plan here: the model (weights,
ranges, replay sample) is saved to a temporary `.keras` file, a child
process with `KERAS_BACKEND=tensorflow` loads it and runs the same plan
into a temporary folder (`conversion.isolation.run_isolated`), and this
process writes the files to their destinations with
`files.write_atomically` (so a checkpoint's files are still staged
together), then `api.run` the report. The bytes are those a TensorFlow
process exporting the same `.keras` file writes (decision D38).

The child costs about as much as starting TensorFlow and loading the model
(a few seconds) on top of the export itself.
"""

import dataclasses
import os
import tempfile

import keras

from keras_quant import data as data_lib
from keras_quant.conversion import isolation
from keras_quant.exporting import files

BACKEND = "tensorflow"


def needed():
    """Whether this process's Keras backend cannot convert (not
    TensorFlow)."""
    return keras.backend.backend() != BACKEND


def run(model, plan, export_saved, on_error=None):
    """Writes the files of `plan` (not its report) from a TensorFlow child
    process; returns the `ExportResult`s, their paths the plan's.

    Args:
        model: the model, on any backend.
        plan: the `ExportPlan`.
        export_saved: the module-level function the child runs, as
            `export_saved(keras_path, plan)` returning `(results,
            [(mode, error), ...])` (`api.export_saved`).
        on_error: as for `api.run`.
    """
    with tempfile.TemporaryDirectory(prefix="keras-quant-") as folder:
        keras_path = os.path.join(folder, "model.keras")
        keras.Model.save(model, keras_path)  # the model, not the checkpoint
        results, failures = isolation.run_isolated(
            export_saved,
            keras_path,
            _into(plan, folder),
            environment={"KERAS_BACKEND": BACKEND},
        )
        results = [_written(result, plan) for result in results]
    for mode, error in failures:
        if on_error is None:
            raise error
        on_error(mode, error)
    return results


def _into(plan, folder):
    """`plan` writing into `folder`, with its validation data as arrays
    (what crosses to the child must be picklable)."""
    destinations = tuple(
        dataclasses.replace(d, path=os.path.join(folder, f"{i}.tflite"))
        for i, d in enumerate(plan.destinations)
    )
    validation = plan.validation_data
    if validation is not None:
        validation = tuple(
            _numpy(part) for part in data_lib.as_arrays(validation)
        )
    return dataclasses.replace(
        plan,
        destinations=destinations,
        validation_data=validation,
        report_dir=None,  # written here, from the final files
    )


def _numpy(part):
    if isinstance(part, (list, tuple)):
        return [keras.ops.convert_to_numpy(p) for p in part]
    return None if part is None else keras.ops.convert_to_numpy(part)


def _written(result, plan):
    """Writes the child's file to its destination; the result, with it."""
    index = int(os.path.basename(result.path).split(".")[0])
    destination = plan.destinations[index].path
    with open(result.path, "rb") as stream:
        files.write_atomically(destination, stream.read())
    return dataclasses.replace(result, path=destination)
