"""`export(validation_data=...)` takes every data form `fit` takes, read
once, or refuses it in one line before any file is written."""

import keras
import pytest
import tensorflow as tf
from keras import layers

import keras_quant
from keras_quant.modes import Mode


@pytest.fixture(scope="module")
def model(trained_cnn, digits):
    observed = keras_quant.observe(trained_cnn)
    observed.evaluate(*digits["val"], verbose=0)
    return observed


@pytest.fixture(scope="module")
def expected(model, digits, tmp_path_factory):
    """The figures `(x, y)` arrays give."""
    path = tmp_path_factory.mktemp("arrays") / "m.tflite"
    result = keras_quant.export(
        model, path, mode="float16", validation_data=digits["test"]
    )
    return result


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, size):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, index):
        part = slice(index * self.size, (index + 1) * self.size)
        return self.x[part], self.y[part]


def generator(x, y, size):
    for start in range(0, len(x), size):
        yield x[start : start + size], y[start : start + size]


FORMS = {
    "generator": lambda x, y: generator(x, y, 32),
    "PyDataset": lambda x, y: Batches(x, y, 32),
    "tf.data batched": lambda x, y: tf.data.Dataset.from_tensor_slices(
        (x, y)
    ).batch(32),
    "tf.data unbatched": lambda x, y: tf.data.Dataset.from_tensor_slices(
        (x, y)
    ),
    "tf.data repeated, then a finite part": lambda x, y: (
        tf.data.Dataset.from_tensor_slices((x, y))
        .batch(len(x))
        .repeat()
        .take(1)
    ),
}


@pytest.mark.parametrize("form", FORMS)
def test_every_form_fit_takes_gives_the_same_figures(
    form, model, digits, expected, tmp_path
):
    x, y = digits["test"]
    result = keras_quant.export(
        model,
        tmp_path / "m.tflite",
        mode="float16",
        validation_data=FORMS[form](x, y),
    )
    assert result.quantized_metrics == pytest.approx(expected.quantized_metrics)
    assert result.float_metrics == pytest.approx(expected.float_metrics)
    assert result.max_abs_output_diff == pytest.approx(
        expected.max_abs_output_diff
    )


def test_inputs_alone_give_the_output_comparison(
    model, digits, expected, tmp_path
):
    x = digits["test"][0]
    data = tf.data.Dataset.from_tensor_slices(x).batch(64)
    result = keras_quant.export(
        model, tmp_path / "m.tflite", mode="float16", validation_data=data
    )
    assert result.quantized_metrics == {} and result.float_metrics == {}
    assert result.max_abs_output_diff == pytest.approx(
        expected.max_abs_output_diff
    )


REFUSED = {
    "repeats forever": lambda x, y: (
        tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat()
    ),
    "holds no sample": lambda x, y: (
        tf.data.Dataset.from_tensor_slices((x, y)).batch(32).take(0)
    ),
    "do not fit together": lambda x, y: iter(
        [(x[:4], y[:4]), (x[:4, :4], y[:4])]
    ),
    "Expected `validation_data` as": lambda x, y: {"x": x, "y": y},
}


@pytest.mark.parametrize("message", REFUSED)
def test_data_that_cannot_be_measured_is_refused_before_any_file(
    message, model, digits, tmp_path
):
    with pytest.raises((ValueError, TypeError), match=message):
        keras_quant.export(
            model,
            tmp_path / "m.tflite",
            mode="float16",
            validation_data=REFUSED[message](*digits["test"]),
        )
    assert list(tmp_path.iterdir()) == []


def test_auto_needs_labels(model, digits, tmp_path):
    with pytest.raises(ValueError, match="labelled data"):
        keras_quant.export(
            model,
            tmp_path / "m.tflite",
            mode="auto",
            validation_data=(digits["test"][0],),
        )


@pytest.fixture(scope="module")
def batch_one_lstm(digits):
    """The batch-1 LSTM the user guide recommends, observed."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8), batch_size=1)
    hidden = layers.LSTM(16)(inputs)
    model = keras.Model(inputs, layers.Dense(10)(hidden))
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = digits["train"]
    model.fit(x[..., 0], y, batch_size=1, epochs=1, verbose=0)
    observed = keras_quant.observe(model)
    observed.predict(digits["val"][0][:64, ..., 0], batch_size=1, verbose=0)
    return observed


@pytest.mark.parametrize("mode", list(Mode))
def test_a_batch_one_lstm_is_validated_in_every_mode(
    mode, batch_one_lstm, digits, tmp_path
):
    x, y = digits["test"]
    result = keras_quant.export(
        batch_one_lstm,
        tmp_path / "m.tflite",
        mode=mode,
        validation_data=(x[:100, ..., 0], y[:100]),
    )
    drop = result.metric_drop("accuracy")
    assert abs(drop) <= 0.05, (mode, result.quantized_metrics)
