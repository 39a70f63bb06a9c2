"""`export()`: a Keras model to a `.tflite` file, checked and reported.

`export` validates its arguments, collects the model's ranges, converts
(`conversion.convert`), writes the file atomically and, given validation
data, compares float and quantized metrics. Files are written through a
temporary file and a rename, so a failed export never leaves a partial file
nor replaces a good one. `export_beside` is the save-time hook's export.
"""

import contextlib
import dataclasses
import json
import os
import tempfile
import warnings

import numpy as np

from keras_quant import conversion
from keras_quant import evaluation
from keras_quant import modes as modes_lib
from keras_quant import tfmot_interop
from keras_quant.errors import KerasQuantError
from keras_quant.errors import NonFiniteActivationError
from keras_quant.errors import NotCalibratedError
from keras_quant.errors import UnwritablePathError
from keras_quant.modes import MODES
from keras_quant.modes import Mode
from keras_quant.observed_model import find_observers
from keras_quant.observers import read

TFLITE_SUFFIX = ".tflite"


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What an export wrote and, given data, how it compares with float.

    Attributes:
        path: the `.tflite` file written.
        mode: the `Mode` exported.
        io_dtype: integer input/output type (`int8_only`), else None.
        size_bytes: size of the file.
        float32_size_bytes: size of the same model exported as float32.
        size_ratio: `size_bytes / float32_size_bytes`.
        ranges: `{point name: (min, max)}` used, for range-based modes.
        float_metrics: compiled loss and metrics of the Keras model on the
            validation data (None without `validation_data`).
        quantized_metrics: the same for the `.tflite` model in LiteRT.
        max_abs_output_diff: largest output difference, float vs LiteRT.
        keep_float: layers whose ops were kept float (`int8` only).
        selection: for `mode="auto"`, the `Selection`: every candidate
            tried with its measured size, accuracy and latency, and why
            the written one was chosen.
    """

    path: str
    mode: Mode
    io_dtype: str
    size_bytes: int
    float32_size_bytes: int
    size_ratio: float
    ranges: dict
    float_metrics: dict = None
    quantized_metrics: dict = None
    max_abs_output_diff: float = None
    keep_float: tuple = ()
    selection: object = None

    def metric_drop(self, name):
        """`float - quantized` for a metric both were evaluated on."""
        return self.float_metrics[name] - self.quantized_metrics[name]

    def to_dict(self):
        """A JSON-ready dict."""
        result = dataclasses.asdict(self)
        result["mode"] = self.mode.value
        result["ranges"] = {k: list(v) for k, v in self.ranges.items()}
        result["keep_float"] = list(self.keep_float)
        if self.selection is not None:
            result["selection"] = self.selection.to_dict()
        return result


def export(
    model,
    filepath,
    mode="int8",
    *,
    io_dtype=None,
    validation_data=None,
    batch_size=256,
    keep_float=(),
    max_accuracy_drop=None,
    target=None,
    report_dir=None,
):
    """Writes `model` as a `.tflite` file in one quantization mode.

    Args:
        model: a Keras model; for `int8`, `int8_only` and `int16x8` an
            observed model (`observe`) that has collected ranges, or a model
            loaded from such a `.keras` file.
        filepath: destination ending in `.tflite`; missing folders are made.
        mode: one of `"float32"`, `"dynamic"`, `"int8"` (float fallback,
            float input/output), `"int8_only"`, `"float16"`, `"int16x8"`;
            or `"auto"`: the smallest, fastest mode for `target` whose
            accuracy on `validation_data` is within `max_accuracy_drop` of
            float (see `keras_quant.selection`). Defaults to `"int8"`.
        io_dtype: `"int8"` (default) or `"uint8"`, for `"int8_only"` only.
        validation_data: optional `(x, y)` or `tf.data.Dataset`; when given,
            the result carries float and quantized metrics.
        batch_size: batch size for the validation run. Defaults to `256`.
        keep_float: names of layers to keep in float in `int8` mode: their
            TFLite ops compute in float between quantized neighbours, for
            layers that quantization hurts most (see `analyze`).
        max_accuracy_drop: for `"auto"`: how much worse than float the
            model's first compiled metric may get, in points (hundredths)
            for a metric that grows like accuracy, in percent of the float
            value for one that shrinks (and for the loss, used when there
            is no metric). Defaults to `1.0`.
        target: for `"auto"`: `"cpu"` (default), `"gpu"`, or
            `"integer_only"` (microcontrollers, Edge TPU-like
            accelerators).
        report_dir: if given, a folder to write `report.json` and
            `report.html` into (see `keras_quant.report`); with
            `validation_data` it shows activation histograms and per-point
            errors.

    Returns:
        An `ExportResult`.

    Raises:
        ValueError: unknown mode, bad `io_dtype`, a path not ending in
            `.tflite`, or `keep_float` naming unknown layers or used with
            another mode than `int8`.
        UnsupportedModelError: not a Functional or Sequential Keras model.
        NotCalibratedError: a range-based mode on a model without ranges.
        NonFiniteActivationError: observers saw NaN or Inf values.
        UnwritablePathError: the destination cannot be written.
        ExportError: the converted model breaks the mode's contract.

    Example:

    >>> inputs = keras.Input((3,))
    >>> dense = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> model = keras_quant.observe(dense)
    >>> _ = model.predict(np.random.rand(32, 3).astype("float32"), verbose=0)
    >>> result = export(model, tmp_dir + "/m.tflite", mode="int8_only")
    >>> result.mode, result.io_dtype
    (<Mode.INT8_ONLY: 'int8_only'>, 'int8')
    """
    if mode == "auto":
        from keras_quant import selection  # it builds on this module

        result = selection.export_auto(
            model,
            filepath,
            validation_data=validation_data,
            max_accuracy_drop=1.0
            if max_accuracy_drop is None
            else max_accuracy_drop,
            target=target or "cpu",
            io_dtype=io_dtype,
            batch_size=batch_size,
        )
    else:
        _refuse_choice_arguments(mode, max_accuracy_drop, target)
        result = _export(
            model,
            filepath,
            mode,
            io_dtype,
            validation_data,
            batch_size,
            keep_float=keep_float,
        )
    if report_dir is not None:
        from keras_quant import report  # it builds on this module

        report.write_report(
            report_dir,
            model,
            [result],
            validation_data,
            selection=result.selection,
        )
    return result


def _refuse_choice_arguments(mode, max_accuracy_drop, target):
    if max_accuracy_drop is not None or target is not None:
        raise ValueError(
            "`max_accuracy_drop` and `target` choose a mode, so they need "
            f"mode='auto'. Received: mode={mode!r}."
        )


def export_many(
    model,
    filepaths,
    *,
    io_dtype=None,
    validation_data=None,
    batch_size=256,
    on_error=None,
):
    """Exports several modes of one model, converting float32 once.

    Args:
        model: as for `export`.
        filepaths: `{mode: filepath}`, in the order to export.
        io_dtype: as for `export`; applied to integer input/output modes.
        validation_data: as for `export`.
        batch_size: as for `export`.
        on_error: if given, `on_error(mode, error)` is called for a mode that
            fails with a `KerasQuantError`, and the other modes go on;
            otherwise the error is raised.

    Returns:
        The `ExportResult` of each mode that was written.
    """
    shared = {}  # float32 size and float predictions, computed once
    results = []
    for mode, filepath in filepaths.items():
        mode = modes_lib.parse_mode(mode)
        mode_io = io_dtype if MODES[mode].integer_io else None
        try:
            results.append(
                _export(
                    model,
                    filepath,
                    mode,
                    mode_io,
                    validation_data,
                    batch_size,
                    shared,
                )
            )
        except KerasQuantError as error:
            if on_error is None:
                raise
            on_error(mode, error)
    return results


def _export(
    model,
    filepath,
    mode,
    io_dtype,
    validation_data,
    batch_size,
    shared=None,
    keep_float=(),
):
    mode = modes_lib.parse_mode(mode)
    io_dtype = modes_lib.check_io_dtype(mode, io_dtype)
    filepath = check_filepath(filepath)
    conversion.check_model(model)
    ranges = collect_ranges(model, mode)
    keep_float = conversion.check_keep_float(model, mode, keep_float)
    tflite = conversion.convert(model, mode, io_dtype, keep_float)
    shared = {} if shared is None else shared
    float32_size = _float32_size(model, mode, tflite, shared)
    write_atomically(filepath, tflite)
    comparison = {}
    if validation_data is not None:
        found = evaluation.compare(
            model, tflite, validation_data, batch_size, shared
        )
        comparison = dict(
            float_metrics=found.float_metrics,
            quantized_metrics=found.quantized_metrics,
            max_abs_output_diff=found.max_abs_output_diff,
        )
    return ExportResult(
        path=filepath,
        mode=mode,
        io_dtype=io_dtype,
        size_bytes=len(tflite),
        float32_size_bytes=float32_size,
        size_ratio=len(tflite) / float32_size,
        ranges=ranges,
        keep_float=keep_float,
        **comparison,
    )


def collect_ranges(model, mode):
    """`{point: (min, max)}` for a range-based mode, `{}` for the others.

    Raises:
        NotCalibratedError: no observers, or observers without a range.
        NonFiniteActivationError: an observer recorded NaN/Inf values.
    """
    if not MODES[mode].needs_ranges or tfmot_interop.is_tf_keras_model(model):
        return {}
    observers = find_observers(model)
    if not observers:
        raise NotCalibratedError(
            f"Mode {mode.value!r} needs activation ranges, and model "
            f"'{model.name}' has no observers. Wrap it with "
            "`keras_quant.observe(model)`, then train it with the "
            "`RangeCalibration` callback or run `evaluate` on calibration data."
        )
    missing = [o.point for o in observers if not o.calibrated]
    if missing:
        raise NotCalibratedError(
            f"Mode {mode.value!r} needs activation ranges, and these "
            f"quantization points have none yet: {', '.join(missing)}. Run "
            "`model.evaluate(calibration_data)` (or train with the "
            "`RangeCalibration` callback and validation data) first."
        )
    nonfinite = {
        o.point: read(o.nonfinite_count_)
        for o in observers
        if read(o.nonfinite_count_) > 0
    }
    if nonfinite:
        listed = ", ".join(f"{k} ({v})" for k, v in nonfinite.items())
        raise NonFiniteActivationError(
            f"Observers saw NaN or infinite activations (count per point): "
            f"{listed}. Ranges from such data are not trustworthy. Check the "
            "calibration data and the model for NaN/Inf, then call "
            "`keras_quant.reset_ranges(model)` and calibrate again."
        )
    return {o.point: o.range() for o in observers}


def _float32_size(model, mode, tflite, known):
    """The model's float32 size, converted once per `known` dict."""
    if mode is Mode.FLOAT32:
        known["size"] = len(tflite)
    if "size" not in known:
        known["size"] = len(conversion.convert(model, Mode.FLOAT32))
    return known["size"]


