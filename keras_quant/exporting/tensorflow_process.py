"""Exporting a model that runs on JAX or PyTorch, through TensorFlow.

The TFLite converter traces TensorFlow graphs; a Keras model built on the
JAX or PyTorch backend has none. When the running backend is not
TensorFlow, `exporting.api.run` hands its plan here: the model (weights,
ranges, replay sample) is pickled, which Keras does in memory in the
`.keras` format, and sent with the plan to a child process with
`KERAS_BACKEND=tensorflow` (`conversion.isolation.run_isolated`). The
child loads it and runs the same plan into a temporary folder of its own
(`inside`), and answers with each file's bytes, removing the folder
before it answers; this process writes the bytes to their destinations
with `files.write_atomically` (so a checkpoint's files are still staged
together), then `api.run` the report. The bytes are those a TensorFlow
process exporting the same `.keras` file writes (decision D38).

Nothing is written to this process's disk: killed at any moment, it
leaves no copy of the model or of its replay rows behind, and the child
removes its folder when the job ends, whether or not anyone reads the
answer (decision D52).

The child costs about as much as starting TensorFlow and loading the model
(a few seconds) on top of the export itself.
"""

import dataclasses
import os
import pickle

import keras

from keras_quant import data as data_lib
from keras_quant.conversion import isolation
from keras_quant.conversion import routes
from keras_quant.exporting import files

BACKEND = "tensorflow"


def needed():
    """Whether this process's Keras backend cannot convert (not
    TensorFlow)."""
    return keras.backend.backend() != BACKEND


# The child's environment, and what it imports as it starts.
ENVIRONMENT = {"KERAS_BACKEND": BACKEND}
CHILD_MODULES = ("keras_quant.exporting.api",)


def warm_up(engine=False):
    """Starts the TensorFlow child now, and with `engine` the engine's
    child inside it; the first export will use them."""
    isolation.prepare(ENVIRONMENT, CHILD_MODULES)
    if engine:  # a job nobody waits for: its answer is read before the next
        isolation.submit(routes.warm_up, environment=ENVIRONMENT)


def run(model, plan, export_pickled, on_error=None):
    """Writes the files of `plan` (not its report) from a TensorFlow child
    process; returns the `ExportResult`s, their paths the plan's.

    Args:
        model: the model, on any backend.
        plan: the `ExportPlan`.
        export_pickled: the module-level function the child runs, as
            `export_pickled(pickled_model, plan)` returning
            `([(result, tflite bytes), ...], [(mode, error), ...])`
            (`api.export_pickled`).
        on_error: as for `api.run`.
    """
    written, failures = isolation.run_isolated(
        export_pickled,
        pickle.dumps(model),
        _for_child(plan),
        environment=ENVIRONMENT,
    )
    results = [_write(result, tflite, plan) for result, tflite in written]
    for mode, error in failures:
        if on_error is None:
            raise error
        on_error(mode, error)
    return results


def _for_child(plan):
    """`plan` as the child runs it: its files named by their position
    (`inside` puts them in the child's folder), its validation data as
    arrays (what crosses to the child must be picklable), no report."""
    destinations = tuple(
        dataclasses.replace(d, path=f"{i}.tflite")
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


def inside(plan, folder):
    """The child's `plan`, writing its files into `folder`."""
    destinations = tuple(
        dataclasses.replace(d, path=os.path.join(folder, d.path))
        for d in plan.destinations
    )
    return dataclasses.replace(plan, destinations=destinations)


def _numpy(part):
    if isinstance(part, (list, tuple)):
        return [keras.ops.convert_to_numpy(p) for p in part]
    return None if part is None else keras.ops.convert_to_numpy(part)


def _write(result, tflite, plan):
    """Writes one file the child made to its destination; the result,
    with it."""
    index = int(os.path.basename(result.path).split(".")[0])
    destination = plan.destinations[index].path
    files.write_atomically(destination, tflite)
    return dataclasses.replace(result, path=destination)
