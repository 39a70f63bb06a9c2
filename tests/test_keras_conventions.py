"""An observed model is, for the Keras code a user runs on it, the plain
model: the same output names, loss and metric dicts, history keys,
ModelCheckpoint and EarlyStopping behaviour, and save/load."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_quant


def list_outputs():
    inputs = keras.Input((8, 8, 1), name="image")
    hidden = layers.Dense(16, activation="relu")(layers.Flatten()(inputs))
    return keras.Model(
        inputs,
        [
            layers.Dense(10, activation="softmax", name="cls")(hidden),
            layers.Dense(1, name="reg")(hidden),
        ],
    )


def dict_outputs():
    inputs = keras.Input((8, 8, 1), name="image")
    hidden = layers.Dense(16, activation="relu")(layers.Flatten()(inputs))
    return keras.Model(
        inputs,
        {
            "cls": layers.Dense(10, activation="softmax", name="cls")(hidden),
            "reg": layers.Dense(1, name="reg")(hidden),
        },
    )


def two_inputs():
    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((1,), name="extra")
    hidden = layers.Concatenate()([layers.Flatten()(image), extra])
    hidden = layers.Dense(16, activation="relu")(hidden)
    return keras.Model(
        [image, extra],
        [
            layers.Dense(10, activation="softmax", name="cls")(hidden),
            layers.Dense(1, name="reg")(hidden),
        ],
    )


BUILDERS = {"list": list_outputs, "dict": dict_outputs, "inputs": two_inputs}


def data(digits, split, builder):
    images, labels = digits[split]
    targets = {"cls": labels, "reg": images.mean(axis=(1, 2, 3))[:, None]}
    if builder is two_inputs:
        return [images, images.max(axis=(1, 2, 3))[:, None]], targets
    return images, targets


def user_script(model, digits, builder, folder):
    """What a Keras user writes: loss and metric dicts by output name, a
    checkpoint and early stopping on a named output's metric."""
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"},
        metrics={"cls": ["accuracy"], "reg": ["mae"]},
    )
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(folder / "e{epoch}.weights.h5"),
        monitor="val_cls_accuracy",
        mode="max",
        save_best_only=True,
        save_weights_only=True,
    )
    stopping = keras.callbacks.EarlyStopping(
        monitor="val_reg_loss", mode="min", patience=1, min_delta=10.0
    )
    history = model.fit(
        *data(digits, "train", builder),
        validation_data=data(digits, "val", builder),
        epochs=4,
        batch_size=64,
        shuffle=False,
        verbose=0,
        callbacks=[checkpoint, stopping],
    )
    return history.history


@pytest.mark.parametrize("kind", BUILDERS)
def test_the_same_script_runs_alike_with_and_without_observe(
    kind, digits, tmp_path
):
    builder = BUILDERS[kind]
    found = {}
    for observed in (False, True):
        keras.utils.set_random_seed(0)
        model = builder()
        if observed:
            model = keras_quant.observe(model)
        folder = tmp_path / str(observed)
        folder.mkdir()
        history = user_script(model, digits, builder, folder)
        found[observed] = (history, sorted(p.name for p in folder.iterdir()))
        assert model.output_names == ["cls", "reg"]
    (plain, plain_files), (watched, watched_files) = found[False], found[True]
    assert sorted(watched) == sorted(plain)
    assert "val_cls_accuracy" in plain
    assert watched_files == plain_files  # same epochs kept
    assert len(watched["loss"]) == len(plain["loss"])  # same stop
    for key in plain:
        assert watched[key] == pytest.approx(plain[key], rel=1e-4), key


def test_output_names_survive_save_and_load(tmp_path, digits):
    observed = keras_quant.observe(list_outputs(), save_modes=())
    observed.predict(digits["val"][0], verbose=0)
    observed.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.output_names == ["cls", "reg"]


def test_saving_the_trained_plain_model_loads_without_warnings(
    tmp_path, digits, recwarn
):
    # The observed model trains with the plain model's own optimizer, so
    # the plain model saves an optimizer built for its variables.
    model = list_outputs()
    model.compile(
        optimizer="adam",
        loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"},
    )
    observed = keras_quant.observe(model)
    observed.fit(*data(digits, "train", list_outputs), epochs=1, verbose=0)
    assert observed.optimizer is model.optimizer
    assert int(model.optimizer.iterations) > 0
    model.save(tmp_path / "plain.keras")
    keras.models.load_model(tmp_path / "plain.keras")
    skipped = [w for w in recwarn if "Skipping variable" in str(w.message)]
    assert skipped == []
    assert np.isfinite(model.predict(digits["val"][0], verbose=0)[1]).all()
