"""Data as keras-quant receives it: arrays, `(x, y)` tuples or datasets.

Every stage that reads validation or calibration data goes through these
few functions, so they all accept the same things and fail the same way.
NumPy only: nothing here imports Keras or TensorFlow.
"""

import numpy as np

ACCEPTED = (
    "a tuple `(x, y)` (or `(x,)`, `(x, y, sample_weight)`) of arrays, a "
    "finite `tf.data.Dataset`, a `keras.utils.PyDataset` or a Python "
    "generator, each yielding `(x, y)` batches (or `x` alone)"
)


def as_arrays(validation_data, input_ranks=None):
    """`(x, y)` numpy arrays from the data forms `fit` takes.

    Accepts `(x, y)`, `(x,)` or `(x, y, sample_weight)` tuples of arrays,
    and a `tf.data.Dataset`, a `keras.utils.PyDataset` or a Python
    generator (or any iterator) yielding `(x, y)` batches or `x` alone. A
    dataset of single samples (not batched) is read as such when
    `input_ranks` (the rank of each model input, batch included) says an
    element lacks the batch axis. `y` is None where the data has no
    labels. Sample weights are not used.

    >>> x, y = as_arrays((np.zeros((2, 3)), np.ones(2)))
    >>> x.shape, y.tolist()
    ((2, 3), [1.0, 1.0])
    >>> x, y = as_arrays(iter([np.zeros((2, 3)), np.zeros((1, 3))]))
    >>> x.shape, y
    ((3, 3), None)

    Raises:
        TypeError: for anything else, saying what is accepted.
        ValueError: a dataset that repeats forever or holds no sample,
            or batches that do not fit together; the message names the
            fix.
    """
    if isinstance(validation_data, tuple) and len(validation_data) in (1, 2, 3):
        y = validation_data[1] if len(validation_data) > 1 else None
        return validation_data[0], y
    elements = _elements(validation_data)
    xs, ys = [], []
    for element in elements:
        x, y = _split(element)
        batched = _batched(x, input_ranks)
        xs.append(x if batched else _with_batch_axis(x))
        ys.append(y if batched or y is None else _with_batch_axis(y))
    if not xs:
        raise ValueError(
            "`validation_data` holds no sample: it yielded no batch. Pass "
            "data with at least one sample, or no `validation_data`."
        )
    labelled = [y is not None for y in ys]
    if any(labelled) and not all(labelled):
        raise ValueError(
            "`validation_data` yields some batches with labels and some "
            "without: yield `(x, y)` every time (or `x` alone every time)."
        )
    return _concatenate(xs), _concatenate(ys) if all(labelled) else None


def _elements(data):
    """The batches (or samples) a dataset, PyDataset or iterator yields."""
    if hasattr(data, "as_numpy_iterator"):  # tf.data.Dataset
        if int(data.cardinality()) == -1:  # tf.data.INFINITE_CARDINALITY
            raise ValueError(
                "`validation_data` is a `tf.data.Dataset` that repeats "
                "forever (`.repeat()`): measuring needs an end. Pass a "
                "finite part of it, e.g. `dataset.take(steps)`."
            )
        return data.as_numpy_iterator()
    if hasattr(data, "num_batches") and hasattr(data, "__getitem__"):
        count = data.num_batches  # keras.utils.PyDataset
        if count is None:
            raise ValueError(
                "`validation_data` is a `keras.utils.PyDataset` without a "
                "length (`num_batches` is None): measuring needs an end. "
                "Give it a `__len__`."
            )
        return (data[index] for index in range(count))
    if hasattr(data, "__next__"):  # a generator or another iterator
        return data
    raise TypeError(
        f"Expected `validation_data` as {ACCEPTED}. Received: an object "
        f"of type {type(data).__name__}."
    )


def _split(element):
    """`(x, y)` of one yielded element; y is None for `x` alone."""
    if isinstance(element, tuple) and len(element) in (1, 2, 3):
        return element[0], element[1] if len(element) > 1 else None
    if isinstance(element, dict):
        raise TypeError(
            "`validation_data` yields a dict; keras-quant reads inputs by "
            "position: yield `(x, y)` with `x` an array or a list of "
            "arrays in the order of `model.inputs`."
        )
    return element, None


def _batched(x, input_ranks):
    """Whether `x` (one input or a list) has a batch axis."""
    if input_ranks is None:
        return True
    first = np.asarray(as_list(x)[0])
    return first.ndim >= input_ranks[0]


def _with_batch_axis(value):
    if isinstance(value, (list, tuple)):
        return [np.asarray(v)[None] for v in value]
    return np.asarray(value)[None]


def _concatenate(parts):
    try:
        if isinstance(parts[0], (list, tuple)):
            return [np.concatenate(group) for group in zip(*parts)]
        return np.concatenate(parts)
    except ValueError as error:
        raise ValueError(
            "The batches of `validation_data` do not fit together "
            f"({error}): every batch must have the same shape after its "
            "first (batch) axis."
        ) from error


def check_finite(x, y, where="`validation_data`"):
    """Raises if the inputs `x` or labels `y` (None: none) hold NaN or
    infinity: every figure measured on them would be NaN, and a choice
    resting on NaN figures (`mode="auto"`) would be no choice at all.
    `where` names the data in the message.

    >>> check_finite(np.zeros(2), np.array([0.0, np.inf]))
    Traceback (most recent call last):
    ...
    ValueError: `validation_data` holds 1 infinite value in its labels (y), \
of 2 values: ...

    Raises:
        ValueError: naming the array and how many values are not finite.
    """
    arrays = _named(x, "inputs", "x") + _named(y, "labels", "y")
    for name, array in arrays:
        try:
            values = np.asarray(array)
        except Exception:  # noqa: BLE001  not numbers: the model will say
            continue
        if values.dtype.kind not in "fc":
            continue
        nan = int(np.count_nonzero(np.isnan(values)))
        infinite = int(np.count_nonzero(np.isinf(values)))
        if nan or infinite:
            counted = " and ".join(
                f"{count} {kind} value{'s' if count > 1 else ''}"
                for count, kind in ((nan, "NaN"), (infinite, "infinite"))
                if count
            )
            raise ValueError(
                f"{where} holds {counted} in its {name}, of {values.size} "
                "values: every metric measured on them would be NaN, and "
                "nothing could be judged by it. Drop or replace them first "
                "(e.g. keep the samples where `np.isfinite(x).all(axis=...)`)."
            )


def _named(value, label, letter):
    """`[(name, array)]` of inputs or labels: one array, a list or a dict."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [(f"{label} {letter}[{key!r}]", v) for key, v in value.items()]
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return [(f"{label} ({letter}[0])", value[0])]
        return [(f"{label} ({letter}[{i}])", v) for i, v in enumerate(value)]
    return [(f"{label} ({letter})", value)]


def as_list(value):
    """`value` as a list: a list or tuple as is, anything else alone.

    >>> as_list(1), as_list((1, 2))
    ([1], [1, 2])
    """
    return list(value) if isinstance(value, (list, tuple)) else [value]


def sample_inputs(data, samples):
    """The first `samples` inputs of arrays, `(x, y)` or a dataset.

    >>> sample_inputs((np.arange(5), np.arange(5)), 2).tolist()
    [0, 1]
    """
    if not (isinstance(data, list) or hasattr(data, "__array__")):
        data = as_arrays(data)[0]
    if isinstance(data, (list, tuple)):
        return [np.asarray(x)[:samples] for x in data]
    return np.asarray(data)[:samples]
