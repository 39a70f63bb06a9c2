"""Checking a quantized model against the float one on real data.

`compare` runs the float Keras model and the `.tflite` model on the same
validation data, computes the model's compiled loss and metrics for both
from their predictions, in the same code, and reports the largest output
difference.
"""

import dataclasses
import inspect

import keras
import numpy as np

from keras_quant._compat import keras_internals
from keras_quant.data import as_arrays
from keras_quant.data import as_list
from keras_quant.observation.observed_model import observers_paused
from keras_quant.runtime import litert


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Float vs quantized on the same data.

    Attributes:
        float_metrics: compiled loss and metrics of the Keras model.
        quantized_metrics: the same, computed from LiteRT's outputs.
        max_abs_output_diff: largest |float - quantized| output element.
        samples: how many samples were compared.
    """

    float_metrics: dict
    quantized_metrics: dict
    max_abs_output_diff: float
    samples: int


def predict_float(model, x, batch_size=256):
    """Keras predictions with observers paused, so nothing is recorded."""
    with observers_paused(model):
        return model.predict(x, batch_size=batch_size, verbose=0)


def compare(model, tflite, validation_data, batch_size=256, cache=None):
    """Compares `model` with its `.tflite` export on `validation_data`.

    Args:
        model: the Keras model (observed or not) that was exported.
        tflite: path to the `.tflite` file, or its bytes.
        validation_data: `(x, y)` arrays or a `tf.data.Dataset`.
        batch_size: batch size for both runtimes. Defaults to `256`.
        cache: a dict kept across calls on the same model and data, so the
            float predictions are computed once (`export_many`).

    Returns:
        A `Comparison`.
    """
    x, y = as_arrays(validation_data)
    cache = {} if cache is None else cache
    if "float_predictions" not in cache:
        cache["float_predictions"] = predict_float(model, x, batch_size)
    float_pred = cache["float_predictions"]
    quant_pred = litert.run(tflite, x, batch_size=batch_size)
    return Comparison(
        float_metrics=metrics_from_predictions(model, y, float_pred),
        quantized_metrics=metrics_from_predictions(model, y, quant_pred),
        max_abs_output_diff=max_abs_difference(float_pred, quant_pred),
        samples=len(as_list(x)[0]),
    )


def max_abs_difference(float_pred, quant_pred):
    """The largest |float - quantized| element over all outputs."""
    return max(
        float(np.max(np.abs(np.asarray(f) - np.asarray(q))))
        for f, q in zip(as_list(float_pred), as_list(quant_pred))
    )


is_compiled = keras_internals.is_compiled


def metrics_from_predictions(model, y, y_pred):
    """The model's compiled loss and metrics for predictions `y_pred`.

    Returns an empty dict for a model that was never compiled.
    """
    if not is_compiled(model):
        return {}
    model.reset_metrics()
    y_pred = keras.tree.map_structure(keras.ops.convert_to_tensor, y_pred)
    y = keras.tree.map_structure(keras.ops.convert_to_tensor, y)
    if "training" in inspect.signature(model.compute_loss).parameters:
        loss = model.compute_loss(y=y, y_pred=y_pred, training=False)
    else:  # tf_keras
        loss = model.compute_loss(y=y, y_pred=y_pred)
    results = {
        name: float(value)
        for name, value in model.compute_metrics(None, y, y_pred, None).items()
        if name != "loss"
    }
    model.reset_metrics()
    return {"loss": float(loss), **results}
