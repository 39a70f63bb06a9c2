"""mode="auto": every candidate measured, the first within budget written."""

import os

import keras
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split

import keras_quant
from keras_quant.conversion import routes as conversion
from keras_quant.exporting import auto as selection
from keras_quant.modes import Mode


def loss_only(model):
    """The model compiled without metrics: the budget is on the loss."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.compile(loss="sparse_categorical_crossentropy")
    return clone


def export_auto(model, path, validation_data, **kwargs):
    return keras_quant.export(
        model, path, "auto", validation_data=validation_data, **kwargs
    )


@pytest.fixture
def loss_judged_cnn(trained_cnn, digits):
    """Judged on its loss, and calibrated on too few images (ranges too
    narrow), so that int8 clearly misses a tight budget."""
    observed = keras_quant.observe(loss_only(trained_cnn))
    observed.evaluate(digits["val"][0][:2], digits["val"][1][:2], verbose=0)
    return observed


def test_int8_within_budget_is_taken_first(calibrated_cnn, digits, tmp_path):
    result = export_auto(
        calibrated_cnn,
        tmp_path / "m.tflite",
        digits["test"],
        max_accuracy_drop=1.0,
    )
    (trial,) = result.selection.trials
    assert trial.mode is Mode.INT8 and trial.within_budget
    assert result.mode is Mode.INT8 and result.keep_float == ()
    assert result.selection.budget.metric == "accuracy"
    assert "int8 is within it" in result.selection.reason


@pytest.mark.slow
def test_layers_kept_float_in_order_until_the_budget_is_met(
    loss_judged_cnn, digits, tmp_path
):
    # int8 raises the loss by some percent; allow a tenth of that.
    plain = keras_quant.export(
        loss_judged_cnn,
        tmp_path / "plain.tflite",
        validation_data=digits["val"],
    )
    increase = 100 * (
        plain.quantized_metrics["loss"] / plain.float_metrics["loss"] - 1
    )
    assert increase > 1.0
    budget = increase / 10
    path = tmp_path / "auto.tflite"
    result = export_auto(
        loss_judged_cnn,
        path,
        digits["val"],
        max_accuracy_drop=budget,
    )
    trials = result.selection.trials
    assert trials[0].mode is Mode.INT8 and not trials[0].within_budget
    assert trials[0].drop == pytest.approx(increase, rel=1e-4)
    ranking = keras_quant.analyze(
        loss_judged_cnn, digits["val"]
    ).layers_to_keep_float()
    float16 = len(conversion.convert(loss_judged_cnn, "float16"))
    kept = []
    for trial, layer in zip(trials[1:], ranking):
        assert trial.mode is Mode.INT8
        assert trial.keep_float == (*kept, layer)
        if trial.size_bytes >= float16:
            assert "no smaller than float16" in trial.note
        else:
            kept.append(layer)
    chosen = result.selection.chosen
    assert chosen is trials[-1] and chosen.within_budget
    assert all(not t.within_budget for t in trials[:-1])
    assert chosen.drop <= budget
    # What the result claims is what the written file measures.
    assert os.path.getsize(path) == chosen.size_bytes == result.size_bytes
    assert result.keep_float == chosen.keep_float
    loss = keras.losses.SparseCategoricalCrossentropy()(
        digits["val"][1], keras_quant.run_tflite(path, digits["val"][0])
    )
    assert float(loss) == pytest.approx(chosen.metric, rel=1e-5)
    assert result.quantized_metrics["loss"] == pytest.approx(chosen.metric)
    assert chosen.latency_us > 0


@pytest.mark.slow
def test_keep_float_trials_report_their_cost(loss_judged_cnn, digits, tmp_path):
    result = export_auto(
        loss_judged_cnn,
        tmp_path / "m.tflite",
        digits["val"],
        max_accuracy_drop=0.5,
        target="cpu",
    )
    trials = result.selection.trials
    kept = [t for t in trials if t.keep_float and not t.note]
    assert kept, "int8 misses the budget: layers are kept float next"
    float16 = len(conversion.convert(loss_judged_cnn, "float16"))
    sizes = [trials[0].size_bytes] + [t.size_bytes for t in kept]
    assert sizes == sorted(sizes)  # each float layer costs bytes
    assert sizes[-1] < float16
    table = result.selection.table().splitlines()
    assert len(table) == 1 + len(trials)
    assert result.to_dict()["selection"]["chosen"]["mode"] == result.mode.value


def test_no_candidate_within_budget_writes_nothing(
    loss_judged_cnn, digits, tmp_path
):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"good model")
    with pytest.raises(keras_quant.ExportError, match="int8_only: \\+"):
        keras_quant.export(
            loss_judged_cnn,
            path,
            "auto",
            validation_data=digits["val"],
            max_accuracy_drop=0.0,
            target="integer_only",
        )
    assert path.read_bytes() == b"good model"
    assert os.listdir(tmp_path) == ["m.tflite"]


def test_float_model_skips_range_modes_with_their_reason(
    trained_cnn, digits, tmp_path
):
    result = export_auto(
        trained_cnn,
        tmp_path / "m.tflite",
        digits["val"],
    )
    first = result.selection.trials[0]
    assert first.mode is Mode.INT8 and "no observers" in first.note
    assert result.mode is Mode.DYNAMIC
    assert "int8 failed" in result.selection.reason


def test_gpu_target_takes_float16(calibrated_cnn, digits, tmp_path):
    result = export_auto(
        calibrated_cnn,
        tmp_path / "m.tflite",
        digits["val"],
        target="gpu",
    )
    assert result.mode is Mode.FLOAT16
    # Half the weight bytes, plus the graph's fixed overhead.
    assert 0.5 < result.size_ratio < 0.65


def test_size_target_takes_int4_weights_within_budget(
    calibrated_cnn, digits, tmp_path
):
    result = export_auto(
        calibrated_cnn,
        tmp_path / "m.tflite",
        digits["val"],
        target="size",
        max_accuracy_drop=5.0,
    )
    assert result.selection.trials[0].mode is Mode.INT8X4
    assert result.mode is Mode.INT8X4
    int8 = keras_quant.export(calibrated_cnn, tmp_path / "i.tflite", "int8")
    assert result.size_bytes < int8.size_bytes


@pytest.mark.slow
def test_size_target_keeps_the_layers_4_bits_hurt_at_8_bits(
    trained_cnn, digits, tmp_path
):
    """When int8x4 and dynamic_int4 miss the budget, int8x4 is tried with
    the weighted layers at 8 bits, one more at a time in the order
    `analyze(mode="int8x4")` ranks them; the first mix within the budget
    is written, smaller than int8."""
    model = keras_quant.observe(loss_only(trained_cnn))
    model.evaluate(*digits["val"], verbose=0)
    ranking = keras_quant.analyze(
        model, digits["val"], mode="int8x4"
    ).layers_to_keep()

    def drop(mode, keep_8bit=()):
        found = keras_quant.export(
            model,
            tmp_path / "probe.tflite",
            mode,
            keep_8bit=keep_8bit,
            validation_data=digits["val"],
        )
        loss = found.quantized_metrics["loss"] / found.float_metrics["loss"]
        return 100 * (loss - 1)

    plain = min(drop("int8x4"), drop("dynamic_int4"))
    mixed = drop("int8x4", ranking[:1])
    assert mixed < plain  # the first-ranked layer at 8 bits helps
    budget = (mixed + plain) / 2
    result = export_auto(
        model,
        tmp_path / "auto.tflite",
        digits["val"],
        target="size",
        max_accuracy_drop=budget,
    )
    trials = result.selection.trials
    assert [t.label for t in trials] == [
        "int8x4",
        "dynamic_int4",
        f"int8x4 + 8-bit {ranking[:1]}",
    ]
    chosen = result.selection.chosen
    assert chosen is trials[-1] and chosen.drop == pytest.approx(mixed)
    assert result.mode is Mode.INT8X4 and result.keep_8bit == (ranking[0],)
    int8 = len(conversion.convert(model, "int8"))
    assert trials[0].size_bytes < result.size_bytes < int8
    assert f"8-bit layers cost: {ranking[0]} +" in result.selection.reason


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(target="tpu"), "target='tpu'"),
        (dict(validation_data=None), "validation_data"),
        (dict(max_accuracy_drop=-1), "max_accuracy_drop=-1"),
    ],
)
def test_bad_arguments(calibrated_cnn, digits, tmp_path, kwargs, message):
    arguments = {"validation_data": digits["val"], **kwargs}
    with pytest.raises(ValueError, match=message):
        keras_quant.export(
            calibrated_cnn, tmp_path / "m.tflite", "auto", **arguments
        )
    assert not os.listdir(tmp_path)


def test_target_needs_auto(calibrated_cnn, tmp_path):
    with pytest.raises(ValueError, match="need mode='auto'"):
        keras_quant.export(calibrated_cnn, tmp_path / "m.tflite", target="gpu")


def test_uncompiled_model_is_refused(digits, tmp_path):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    with pytest.raises(ValueError, match="not compiled"):
        keras_quant.export(
            model, tmp_path / "m.tflite", "auto", validation_data=digits["val"]
        )


def test_budget_direction_follows_keras():
    assert selection.higher_is_better(None, "accuracy")
    assert selection.higher_is_better(None, "sparse_categorical_accuracy")
    assert not selection.higher_is_better(None, "loss")
    assert not selection.higher_is_better(None, "mean_absolute_error")
    budget = selection.Budget("mae", False, 2.0, 1.0)
    assert budget.drop(2.02) == pytest.approx(1.0)
    assert np.isclose(selection.Budget("acc", True, 0.9, 1.0).drop(0.89), 1.0)


def test_reason_lists_what_each_float_layer_cost():
    budget = selection.Budget("accuracy", True, 0.9, 1.0)

    def trial(keep, size, latency, drop, note=None):
        return selection.Trial(
            Mode.INT8,
            keep,
            size_bytes=size,
            metric=0.9 - drop / 100,
            drop=drop,
            latency_us=latency,
            within_budget=drop <= 1.0 and note is None,
            note=note,
        )

    trials = (
        trial((), 1000, 2.0, 3.0),
        trial(("a",), 1512, 2.5, 2.0),
        trial(("a", "b"), 9000, 4.0, 0.5, note="8.8 KB, no smaller"),
        trial(("a", "c"), 1768, 2.7, 0.8),
    )
    found = selection._explain("cpu", budget, trials)
    assert found.chosen is trials[-1]
    costs = found.kept_layer_costs()
    assert [(layer, size) for layer, size, _ in costs] == [
        ("a", 512),
        ("c", 256),
    ]
    assert [round(latency, 6) for _, _, latency in costs] == [0.5, 0.2]
    assert "Float layers cost: a +0.5 KB +0.5 µs, c +0.2 KB +0.2 µs." in (
        found.reason
    )
    assert "int8 + float ['a', 'b'] was skipped" in found.reason


@pytest.mark.parametrize("load", [load_breast_cancer, load_wine])
def test_auto_keeps_float_the_layer_int8_cannot_hold(load, tmp_path):
    # Raw tabular features with Keras's Normalization inside the model:
    # its multipliers spread wider than int8 holds, so plain int8 is
    # refused and auto keeps that layer float, the rest int8.
    data = load()
    x, y = data.data.astype("float32"), data.target
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.3, random_state=0, stratify=y
    )
    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(x_train)
    inputs = keras.Input((x.shape[1],))
    hidden = keras.layers.Dense(64, activation="relu")(norm(inputs))
    hidden = keras.layers.Dense(32, activation="relu")(hidden)
    outputs = keras.layers.Dense(len(set(y)), activation="softmax")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    observed = keras_quant.observe(model)
    observed.fit(x_train, y_train, epochs=30, verbose=0)
    observed.evaluate(x_val, y_val, verbose=0)
    result = keras_quant.export(
        observed,
        tmp_path / "m.tflite",
        mode="auto",
        max_accuracy_drop=1,
        validation_data=(x_val, y_val),
    )
    assert result.mode is Mode.INT8 and result.keep_float == ("norm",)
    assert result.metric_drop("accuracy") <= 0.01
    assert result.size_ratio < 0.9
    assert result.selection.reason.count("int8 failed") == 1
