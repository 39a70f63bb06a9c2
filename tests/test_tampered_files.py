"""A damaged or edited `.keras` file is refused at load, naming the
observer and the field, never exported silently or crashing a child."""

import zipfile

import h5py
import keras
import numpy as np
import pytest

import keras_quant

WEIGHTS = "model.weights.h5"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small observed model, calibrated and saved."""
    inputs = keras.Input((4,), name="features")
    outputs = keras.layers.Dense(2, name="scores")(inputs)
    model = keras_quant.observe(keras.Model(inputs, outputs), save_modes=())
    model.predict(np.linspace(-1, 1, 32).reshape(8, 4), verbose=0)
    path = tmp_path_factory.mktemp("saved") / "m.keras"
    with pytest.warns(UserWarning, match="input rows"):
        model.save(path)
    return path


def tampered(path, destination, edit):
    """A copy of the `.keras` file at `path` whose weights `edit(h5 file)`
    changed."""
    with zipfile.ZipFile(path) as source:
        members = {name: source.read(name) for name in source.namelist()}
    weights_path = destination.with_suffix(".h5")
    weights_path.write_bytes(members[WEIGHTS])
    with h5py.File(weights_path, "r+") as weights:
        edit(weights)
    members[WEIGHTS] = weights_path.read_bytes()
    weights_path.unlink()
    with zipfile.ZipFile(destination, "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
    return destination


def set_value(index, value):
    """An edit setting the first observer's saved value `index`."""

    def edit(weights):
        dataset = weights[f"layers/observer/vars/{index}"]
        dataset[...] = np.asarray(value, dataset.dtype)

    return edit


def both(*edits):
    def edit(weights):
        for change in edits:
            change(weights)

    return edit


# index of the saved value: 0 min_, 1 max_, 2 batches seen.
EDITS = {
    "beyond 1e\\+15": set_value(1, 3e38),
    "NaN or infinite": set_value(0, np.nan),
    "reversed": set_value(0, 5.0),
    "negative count": set_value(2, -4),
    # An observer that saw no batch holds [0, 0]: its range is checked too.
    "is reversed": both(set_value(2, 0), set_value(0, 5.0)),
}


@pytest.mark.parametrize("message", EDITS)
def test_an_edited_state_is_refused_naming_the_observer(
    message, saved, tmp_path
):
    path = tampered(saved, tmp_path / "edited.keras", EDITS[message])
    with pytest.raises(ValueError, match=message) as error:
        keras.models.load_model(path)
    assert "Observer 'features_observer' (point 'features')" in str(error.value)


def test_the_untouched_file_loads(saved, tmp_path):
    path = tampered(saved, tmp_path / "same.keras", lambda weights: None)
    loaded = keras.models.load_model(path)
    assert loaded.observers[0].range()[1] == pytest.approx(1.0)


def test_a_state_with_a_value_more_is_refused_naming_both_causes(
    saved, tmp_path
):
    def add_value(weights):
        weights.create_dataset("layers/observer/vars/8", data=np.zeros(3))

    path = tampered(saved, tmp_path / "longer.keras", add_value)
    with pytest.raises(ValueError, match="saved state has 9") as error:
        keras.models.load_model(path)
    assert "point 'features'" in str(error.value)
    assert "damaged or was edited" in str(error.value)
