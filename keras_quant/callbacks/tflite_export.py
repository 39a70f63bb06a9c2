"""`TFLiteExport`: writes `.tflite` files at the right moment of training."""

import os
import string

import keras
import numpy as np

from keras_quant import modes as modes_lib
from keras_quant.exporting import api
from keras_quant.exporting import auto as auto_mode
from keras_quant.exporting import files

SAVE_FREQS = ("train_end", "epoch")
MONITOR_MODES = {
    "min": np.less,
    "max": np.greater,
}


class TFLiteExport(keras.callbacks.Callback):
    """Exports the model being trained to `.tflite` in one or more modes.

    Like `keras.callbacks.ModelCheckpoint`, it can export every epoch, or
    only when a monitored metric improves (`save_best_only`); by default it
    exports once, when training ends.

    Args:
        filepath: destination pattern ending in `.tflite`; may contain
            `{mode}`, `{epoch}` (with `save_freq="train_end"`, the last
            epoch trained) and any key of the epoch logs, as in
            ModelCheckpoint: plain names, with format specs such as
            `{epoch:02d}`, but no attribute or index access. Must contain
            `{mode}` when several modes are exported. Defaults to
            `"model_{mode}.tflite"`. The pattern is checked here, filled
            with sample values (its syntax, format specs, NUL bytes, names
            longer than the file system takes, a `..` after a missing
            folder), and its log keys at the first epoch's end, before any
            export; each filled path is checked again before its export.
        modes: modes to export (see `keras_quant.Mode`), or `"auto"` to
            export the one mode `keras_quant.export(mode="auto")` chooses
            (`{mode}` in `filepath` then reads `auto`). Defaults to
            `("int8",)`.
        validation_data: optional `(x, y)` or `tf.data.Dataset` to compare
            float and quantized metrics on; the results are in `results`.
            Required by `"auto"`.
        save_freq: `"train_end"` or `"epoch"`. Defaults to `"train_end"`.
        monitor: metric for `save_best_only`. Defaults to `"val_loss"`.
        save_best_only: with `save_freq="epoch"`, export only when `monitor`
            improves. Defaults to `False`.
        monitor_mode: `"auto"`, `"min"` or `"max"`: how `monitor` improves
            (Keras's `ModelCheckpoint` calls it `mode`; here `mode` would
            read as an export mode).
            Defaults to `"auto"` (max for accuracy-like names, else min).
        io_dtype: `"int8"` or `"uint8"` for `"int8_only"`.
        max_accuracy_drop: for `"auto"`, see `keras_quant.export`.
        target: for `"auto"`, see `keras_quant.export`.
        report_dir: if given, a folder (pattern, like `filepath`) where each
            export writes `report.json` and `report.html` comparing the
            modes (see `keras_quant.report`).

    Attributes:
        results: the `ExportResult` of the latest export, one per mode.

    Example:

        callbacks = [
            RangeCalibration(),
            TFLiteExport("out/m_{mode}.tflite", modes=("int8", "float16")),
        ]
        observed.fit(x, y, validation_data=(x_val, y_val), callbacks=callbacks)
    """

    def __init__(
        self,
        filepath="model_{mode}.tflite",
        modes=("int8",),
        validation_data=None,
        save_freq="train_end",
        monitor="val_loss",
        save_best_only=False,
        monitor_mode="auto",
        io_dtype=None,
        max_accuracy_drop=None,
        target=None,
        report_dir=None,
    ):
        super().__init__()
        self.report_dir = None if report_dir is None else os.fspath(report_dir)
        self.filepath = os.fspath(filepath)
        self.auto = modes == "auto" or tuple(modes) == ("auto",)
        if self.auto and validation_data is None:
            raise ValueError(
                "modes='auto' measures every candidate mode on real data: "
                "pass `validation_data=(x, y)`."
            )
        self.choice = {"max_accuracy_drop": max_accuracy_drop, "target": target}
        self.modes = (
            () if self.auto else tuple(modes_lib.parse_mode(m) for m in modes)
        )
        if not self.filepath.endswith(files.TFLITE_SUFFIX):
            raise ValueError(
                "Expected `filepath` to end in '.tflite'. "
                f"Received: filepath={self.filepath!r}"
            )
        if len(self.modes) > 1 and "{mode}" not in self.filepath:
            raise ValueError(
                "Exporting several modes needs '{mode}' in `filepath`, so "
                f"the files do not overwrite each other. Received: "
                f"filepath={self.filepath!r}"
            )
        if save_freq not in SAVE_FREQS:
            raise ValueError(
                f"Expected `save_freq` to be one of {SAVE_FREQS}. "
                f"Received: save_freq={save_freq!r}"
            )
        if save_best_only and save_freq != "epoch":
            raise ValueError(
                "`save_best_only=True` compares epochs, so it needs "
                "save_freq='epoch'."
            )
        if io_dtype is not None and not self.auto:
            modes_lib.check_io_dtype(
                modes_lib.Mode.INT8_ONLY
                if modes_lib.Mode.INT8_ONLY in self.modes
                else self.modes[0],
                io_dtype,
            )
        for argument, template in self._templates():
            _check_template(argument, template, self._first_mode())
        self.validation_data = validation_data
        self.save_freq = save_freq
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.monitor_mode = _checked_monitor_mode(monitor_mode)
        self.improved = None  # decided at the first epoch, from the model
        self.io_dtype = io_dtype
        self.best = None
        self.results = []
        self._epochs_done = 0
        self._log_names = set()
        self._unchecked_names = set()

    # tf_keras, which trains tfmot models, asks its callbacks these too.
    _supports_tf_logs = False

    def _implements_train_batch_hooks(self):
        return False

    def _implements_test_batch_hooks(self):
        return False

    def _implements_predict_batch_hooks(self):
        return False

    def on_train_begin(self, logs=None):
        self._epochs_done = 0
        self._log_names = set()
        for argument, template in self._templates():
            self._log_names |= _check_template(
                argument, template, self._first_mode()
            )
        self._unchecked_names = set(self._log_names)
        modes = ("auto",) if self.auto else self.modes
        api.warm_up(self.model, modes)  # its first export will not wait

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._epochs_done = epoch + 1
        self._check_log_names(logs)
        if self.save_freq != "epoch" or not self._log_names <= set(logs):
            return  # (a pattern naming val_ metrics: an epoch that validated)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                raise KeyError(
                    f"TFLiteExport monitors {self.monitor!r}, which is not in "
                    f"the epoch logs: {sorted(logs)}. Pass validation data to "
                    "`fit` or choose another `monitor`."
                )
            if self.improved is None:
                self.improved = _improvement_test(
                    self.model, self.monitor, self.monitor_mode
                )
            if self.best is not None and not self.improved(current, self.best):
                return
            self.best = current
        self._export(epoch + 1, logs)

    def on_train_end(self, logs=None):
        if self.save_freq == "train_end":
            self._export(self._epochs_done, logs or {})

    def _templates(self):
        yield "filepath", self.filepath
        if self.report_dir is not None:
            yield "report_dir", self.report_dir

    def _first_mode(self):
        return "auto" if self.auto else self.modes[0].value

    def _check_log_names(self, logs):
        """Fails on names the pattern uses that the epoch logs lack; names
        of validation metrics wait for an epoch that validated."""
        if not self._unchecked_names:
            return
        validated = any(key.startswith("val_") for key in logs)
        waiting = {
            name
            for name in self._unchecked_names
            if name.startswith("val_") and not validated
        }
        missing = self._unchecked_names - waiting - set(logs)
        if missing:
            raise ValueError(
                f"TFLiteExport's file pattern names {sorted(missing)}, which "
                f"the epoch logs do not have. They have: {sorted(logs)}, and "
                "the pattern may also use {mode} and {epoch}."
            )
        self._unchecked_names = waiting

    def _export(self, epoch, logs):
        modes = ("auto",) if self.auto else [m.value for m in self.modes]
        plan = api.plan_export(
            self.model,
            {
                mode: self.filepath.format(mode=mode, epoch=epoch, **logs)
                for mode in modes
            },
            io_dtype=self.io_dtype,
            validation_data=self.validation_data,
            report_dir=None
            if self.report_dir is None
            else self.report_dir.format(epoch=epoch, **logs),
            **self.choice,
        )
        self.results = api.run(self.model, plan)


