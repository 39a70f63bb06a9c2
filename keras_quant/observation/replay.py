"""The replay sample: the first inputs a model-input observer records.

The exporter replays these inputs through the float model to find the
ranges of the tensors no observer sees (decision D30). The sample is kept
in host memory, in a numpy array, which the step fills by calling back to
Python with each recorded batch (decision D46): one operation in a traced
TensorFlow step, where updating the sample's variables took about thirty
(each one costs tracing time) and copied the whole sample in every
recording step. The sample's two Keras variables remain its saved form:
`flush` writes them (before a save or a read), `reload` reads them (after
a load).

Where the step cannot call back to Python, in a TensorFlow graph compiled
by XLA (`jit_compile=True`) and on JAX, the step updates the variables
instead, in the graph (`ReplaySample.in_graph_updates`). A sample holds
what either path recorded: each path takes over where the other stopped.

A sample takes inputs of any dtype (`sample_dtype`): float inputs are kept
in bfloat16, integer and bool inputs (token ids, masks) in their own dtype,
exactly.

Example:

>>> rows = keras.Variable(np.zeros((3, 2)), dtype="float32")  # 2 + 1 spare
>>> kept = keras.Variable(0, dtype="int64")
>>> sample = ReplaySample(rows, kept)
>>> sample.take(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), True)
>>> sample.values()
array([[1., 2.],
       [3., 4.]], dtype=float32)
"""

import contextlib
import threading

import keras
import numpy as np
from keras import ops

from keras_quant.observation import distribution
from keras_quant.observation.state_bank import counter_dtype
from keras_quant.observation.state_bank import read

# The sample is kept in bfloat16: float32's range, half its bytes; its
# 8-bit mantissa moves a replayed min or max by at most 0.4 %. Under a
# multi-worker strategy, which cannot broadcast bfloat16 variables when it
# creates them, in float32 (`sample_dtype`).
SAMPLE_DTYPE = "bfloat16"


def sample_dtype(dtype="float32"):
    """The dtype a replay sample of `dtype` inputs is kept in: for a float
    input `SAMPLE_DTYPE`, or float32 across workers; any other input
    (integer, bool) in its own dtype, which replays it exactly."""
    if not is_float(dtype):
        return keras.backend.standardize_dtype(dtype)
    return "float32" if distribution.spans_workers() else SAMPLE_DTYPE


def bytes_per_value(dtype):
    """The bytes a value of a `dtype` input takes in a replay sample (a
    float one's in `SAMPLE_DTYPE`)."""
    kept = SAMPLE_DTYPE if is_float(dtype) else sample_dtype(dtype)
    return np.dtype(kept).itemsize


def is_float(dtype):
    """Whether `dtype` (any spelling: a string, a numpy or backend dtype)
    is a floating-point type."""
    return "float" in keras.backend.standardize_dtype(dtype)


def new_sample(layer, shape, size, dtype, prefix=""):
    """A `ReplaySample` of `size` inputs of `shape`, kept in `dtype`
    (`sample_dtype`), in two new weights of `layer`, its saved form:
    `<prefix>sample` and `<prefix>samples_kept`."""

    def weight(name, weight_shape, weight_dtype):
        return layer.add_weight(
            name=prefix + name,
            shape=weight_shape,
            dtype=weight_dtype,
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )

    # One row more than kept: writes past the end land there.
    rows = weight("sample", (size + 1, *shape), dtype)
    return ReplaySample(rows, weight("samples_kept", (), counter_dtype()))


