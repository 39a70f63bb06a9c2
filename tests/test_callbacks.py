import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_quant
from keras_quant.callbacks import RangeCalibration
from keras_quant.callbacks import TFLiteExport
from keras_quant.conversion import isolation
from keras_quant.measurement import sensitivity
from keras_quant.observation.observers import read
from tests.conftest import small_cnn

BATCH = 50


def fit(observed, digits, callbacks, epochs=2, validation=True):
    keras.utils.set_random_seed(2)
    observed.fit(
        *digits["train"],
        validation_data=digits["val"] if validation else None,
        epochs=epochs,
        batch_size=BATCH,
        verbose=0,
        callbacks=callbacks,
    )
    return observed


@pytest.fixture
def observed():
    keras.utils.set_random_seed(0)
    return keras_quant.observe(small_cnn())


def steps(split, digits):
    return -(-len(digits[split][0]) // BATCH)


def ranges(model):
    return [o.range() for o in model.observers]


def test_validation_phase_ranges_describe_the_final_weights(observed, digits):
    fit(observed, digits, [RangeCalibration()], epochs=3)
    fresh = keras_quant.observe(small_cnn())
    fresh.set_weights(observed.get_weights())
    fresh.evaluate(*digits["val"], batch_size=BATCH, verbose=0)
    assert ranges(observed) == ranges(fresh)
    seen = {
        read(o.batches_seen_) for o in observed.observers if not o.fixed_range
    }
    assert seen == {steps("val", digits)}  # reset at each validation run


def test_ranges_freeze_when_training_ends(observed, digits):
    fit(observed, digits, [RangeCalibration()], epochs=1)
    before = ranges(observed)
    observed.evaluate(digits["test"][0] * 3, digits["test"][1], verbose=0)
    assert ranges(observed) == before


def test_train_phase_follows_training_steps(observed, digits):
    fit(observed, digits, [RangeCalibration("train", momentum=0.9)], epochs=2)
    trainable = [o for o in observed.observers if not o.fixed_range]
    assert {read(o.batches_seen_) for o in trainable} == {
        2 * steps("train", digits)
    }
    assert {round(read(o.momentum), 6) for o in trainable} == {0.9}


def test_both_phases_record_train_and_validation(observed, digits):
    fit(observed, digits, [RangeCalibration("both")], epochs=1)
    expected = steps("train", digits) + steps("val", digits)
    assert read(observed.observers[0].batches_seen_) == expected


def test_validation_phase_without_validation_data_warns(observed, digits):
    with pytest.warns(UserWarning, match="saw no validation run"):
        fit(observed, digits, [RangeCalibration()], epochs=1, validation=False)


def test_model_without_observers_is_refused(digits):
    model = small_cnn()
    with pytest.raises(ValueError, match="keras_quant.observe"):
        fit(model, digits, [RangeCalibration()], epochs=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"phase": "test"}, "Received: phase='test'"),
        ({"momentum": 1.0}, "Received: momentum=1.0"),
        ({"error_data": np.zeros((1, 8, 8, 1))}, "pass `log_dir`"),
    ],
)
def test_bad_calibration_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RangeCalibration(**kwargs)


