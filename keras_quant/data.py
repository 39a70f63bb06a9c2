"""Data as keras-quant receives it: arrays, `(x, y)` tuples or datasets.

Every stage that reads validation or calibration data goes through these
few functions, so they all accept the same things and fail the same way.
NumPy only: nothing here imports Keras or TensorFlow.
"""

import numpy as np


def as_arrays(validation_data):
    """`(x, y)` numpy arrays from a tuple or a `tf.data.Dataset` of them.

    >>> x, y = as_arrays((np.zeros((2, 3)), np.ones(2)))
    >>> x.shape, y.tolist()
    ((2, 3), [1.0, 1.0])

    Raises:
        TypeError: for anything else, saying what is accepted.
    """
    if isinstance(validation_data, tuple) and len(validation_data) in (2, 3):
        x, y = validation_data[0], validation_data[1]
        return x, y
    if hasattr(validation_data, "as_numpy_iterator"):
        batches = list(validation_data.as_numpy_iterator())
        xs = [batch[0] for batch in batches]
        ys = [batch[1] for batch in batches]
        return _concatenate(xs), _concatenate(ys)
    raise TypeError(
        "Expected `validation_data` as a tuple `(x, y)` of arrays or a "
        "`tf.data.Dataset` yielding `(x, y)` batches. Received: an object "
        f"of type {type(validation_data).__name__}."
    )


def _concatenate(parts):
    if isinstance(parts[0], (list, tuple)):
        return [np.concatenate(group) for group in zip(*parts)]
    return np.concatenate(parts)


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
    if isinstance(data, tuple) or hasattr(data, "as_numpy_iterator"):
        data = as_arrays(data)[0]
    if isinstance(data, (list, tuple)):
        return [np.asarray(x)[:samples] for x in data]
    return np.asarray(data)[:samples]
