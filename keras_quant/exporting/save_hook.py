"""The export hook at save time: `.tflite` files beside a saved `.keras`.

`ObservedModel.save` (and so `ModelCheckpoint`) calls the saver that this
module registers with `observation.observed_model.on_save`: the
observation stage knows nothing of exporting, so imports only go down.

A checkpoint is written all or nothing (`files.staged`): the `.keras`, the
`.tflite` files and the `.quant.json` go to temporary files, and are
renamed over the previous checkpoint's only once all are complete, the
`.quant.json` last. It lists every file's SHA-256, so a reader can tell a
complete checkpoint (`checkpoint.is_complete`).
"""

import os
import warnings
import weakref

from keras_quant.exporting import api
from keras_quant.exporting import checkpoint
from keras_quant.exporting import files
from keras_quant.exporting import report as report_lib
from keras_quant.exporting import workers
from keras_quant.exporting.plan import plan_export
from keras_quant.observation import observed_model


def export_beside(model, keras_path, modes, report=False):
    """Exports `modes` next to a saved `.keras` file, with a JSON report.

    Writes `<stem>_<mode>.tflite` for each mode and `<stem>.quant.json`;
    with `report`, also `<stem>.report.html` and `<stem>.report.json`.
    A mode that fails with a keras-quant error (no ranges yet, NaN
    activations, a model the mode cannot hold) is skipped with a warning
    and its reason recorded under `"skipped"`, so that a checkpoint save
    never fails because of the export (decision D8).

    Returns:
        The list of `ExportResult`.
    """
    stem = os.fspath(keras_path)[: -len(checkpoint.KERAS_SUFFIX)]
    skipped = {}

    def skip(mode, error):
        skipped[mode.value] = f"{type(error).__name__}: {error}"
        reason = skipped[mode.value]
        warnings.warn(f"keras-quant skipped {mode.value!r} on save: {reason}")

    plan = plan_export(
        model,
        {mode: f"{stem}_{mode}{files.TFLITE_SUFFIX}" for mode in modes},
    )
    results = api.run(model, plan, on_error=skip)
    summary = {
        "keras_file": os.path.basename(os.fspath(keras_path)),
        "exports": [r.to_dict() for r in results],
        "skipped": skipped,
    }
    if report:
        report_lib.write_report(
            os.path.dirname(stem) or ".",
            model,
            results,
            stem=f"{os.path.basename(stem)}.report",
        )
    checkpoint.write_record(  # last: the commit record
        keras_path, [keras_path] + [r.path for r in results], summary
    )
    return results


def save_checkpoint(model, keras_path, save_keras):
    """Saves `model` to `keras_path` with `save_keras(path)`, and its
    `save_modes` beside it, all or nothing; on a worker of a multi-worker
    strategy other than the chief, nothing."""
    if not workers.exports_here(model):
        return  # one writer per cluster: the chief (decision D39)
    keras_path = os.fspath(keras_path)
    files.check_filepath(keras_path, checkpoint.KERAS_SUFFIX)
    with files.staged():
        with files.replacing(keras_path) as temporary:
            save_keras(temporary)
        if model.save_modes:
            export_beside(
                model, keras_path, model.save_modes, report=model.save_report
            )
    _say_rows_are_saved(model, keras_path)


# Models already told that their `.keras` file holds input rows.
_TOLD = weakref.WeakSet()


def _say_rows_are_saved(model, keras_path):
    """Warns, once per model, that the file holds rows of its inputs
    (decision D49): whoever gets the file gets them."""
    rows = observed_model.kept_rows(model)
    if not rows or model in _TOLD:
        return
    _TOLD.add(model)
    warnings.warn(
        f"{keras_path} holds {rows} input rows the model saw (its replay "
        "sample, which measures at export the ranges inside "
        "LayerNormalization, attention and recurrent layers): whoever has "
        "the file has those rows. To keep none, observe with "
        "`replay_samples=0`; to erase them from a saved file, "
        "`keras_quant.strip_samples(path)` or `keras-quant strip FILE`.",
        stacklevel=3,
    )


def strip_samples(target):
    """Erases the input rows a model keeps (its replay samples), from an
    observed model or from a saved `.keras` file, rewritten in place all
    or nothing (the `.tflite` files beside it are not touched).

    Args:
        target: an `ObservedModel`, or the path of a `.keras` file.

    Returns:
        How many rows were erased.

    Example:

    >>> inputs = keras.Input((3,))
    >>> model = keras_quant.observe(keras.Model(inputs, inputs * 2))
    >>> _ = model.predict(np.ones((5, 3), "float32"), verbose=0)
    >>> strip_samples(model), observed_model.kept_rows(model)
    (5, 0)
    """
    if not isinstance(target, (str, os.PathLike)):
        return observed_model.strip_samples(target)
    import keras

    path = os.fspath(target)
    files.check_filepath(path, checkpoint.KERAS_SUFFIX)
    model = keras.saving.load_model(path)
    erased = observed_model.strip_samples(model)
    with files.replacing(path) as temporary:
        keras.Model.save(model, temporary)  # the file alone, no exports
    return erased


observed_model.on_save(save_checkpoint)