def check_filepath(filepath):
    path = os.fspath(filepath)
    if not path.endswith(TFLITE_SUFFIX):
        raise ValueError(
            f"Expected `filepath` to end in '{TFLITE_SUFFIX}'. "
            f"Received: filepath={path!r}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".kq-check-"):
            pass
    except OSError as error:
        raise UnwritablePathError(
            f"Cannot write to folder {folder!r} ({error.strerror or error}). "
            "Choose a `filepath` in a folder you can write to."
        ) from error
    return path


def write_atomically(filepath, data):
    """Writes `data` to `filepath` through a temporary file and a rename.

    The file gets the permissions a plain `open(filepath, "wb")` would give
    (0666 less the umask), not the private ones of a temporary file.
    """
    folder = os.path.dirname(os.path.abspath(filepath))
    handle, temporary = tempfile.mkstemp(
        dir=folder, prefix=".kq-", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, filepath)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


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

    results = export_many(
        model,
        {mode: f"{stem}_{mode}{TFLITE_SUFFIX}" for mode in modes},
        on_error=skip,
    )
    summary = {
        "keras_file": os.path.basename(os.fspath(keras_path)),
        "exports": [r.to_dict() for r in results],
        "skipped": skipped,
    }
    text = json.dumps(summary, indent=2, default=json_default)
    write_atomically(f"{stem}.quant.json", text.encode())
    if report:
        from keras_quant import report as report_lib

        report_lib.write_report(
            os.path.dirname(stem) or ".",
            model,
            results,
            stem=f"{os.path.basename(stem)}.report",
        )
    return results


def json_default(value):
    """`json.dumps` help for NumPy scalars."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Cannot serialize {type(value).__name__}")
