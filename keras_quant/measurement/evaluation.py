"""Checking a quantized model against the float one on real data.

`compare` runs the float Keras model and the `.tflite` model on the same
validation data, computes the model's compiled loss and metrics for both
from their predictions, in the same code, and measures how far the outputs
are apart (`output_figures`): the largest and the mean absolute
difference, the signal-to-quantization-noise ratio in dB, and the largest
difference in percent of its output's float range, which judges a model
that has no compiled metric.

A model built under a strategy whose replicas live in several processes
(`tf.distribute.MultiWorkerMirroredStrategy`) computes its float
predictions and its metrics here alone, outside the strategy
(`on_this_worker`): its `predict`, and its metrics (reset and read
through a collective), would wait for workers that are not exporting.
"""

import concurrent.futures
import contextvars
import dataclasses
import inspect
import weakref

import keras
import numpy as np

from keras_quant._compat import keras_internals
from keras_quant.data import as_arrays
from keras_quant.data import as_list
from keras_quant.observation import distribution
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
        mean_abs_output_diff: mean |float - quantized| over every output
            element.
        output_sqnr_db: signal-to-quantization-noise ratio of the outputs,
            `10 log10(sum(float**2) / sum((float - quantized)**2))`; `inf`
            for identical outputs.
        output_error_percent: the largest |float - quantized| element in
            percent of its output's float range (max - min), the worst
            output; 0 for identical outputs, `inf` for a difference on a
            constant output.

    The output figures are NaN when they cannot be computed (outputs
    holding NaN, or no output element).
    """

    float_metrics: dict
    quantized_metrics: dict
    max_abs_output_diff: float
    samples: int
    mean_abs_output_diff: float = float("nan")
    output_sqnr_db: float = float("nan")
    output_error_percent: float = float("nan")


def predict_float(model, x, batch_size=256):
    """Keras predictions with observers paused, so nothing is recorded.

    On a worker of a multi-worker strategy (`spans_workers`), this worker
    alone computes them (`on_this_worker`).
    """
    with observers_paused(model):
        if spans_workers(model):
            return on_this_worker(_predict, model, x, batch_size)
        return _predict(model, x, batch_size)


def _predict(model, x, batch_size):
    return model.predict(x, batch_size=batch_size, verbose=0)


def distribution_strategy(model):
    """The `tf.distribute` strategy `model` runs under (the one it was
    built in, else the current one), or None off TensorFlow."""
    return getattr(model, "distribute_strategy", None)


def spans_workers(model):
    """Whether `model` runs under a strategy with replicas in other
    processes (see `observation.distribution.spans_workers`).

    >>> inputs = keras.Input((2,))
    >>> spans_workers(keras.Model(inputs, inputs))
    False
    """
    strategy = distribution_strategy(model)
    return strategy is not None and distribution.spans_workers(strategy)


def on_this_worker(function, model, *args):
    """`function(twin, *args)`, where `twin` is `model`'s `plain_twin`,
    run outside any strategy scope (`outside_strategy`): this worker alone
    computes it, with no collective waiting for the others."""
    return outside_strategy(lambda: function(plain_twin(model), *args))


def outside_strategy(function, *args):
    """`function(*args)`, run where no `tf.distribute` strategy scope is
    open: in a thread of its own (scopes belong to a thread), with this
    thread's context variables.

    >>> outside_strategy(max, 1, 2)
    2
    """
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(context.run, function, *args).result()


# model -> (its plain twin, the compile config the twin was compiled from)
_TWINS = weakref.WeakKeyDictionary()


def plain_twin(model):
    """A Functional model of `model`'s layers (its weights and observers
    shared), built outside any strategy and compiled as `model` is: its
    `predict` and metrics run on this worker alone. A multi-worker model's
    own metrics are variables read and reset by a collective across
    workers, even outside its scope.

    Call it inside `outside_strategy`. Kept while `model` lives and its
    compile config stays the same. A model whose compile config cannot be
    rebuilt (a metric that cannot be serialized) gets an uncompiled twin:
    no metrics, as for a model never compiled.
    """
    config = model.get_compile_config() if is_compiled(model) else None
    if model in _TWINS and _TWINS[model][1] == config:
        return _TWINS[model][0]
    twin = keras.Model(model.input, model.output, name=f"{model.name}_twin")
    if config is not None:
        try:
            twin.compile_from_config(config)
        except (TypeError, ValueError):
            twin = keras.Model(model.input, model.output, name=twin.name)
    _TWINS[model] = (twin, config)
    return twin


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
        samples=len(as_list(x)[0]),
        **output_figures(float_pred, quant_pred),
    )


def max_abs_difference(float_pred, quant_pred):
    """The largest |float - quantized| element over all outputs."""
    return max(
        float(np.max(np.abs(np.asarray(f) - np.asarray(q))))
        for f, q in zip(as_list(float_pred), as_list(quant_pred))
    )


# The output fields of `Comparison`, as `output_figures` names them.
OUTPUT_FIGURES = (
    "max_abs_output_diff",
    "mean_abs_output_diff",
    "output_sqnr_db",
    "output_error_percent",
)


def output_figures(float_pred, quant_pred):
    """How far the quantized outputs are from the float ones: the fields
    `OUTPUT_FIGURES` of `Comparison`, NaN when there is no output element.

    >>> found = output_figures(np.array([0.0, 1.0]), np.array([0.0, 0.9]))
    >>> [round(found[name], 2) for name in OUTPUT_FIGURES]
    [0.1, 0.05, 20.0, 10.0]

    Raises:
        ValueError: the two hold different numbers or shapes of outputs
            (the `.tflite` is not an export of this model).
    """
    pairs = [(f, q) for f, q in output_pairs(float_pred, quant_pred) if f.size]
    if not pairs:
        return dict.fromkeys(OUTPUT_FIGURES, float("nan"))
    with np.errstate(all="ignore"):  # inf and NaN are answers here
        differences = [np.abs(f - q) for f, q in pairs]
        return {
            "max_abs_output_diff": _largest(np.max(d) for d in differences),
            "mean_abs_output_diff": _mean(differences),
            "output_sqnr_db": _sqnr_db(pairs),
            "output_error_percent": _largest(
                _percent_of_range(f, d) for (f, _), d in zip(pairs, differences)
            ),
        }


def _largest(values):
    """The largest of `values`, NaN if any is NaN (unlike `max`)."""
    return float(np.max(np.array(list(values), dtype=np.float64)))


def output_pairs(float_pred, quant_pred):
    """`[(float output, quantized output)]` as arrays of one shape each."""
    floats, quants = as_list(float_pred), as_list(quant_pred)
    if len(floats) != len(quants):
        raise ValueError(
            f"The Keras model has {len(floats)} outputs and the .tflite "
            f"{len(quants)}: compare a .tflite exported from this model."
        )
    pairs = [(np.asarray(f), np.asarray(q)) for f, q in zip(floats, quants)]
    for index, (f, q) in enumerate(pairs):
        if f.shape != q.shape:
            raise ValueError(
                f"Output {index} has shape {f.shape} in the Keras model and "
                f"{q.shape} in the .tflite: compare a .tflite exported from "
                "this model."
            )
    return pairs


def _mean(differences):
    total = sum(float(np.sum(d, dtype=np.float64)) for d in differences)
    return total / sum(d.size for d in differences)


def _sqnr_db(pairs):
    signal = sum(_sum_of_squares(f) for f, _ in pairs)
    noise = sum(_sum_of_squares(f - q) for f, q in pairs)
    if noise == 0 and not np.isnan(signal):  # identical outputs
        return float("inf")
    return float(10 * np.log10(np.float64(signal) / noise))


def _sum_of_squares(values):
    return float(np.sum(np.square(values, dtype=np.float64)))


def _percent_of_range(float_output, difference):
    largest = float(np.max(difference))
    if largest == 0:
        return 0.0
    spread = float(np.max(float_output)) - float(np.min(float_output))
    return float(100 * np.float64(largest) / spread)


is_compiled = keras_internals.is_compiled


def metrics_from_predictions(model, y, y_pred):
    """The model's compiled loss and metrics for predictions `y_pred`.

    Returns an empty dict for a model that was never compiled. For a
    model built under a strategy with several replicas, a plain twin
    computes them outside the strategy (`on_this_worker`): on a worker of
    a multi-worker strategy this worker alone, with no collective; and
    under any, with the loss Keras would otherwise divide by the number
    of replicas (`scale_loss_for_distribution`).
    """
    if spans_workers(model) or _has_replicas(model):
        return on_this_worker(_metrics, model, y, y_pred)
    return _metrics(model, y, y_pred)


def _has_replicas(model):
    strategy = distribution_strategy(model)
    return strategy is not None and strategy.num_replicas_in_sync > 1


def _metrics(model, y, y_pred):
    """`metrics_from_predictions` in the process calling it."""
    if y is None or not is_compiled(model):
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
