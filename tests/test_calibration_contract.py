"""Observers record only when the calibration contract says so: complete
validation runs, ranges that know their epoch, and export patterns checked
before training spends its time."""

import json
import warnings

import keras
import numpy as np
import pytest

import keras_quant
from keras_quant.callbacks import RangeCalibration
from keras_quant.callbacks import TFLiteExport
from tests.conftest import small_cnn


@pytest.fixture
def observed():
    keras.utils.set_random_seed(0)
    return keras_quant.observe(small_cnn())


def fit(observed, digits, callbacks, epochs, **kwargs):
    keras.utils.set_random_seed(2)
    return observed.fit(
        *digits["train"],
        validation_data=digits["val"],
        epochs=epochs,
        batch_size=50,
        verbose=0,
        callbacks=callbacks,
        **kwargs,
    )


def ranges(model):
    return {o.point: o.range() for o in model.observers}


class InterruptSecondValidation(keras.callbacks.Callback):
    """Ctrl-C in the middle of the second validation run."""

    def __init__(self):
        super().__init__()
        self.runs = 0

    def on_test_begin(self, logs=None):
        self.runs += 1

    def on_test_batch_end(self, batch, logs=None):
        if self.runs == 2 and batch == 2:
            raise KeyboardInterrupt


def test_unfinished_validation_keeps_the_last_complete_ranges(observed, digits):
    after_first = {}

    class Remember(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                after_first.update(ranges(observed))

    with pytest.raises(KeyboardInterrupt):
        fit(
            observed,
            digits,
            [RangeCalibration(), Remember(), InterruptSecondValidation()],
            epochs=3,
        )
    other = np.random.default_rng(0).normal(3, 3, size=(64, 8, 8, 1))
    with pytest.warns(UserWarning, match="did not finish"):
        observed.predict(other.astype("float32"), verbose=0)
    assert ranges(observed) == after_first  # neither half run nor new data
    observed.predict(other.astype("float32") * 5, verbose=0)
    assert ranges(observed) == after_first


class InterruptFirstValidation(keras.callbacks.Callback):
    """Ctrl-C in the middle of the first validation run."""

    def on_test_batch_end(self, batch, logs=None):
        if batch == 2:
            raise KeyboardInterrupt


def test_an_unfinished_first_run_leaves_no_ranges_and_says_so(
    observed, digits, tmp_path
):
    # No run completed: there are no ranges to keep. The next call says
    # so, leaves the observers uncalibrated and off, and an export names
    # the fix instead of using half a run.
    with pytest.raises(KeyboardInterrupt):
        fit(
            observed,
            digits,
            [RangeCalibration(), InterruptFirstValidation()],
            epochs=2,
        )
    with pytest.warns(UserWarning, match="did not finish"):
        observed.predict(digits["test"][0], verbose=0)
    measured = [o for o in observed.observers if o.fixed_range is None]
    assert measured and not any(o.calibrated for o in measured)
    with pytest.raises(keras_quant.NotCalibratedError):
        keras_quant.export(observed, tmp_path / "m.tflite", mode="int8")
    keras_quant.reset_ranges(observed)  # the fix the warning names
    observed.evaluate(*digits["val"], verbose=0)
    assert all(o.calibrated for o in observed.observers)


def test_without_a_callback_an_interrupted_call_keeps_what_it_saw(digits):
    # With no RangeCalibration, observers record on every inference call
    # (`observe`'s default): a call cut short keeps what it saw, and the
    # next call adds to it, as if it had not been cut. Nothing is lost,
    # so nothing is said.
    model = small_cnn()
    observed, reference = keras_quant.observe(model), keras_quant.observe(model)
    x = digits["val"][0]

    class Interrupt(keras.callbacks.Callback):
        def on_predict_batch_end(self, batch, logs=None):
            if batch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        observed.predict(x, batch_size=32, callbacks=[Interrupt()], verbose=0)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        observed.predict(x[64:], batch_size=32, verbose=0)
    assert not [w for w in said if "did not finish" in str(w.message)]
    reference.predict(x, batch_size=32, verbose=0)  # all of it, uncut
    assert ranges(observed) == ranges(reference)


def test_ranges_older_than_the_weights_are_reported(observed, digits, tmp_path):
    export = TFLiteExport(str(tmp_path / "m_{epoch:02d}.tflite"))
    with pytest.warns(UserWarning, match="epoch 2, the weights from epoch 3"):
        fit(
            observed,
            digits,
            [RangeCalibration(), export],
            epochs=3,
            validation_freq=2,
        )
    (result,) = export.results
    assert result.path.endswith("m_03.tflite")
    assert (result.ranges_epoch, result.weights_epoch) == (2, 3)
    observed.save_modes = ("int8",)
    observed.save(tmp_path / "c.keras")
    record = json.loads((tmp_path / "c.quant.json").read_text())
    assert record["exports"][0]["ranges_epoch"] == 2
    reloaded = keras.saving.load_model(tmp_path / "c.keras")
    with pytest.warns(UserWarning, match="older than the weights"):
        keras_quant.export(reloaded, tmp_path / "r.tflite", "int8")


def test_fresh_ranges_export_without_warning(observed, digits, tmp_path):
    export = TFLiteExport(str(tmp_path / "m.tflite"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit(observed, digits, [RangeCalibration(), export], epochs=2)
    assert (
        export.results[0].ranges_epoch,
        export.results[0].weights_epoch,
    ) == (
        2,
        2,
    )


@pytest.mark.parametrize(
    "pattern, message",
    [
        ("m_{0}.tflite", "positional field"),
        ("m_{}.tflite", "positional field"),
        ("m_{mode:d}.tflite", "cannot be formatted"),
        ("m_{epoch:s}.tflite", "cannot be formatted"),
        ("m_{mode.x}.tflite", "cannot be formatted"),
        ("m_{mode.tflite", "not a valid pattern"),
    ],
)
def test_bad_pattern_fails_before_the_first_step(
    observed, digits, tmp_path, pattern, message
):
    class CountSteps(keras.callbacks.Callback):
        steps = 0

        def on_train_batch_end(self, batch, logs=None):
            CountSteps.steps += 1

    with pytest.raises(ValueError, match=message):
        export = TFLiteExport(str(tmp_path / pattern))  # refused here
        fit(observed, digits, [export, CountSteps()], epochs=2)
    assert CountSteps.steps == 0


def test_unknown_log_name_fails_after_the_first_epoch(
    observed, digits, tmp_path
):
    epochs = []

    class Epochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            epochs.append(epoch)

    export = TFLiteExport(str(tmp_path / "m_{bogus}.tflite"))
    with pytest.raises(ValueError, match=r"\['bogus'\].*val_loss"):
        fit(observed, digits, [export, Epochs()], epochs=3)
    assert len(epochs) <= 1 and not list(tmp_path.iterdir())


def test_validation_metric_waits_for_an_epoch_that_validated(
    observed, digits, tmp_path
):
    export = TFLiteExport(
        str(tmp_path / "m_{val_accuracy:.2f}.tflite"), save_freq="epoch"
    )
    fit(
        observed,
        digits,
        [RangeCalibration("train"), export],
        epochs=2,
        validation_freq=2,
    )
    assert export.results and "m_0." in export.results[0].path
