"""`RangeCalibration`: when the observers of a model record."""

import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_quant.measurement import sensitivity
from keras_quant.observation import recording
from keras_quant.observation.observers import RECORD_ALWAYS
from keras_quant.observation.observers import RECORD_INFERENCE
from keras_quant.observation.observers import RECORD_OFF
from keras_quant.observation.observers import RECORD_TRAINING
from keras_quant.observation.recording import find_observers
from keras_quant.observation.recording import set_recording

# phase -> (which steps record, whether ranges follow the weights).
PHASES = {
    "validation": (RECORD_INFERENCE, False),
    "train": (RECORD_TRAINING, True),
    "both": (RECORD_ALWAYS, True),
}


class RangeCalibration(keras.callbacks.Callback):
    """Decides when the observers of an observed model record ranges.

    The ranges used at export must describe the final weights:

    - `"validation"`: observers record during validation only and are reset
      at the start of each validation run, so the last complete validation
      run defines the ranges (a run cut short by an error or Ctrl-C is
      dropped: the ranges go back to the previous run's).
    - `"train"`: observers record on training steps, as a moving average of
      batch ranges (`momentum`), so the ranges follow the weights.
    - `"both"`: training and validation steps, as a moving average.

    The model remembers the epoch its ranges and weights come from; an
    export with ranges older than the weights (`validation_freq` > 1)
    warns. When training ends the observers stop recording, so a later
    `evaluate` or `predict` does not move the ranges;
    `keras_quant.reset_ranges(model)` clears them and lets inference calls
    record again.

    Args:
        phase: `"validation"`, `"train"` or `"both"`. Defaults to
            `"validation"`.
        momentum: weight of the old range in each moving-average update, for
            `"train"` and `"both"`. Defaults to `0.99`.
        log_dir: if set, the range of every point is written to TensorBoard
            there at the end of each epoch.
        error_data: with `log_dir`, model inputs (a few hundred samples are
            plenty) on which, each epoch, the int8 error is simulated in
            Keras and logged: the SQNR of every point (`int8_sqnr/<point>`,
            in dB) and the mean over points. A range that blows up shows as
            a sudden drop.

    Example:

        observed = keras_quant.observe(model)
        observed.fit(x, y, validation_data=(x_val, y_val),
                     callbacks=[RangeCalibration()])
    """

    def __init__(
        self, phase="validation", momentum=0.99, log_dir=None, error_data=None
    ):
        super().__init__()
        if phase not in PHASES:
            raise ValueError(
                f"Expected `phase` to be one of {sorted(PHASES)}. "
                f"Received: phase={phase!r}"
            )
        if not 0.0 <= momentum < 1.0:
            raise ValueError(
                "Expected `momentum` in [0, 1). "
                f"Received: momentum={momentum!r}"
            )
        self.phase = phase
        self.momentum = float(momentum)
        if error_data is not None and log_dir is None:
            raise ValueError(
                "`error_data` is logged to TensorBoard: pass `log_dir` too."
            )
        self.log_dir = log_dir
        self.error_data = error_data
        self.validation_runs = 0
        self._writer = None
        self._in_fit = False
        self._epoch = None

    @property
    def observers(self):
        return find_observers(self.model)

    def on_train_begin(self, logs=None):
        observers = self.observers
        if not observers:
            raise ValueError(
                "RangeCalibration needs a model with observers. Received: "
                f"model '{self.model.name}' with none. Train the model that "
                "`keras_quant.observe(model)` returns."
            )
        mask, moving = PHASES[self.phase]
        for observer in observers:
            observer.reset()
            if moving:
                observer.momentum.assign(self.momentum)
        recording.end_run(self.model)  # drops what an interrupted fit kept
        recording.restore_epochs(self.model, None, None)
        set_recording(self.model, mask)
        self._in_fit = True
        self.validation_runs = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1

    def on_test_begin(self, logs=None):
        if self.phase == "validation":
            recording.begin_run(self.model)  # kept until the run ends
            set_recording(self.model, RECORD_INFERENCE)

    def on_test_end(self, logs=None):
        self.validation_runs += 1
        if self.phase == "validation":
            recording.end_run(self.model, self._epoch if self._in_fit else None)
            if self._in_fit:
                # Run-time only: the validation step keeps its recording ops.
                for observer in self.observers:
                    observer.record_mask.assign(RECORD_OFF)

    def on_epoch_end(self, epoch, logs=None):
        recording.weights_trained(self.model, epoch + 1)
        if self.phase != "validation":  # the ranges follow the weights
            recording.end_run(self.model, epoch + 1)
        if self.log_dir is not None:
            self._log(epoch)

    def on_train_end(self, logs=None):
        self._in_fit = False
        if self.phase == "validation" and self.validation_runs == 0:
            warnings.warn(
                "RangeCalibration(phase='validation') saw no validation run, "
                "so no ranges were collected. Pass `validation_data` to "
                "`fit`, or use phase='train'."
            )
        set_recording(self.model, RECORD_OFF)

    def _log(self, epoch):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        observers = self.observers
        with self._writer.as_default(step=epoch):
            for observer in observers:
                if observer.calibrated and observer.fixed_range is None:
                    low, high = observer.range()
                    _scalar(f"ranges/{observer.point}/min", low, epoch)
                    _scalar(f"ranges/{observer.point}/max", high, epoch)
            if self.error_data is not None and all(
                o.calibrated for o in observers
            ):
                self._log_errors(epoch)
        self._writer.flush()

    def _log_errors(self, epoch):
        errors = sensitivity.simulated_errors(self.model, self.error_data)
        sqnrs = {p: sensitivity.sqnr_db(e) for p, e in errors.items()}
        for point, sqnr in sqnrs.items():
            _scalar(f"int8_sqnr/{point}", min(sqnr, 100.0), epoch)
        mean = float(np.mean([min(s, 100.0) for s in sqnrs.values()]))
        _scalar("int8_sqnr/mean", mean, epoch)


def _scalar(tag, value, step):
    """A TensorBoard scalar, without needing the tensorboard package here.

    `tf.summary.scalar` lives in tensorboard, which tensorflow-cpu does not
    install; the low-level write with the scalars plugin's metadata is what
    it does.
    """
    metadata = tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(
            plugin_name="scalars"
        )
    )
    tf.summary.write(
        tag, tf.constant(value, tf.float32), step, metadata=metadata
    )