class ReplaySample:
    """The first `size` samples recorded of a model input, on the host
    (kept by the input's observer, or by the model for an input that has
    none).

    Args:
        rows: the Keras variable that saves the samples, of shape
            `(size + 1, *sample_shape)`: writes in the graph that find no
            room land in its last row.
        kept: the Keras variable that saves how many samples are kept.
    """

    def __init__(self, rows, kept):
        self.rows, self.kept = rows, kept
        self.size = rows.shape[0] - 1
        self.shape = tuple(rows.shape[1:])
        self._host = None  # numpy, allocated by `reload`
        self._count = 0
        self._newer = False  # the host holds samples the variables lack
        self._stale = True  # the variables may hold samples the host lacks
        # Replicas of a `tf.distribute` strategy call back concurrently.
        self._lock = threading.Lock()

    def variables(self):
        """`(rows, kept)`: the Keras variables of the saved form."""
        return self.rows, self.kept

    def step_updates(self, batch, recording):
        """What a traced step does with `batch`, a recorded input: hands
        it to the host (`take`) where it can, and returns no update; or
        returns the `[(variable, value)]` of `in_graph_updates`."""
        call_back = _HOST_CALLS.get(keras.backend.backend())
        if call_back is None or not call_back.available():
            return self.in_graph_updates(batch, recording)
        call_back(self.take, batch, recording)
        return []

    def take(self, batch, recording):
        """Keeps `batch`'s first samples while there is room, if
        `recording` (numpy values, or tensors this backend converts)."""
        if self._count >= self.size or not recording:
            return
        if not isinstance(batch, np.ndarray):
            batch = ops.convert_to_numpy(batch)
        batch = batch.reshape(-1, *self.shape)
        with self._lock:
            if self._stale:  # continue from what the variables hold
                self.reload()
            taken = batch[: self.size - self._count]
            self._host[self._count : self._count + len(taken)] = taken
            self._count += len(taken)
            self._newer = True

    def in_graph_updates(self, batch, recording):
        """`[(variable, value)]` of the sample and its count after this
        batch, for a graph that cannot call back to Python. No branch: rows
        that find no room are written to the spare row past the end."""
        if self._newer:  # take over from the host
            with _eagerly():
                self.flush()
        self._stale = True
        if tuple(batch.shape[1:]) != self.shape:
            batch = ops.reshape(batch, (-1, *self.shape))
        batch = ops.cast(batch, self.rows.dtype)
        # (fewer ops than `ops.shape(batch)[0]`, a dynamic one when the
        # batch size is not known)
        count = ops.size(batch) // int(np.prod(self.shape))
        held = ops.cast(self.kept.value, "int32")  # read once
        end = self.size
        start = ops.where(recording, held, end)
        rows = ops.minimum(start + ops.arange(count, dtype="int32"), end)
        samples = ops.scatter_update(
            self.rows.value, ops.expand_dims(rows, -1), batch
        )
        kept = ops.minimum(held + ops.where(recording, count, 0), end)
        return [(self.rows, samples), (self.kept, kept)]

    def flush(self):
        """Writes the host's samples to the variables, if they lack any."""
        with self._lock:
            if not self._newer:
                return
            spare = np.zeros((1, *self.shape), self._host.dtype)
            self.rows.assign(np.concatenate([self._host, spare]))
            self.kept.assign(self._count)
            self._newer = False

    def reload(self):
        """Sets the host's samples from the variables (after a load)."""
        self._host = np.array(read(self.rows)[: self.size])
        self._count = int(read(self.kept))
        self._newer = self._stale = False

    def clear(self):
        """Forgets every sample."""
        with self._lock:
            self._count, self._newer = 0, False
            self.kept.assign(0)

    def values(self):
        """The samples kept so far, as a numpy array: float32 for float
        inputs, in their own dtype for any other."""
        self.flush()
        kept = read(self.rows)[: int(read(self.kept))]
        return kept.astype("float32") if is_float(kept.dtype) else kept

    def state_values(self):
        """`[rows, count]` as numpy values: the saved form, host samples
        included."""
        self.flush()
        return [np.asarray(read(self.rows)), np.asarray(read(self.kept))]

    def restore_state_values(self, values):
        """Sets the samples from `state_values()` (or a saved file's)."""
        rows, count = values
        self.rows.assign(np.asarray(rows))
        self.kept.assign(np.asarray(count).reshape(()))
        self.reload()


class _TensorFlowCall:
    """A call back to Python from a TensorFlow step: one `PyFunc` op, or
    the call itself when running eagerly. Not under XLA."""

    @staticmethod
    def available():
        from keras_quant._compat.tensorflow_internals import in_xla_context

        return not in_xla_context()

    @staticmethod
    def eagerly():
        import tensorflow as tf

        return tf.init_scope()

    def __call__(self, function, *tensors):
        import tensorflow as tf

        tf.numpy_function(function, list(tensors), Tout=[], stateful=True)


class _EagerCall:
    """A call back from a PyTorch step: PyTorch runs the step in Python."""

    @staticmethod
    def available():
        return True

    @staticmethod
    def eagerly():
        return contextlib.nullcontext()

    def __call__(self, function, *tensors):
        function(*tensors)


# How each backend's step calls back to Python; JAX's steps are compiled
# by XLA and update the sample in the graph.
_HOST_CALLS = {"tensorflow": _TensorFlowCall(), "torch": _EagerCall()}


def _eagerly():
    """A context that runs eagerly, outside the graph being traced."""
    call_back = _HOST_CALLS.get(keras.backend.backend())
    return (
        contextlib.nullcontext() if call_back is None else call_back.eagerly()
    )