def _check_template(argument, template, mode):
    """Checks a file pattern with sample values: its syntax, that its
    fields are plain names (`{mode}`, `{epoch:02d}`, `{val_loss:.3f}`: no
    attribute or index access, no field inside a format spec), and that
    the path it gives can be written (no NUL byte, no name longer than the
    file system takes, no `..` after a missing folder). Returns the log
    names it uses, to check against the first logs."""
    try:
        fields = [
            (name, spec)
            for _, name, spec, _ in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as error:
        raise ValueError(
            f"`{argument}` {template!r} is not a valid pattern: {error}."
        ) from None
    names = {name for name, _ in fields}
    if "" in names or any(name.isdigit() for name in names):
        raise ValueError(
            f"`{argument}` {template!r} has a positional field such as "
            "{} or {0}: name it, e.g. {mode}, {epoch:02d} or {val_loss:.3f}."
        )
    for name, spec in fields:
        if "." in name or "[" in name or "{" in spec:
            field = f"{{{name}:{spec}}}" if spec else f"{{{name}}}"
            problem = (
                "nests a field in its format spec"
                if "{" in spec
                else "reads an attribute or an index"
            )
            raise ValueError(
                f"`{argument}` {template!r} cannot be formatted safely: "
                f"{field} {problem}. Use plain names only: {{mode}}, "
                "{epoch}, {epoch:02d} or a log name such as {val_loss:.3f}."
            )
    log_names = names - {"mode", "epoch"}
    try:
        sample = template.format(
            mode=mode, epoch=1, **dict.fromkeys(log_names, 0.5)
        )
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise ValueError(
            f"`{argument}` {template!r} cannot be formatted with "
            f"mode={mode!r}, epoch=1 and metric values: {e}. Use format "
            "specs that fit them, e.g. {epoch:02d} or {val_loss:.3f}."
        ) from None
    files.check_path_text(sample, argument)
    return log_names


def _checked_monitor_mode(monitor_mode):
    if monitor_mode not in ("auto", *MONITOR_MODES):
        raise ValueError(
            "Expected `monitor_mode` to be one of 'auto', 'min', 'max'. "
            f"Received: monitor_mode={monitor_mode!r}"
        )
    return monitor_mode


def _improvement_test(model, monitor, monitor_mode):
    """How `monitor` improves: as `monitor_mode` says, or with "auto" as
    Keras's own `ModelCheckpoint` and `mode="auto"` decide it, from the
    compiled metric's direction (precision, recall and AUC grow), else
    from its name."""
    if monitor_mode == "auto":
        metric = monitor.removeprefix("val_")
        grows = auto_mode.higher_is_better(model, metric)
        monitor_mode = "max" if grows else "min"
    return MONITOR_MODES[monitor_mode]
