"""The export hook at save time: `.tflite` files beside a saved `.keras`.

`ObservedModel.save` (and so `ModelCheckpoint`) calls the hook that this
module registers with `observation.observed_model.on_save`: the
observation stage knows nothing of exporting, so imports only go down.
"""

import json
import os
import warnings

from keras_quant.exporting import api
from keras_quant.exporting import files
from keras_quant.exporting import report as report_lib
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
    stem = os.fspath(keras_path)[: -len(".keras")]
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
    text = json.dumps(summary, indent=2, default=files.json_default)
    files.write_atomically(f"{stem}.quant.json", text.encode())
    if report:
        report_lib.write_report(
            os.path.dirname(stem) or ".",
            model,
            results,
            stem=f"{os.path.basename(stem)}.report",
        )
    return results


def _after_save(model, filepath):
    export_beside(model, filepath, model.save_modes, report=model.save_report)


observed_model.on_save(_after_save)