def test_ranges_are_logged_to_tensorboard(observed, digits, tmp_path):
    fit(observed, digits, [RangeCalibration(log_dir=str(tmp_path))], epochs=2)
    tags = set()
    for path in glob.glob(str(tmp_path / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    expected = {
        f"ranges/{o.point}/{end}"
        for o in observed.observers
        if not o.fixed_range
        for end in ("min", "max")
    }
    assert "ranges/image/min" in expected and tags == expected


def logged_scalars(folder):
    """`{tag: [(step, value)]}` from the TensorBoard event files."""
    found = {}
    for path in glob.glob(str(folder / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalar = float(tf.make_ndarray(value.tensor))
                found.setdefault(value.tag, []).append((event.step, scalar))
    return found


def test_simulated_int8_error_is_logged_each_epoch(observed, digits, tmp_path):
    x = digits["val"][0][:100]
    callback = RangeCalibration(log_dir=str(tmp_path), error_data=x)
    fit(observed, digits, [callback], epochs=2)
    logged = logged_scalars(tmp_path)
    points = [o.point for o in observed.observers]
    for point in points:
        assert [step for step, _ in logged[f"int8_sqnr/{point}"]] == [0, 1]
    # The last epoch's figures are those of the final ranges.
    errors = sensitivity.simulated_errors(observed, x)
    for point in points:
        expected = min(sensitivity.sqnr_db(errors[point]), 100.0)
        assert logged[f"int8_sqnr/{point}"][-1][1] == pytest.approx(
            expected, rel=1e-5
        )
        assert expected > 20.0
    mean = np.mean([logged[f"int8_sqnr/{p}"][-1][1] for p in points])
    assert logged["int8_sqnr/mean"][-1][1] == pytest.approx(mean, rel=1e-5)


def test_export_at_train_end(observed, digits, tmp_path):
    export = TFLiteExport(
        tmp_path / "m_{mode}.tflite",
        modes=("int8", "float16"),
        validation_data=digits["test"],
    )
    fit(observed, digits, [RangeCalibration(), export], epochs=2)
    assert sorted(os.listdir(tmp_path)) == ["m_float16.tflite", "m_int8.tflite"]
    assert [r.mode.value for r in export.results] == ["int8", "float16"]
    with keras_quant.measurement.evaluation.observers_paused(observed):
        _, accuracy = observed.evaluate(*digits["test"], verbose=0)
    assert export.results[0].float_metrics["accuracy"] == pytest.approx(
        accuracy
    )
    assert set(export.results[1].quantized_metrics) == {"loss", "accuracy"}


class ChildProbe(keras.callbacks.Callback):
    """Records the engine child's process id as training begins (after
    the callbacks before it)."""

    def on_train_begin(self, logs=None):
        self.pid = isolation.child_pid()


@pytest.mark.parametrize("mode, starts", [("int8", True), ("float16", False)])
def test_export_starts_the_engine_child_as_training_begins(
    observed, digits, tmp_path, mode, starts
):
    """Its first export then does not wait for the child to start; a
    mode the engine does not quantize starts none."""
    isolation.stop_children()
    probe = ChildProbe()
    export = TFLiteExport(str(tmp_path / "m_{mode}.tflite"), modes=[mode])
    fit(observed, digits, [RangeCalibration(), export, probe], epochs=1)
    assert (probe.pid is not None) == starts
    assert isolation.child_pid() == probe.pid  # the export used that one
    assert (tmp_path / f"m_{mode}.tflite").exists()


def test_export_auto_at_train_end(observed, digits, tmp_path):
    export = TFLiteExport(
        tmp_path / "m_{mode}.tflite",
        modes="auto",
        validation_data=digits["val"],
        target="integer_only",
        max_accuracy_drop=2.0,
    )
    fit(observed, digits, [RangeCalibration(), export], epochs=2)
    assert os.listdir(tmp_path) == ["m_auto.tflite"]
    (result,) = export.results
    assert result.mode.value == "int8_only"
    assert result.selection.target == "integer_only"
    assert result.selection.chosen.drop <= 2.0


def test_export_every_epoch(observed, digits, tmp_path):
    export = TFLiteExport(tmp_path / "e{epoch}.tflite", save_freq="epoch")
    fit(observed, digits, [RangeCalibration(), export], epochs=2)
    assert sorted(os.listdir(tmp_path)) == ["e1.tflite", "e2.tflite"]


def test_export_best_only(observed, digits, tmp_path):
    class Scripted(keras.callbacks.Callback):
        scores = [0.5, 0.4, 0.7]

        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = self.scores[epoch]

    export = TFLiteExport(
        tmp_path / "e{epoch}.tflite",
        modes=("float32",),
        save_freq="epoch",
        save_best_only=True,
        monitor="score",
        monitor_mode="max",
    )
    fit(observed, digits, [RangeCalibration(), Scripted(), export], epochs=3)
    assert sorted(os.listdir(tmp_path)) == ["e1.tflite", "e3.tflite"]
    assert export.best == 0.7


@pytest.mark.parametrize(
    "metric, monitor",
    [(keras.metrics.Precision(name="precision"), "val_precision")],
)
def test_best_only_follows_the_metrics_direction(
    metric, monitor, digits, tmp_path
):
    # Keras's Precision grows as the model improves, and its name says
    # nothing of it: the compiled metric's own direction decides, as in
    # Keras's ModelCheckpoint and in mode="auto".
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(loss="binary_crossentropy", metrics=[metric])
    zero = {k: (x, (y == 0).astype("float32")) for k, (x, y) in digits.items()}

    class Scripted(keras.callbacks.Callback):
        scores = [0.5, 0.4, 0.7]

        def on_epoch_end(self, epoch, logs=None):
            logs[monitor] = self.scores[epoch]

    export = TFLiteExport(
        tmp_path / "e{epoch}.tflite",
        modes=("float32",),
        save_freq="epoch",
        save_best_only=True,
        monitor=monitor,
    )
    observed = keras_quant.observe(model)
    fit(observed, zero, [Scripted(), export], epochs=3)
    assert sorted(os.listdir(tmp_path)) == ["e1.tflite", "e3.tflite"]


def test_export_best_only_needs_the_monitored_value(observed, digits, tmp_path):
    export = TFLiteExport(
        tmp_path / "m.tflite", save_freq="epoch", save_best_only=True
    )
    with pytest.raises(KeyError, match="val_loss"):
        fit(
            observed,
            digits,
            [RangeCalibration(), export],
            epochs=1,
            validation=False,
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"filepath": "m.tflite", "modes": ("int8", "dynamic")}, "{mode}"),
        ({"filepath": "m.h5"}, "end in '.tflite'"),
        ({"modes": ("int3",)}, "Received: mode='int3'"),
        ({"save_freq": "batch"}, "Received: save_freq='batch'"),
        ({"save_best_only": True}, "save_freq='epoch'"),
        (
            {"monitor_mode": "up", "save_freq": "epoch"},
            "Received: monitor_mode='up'",
        ),
        ({"modes": ("int8",), "io_dtype": "uint8"}, "io_dtype"),
        ({"modes": "auto"}, "validation_data"),
    ],
)
def test_bad_export_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TFLiteExport(**kwargs)


# --- Patterns that cannot make a file: refused before training ----------


@pytest.mark.parametrize(
    "pattern, error, message",
    [
        # Attribute or index access: filled in silently ('str.tflite').
        ("{mode.__class__.__name__}.tflite", ValueError, "reads an attribute"),
        ("m_{mode[0]}.tflite", ValueError, "reads an attribute or an index"),
        ("m_{epoch:{width}}.tflite", ValueError, "nests a field"),
        # A name the file system cannot hold: OSError at the end of training.
        ("{epoch:>300}.tflite", keras_quant.UnwritablePathError, "longer than"),
        ("d{val_loss:>260}/m.tflite", keras_quant.UnwritablePathError, "261"),
        ("m\0{mode}.tflite", ValueError, "NUL byte"),
        # '..' after a folder that does not exist: FileNotFoundError, and a
        # temporary file left behind, after converting.
        ("{mode}/../m.tflite", keras_quant.UnwritablePathError, "not exist"),
    ],
)
def test_patterns_that_cannot_make_a_file_are_refused_at_construction(
    tmp_path, pattern, error, message
):
    with pytest.raises(error, match=message):
        TFLiteExport(str(tmp_path / pattern))
    assert os.listdir(tmp_path) == []


def test_report_dir_pattern_is_refused_at_construction(tmp_path):
    with pytest.raises(ValueError, match="`report_dir`.*reads an attribute"):
        TFLiteExport(str(tmp_path / "m.tflite"), report_dir="r{mode.upper}")


def test_each_filled_path_is_checked_before_its_export(
    observed, digits, tmp_path
):
    """Paths the sample values could not foresee: a folder that exists
    for epoch 1 only, and a log value too long for a file name."""
    (tmp_path / "e1").mkdir()
    export = TFLiteExport(
        str(tmp_path / "e{epoch}" / ".." / "m{epoch}.tflite"),
        modes=("float32",),
        save_freq="epoch",
    )
    with pytest.raises(keras_quant.UnwritablePathError, match="'.*e2'"):
        fit(observed, digits, [export], epochs=2, validation=False)
    assert sorted(os.listdir(tmp_path)) == ["e1", "m1.tflite"]

    class LongTag(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["tag"] = "x" * 300

    export = TFLiteExport(
        str(tmp_path / "t{tag}.tflite"), modes=("float32",), save_freq="epoch"
    )
    with pytest.raises(keras_quant.UnwritablePathError, match="longer than"):
        fit(observed, digits, [LongTag(), export], epochs=1, validation=False)
    assert sorted(os.listdir(tmp_path)) == ["e1", "m1.tflite"]
