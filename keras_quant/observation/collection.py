"""One batched update per step for every observer of a model.

An observer's own work in a step is two reductions of its tensor (min and
max; a sum too where they may drop a NaN, `bounds_keep_nan`). Everything
else is done once per step for all observers together, as vector
operations over the points (decisions D43, D44):

1. which points hold NaN or Inf, from the reductions (an Inf makes the
   min or max infinite, a NaN the min and max, or the sum, NaN): such a
   point skips the batch and counts it in `nonfinite_batches_`, with no
   second pass over the tensor and no conditional;
2. one exchange across `tf.distribute` replicas and workers, of all the
   points' statistics stacked, so every replica holds the range a single
   device would compute on the global batch;
3. the next state of every point (running or moving-average min and max,
   batch counts) as vector `where`s over the rows of the model's
   `state_bank.StateBank`: one read and one write of each of its two
   variables for the whole model.

Histograms (for the histogram estimators) and the replay sample stay per
point, computed after the exchange. A traced step holds a few operations
per point instead of a hundred, and an observer that does not record in a
phase adds nothing to its trace. The replay samples of model inputs no
observer reads (integer and bool inputs) join the step too (`keep`), kept
when the observer they follow records.

`ObservedModel.call` opens a `Collection` around the model's graph and
applies it after. An observer called alone, or one that also
fake-quantizes (quantization-aware training, which must quantize with the
range that includes this batch), applies its own one-point collection at
once.

Example:

>>> from keras_quant.observation.observers import Observer
>>> observer = Observer(estimator="minmax")
>>> with collecting() as collection:
...     _ = observer(keras.ops.convert_to_tensor([[-1.0, 2.0]]))
>>> observer.calibrated
False
>>> collection.apply()
>>> observer.range()
(-1.0, 2.0)
"""

import contextlib
import dataclasses
import threading

import keras
import numpy as np
from keras import ops

from keras_quant.observation import distribution

_ACTIVE = threading.local()


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One observer's tensor in this step, and its reductions (min, max,
    and a sum where the bounds may drop a NaN)."""

    observer: object
    values: object  # float32, the observed tensor's shape
    bit: int
    low: object
    high: object
    total: object  # None where the bounds keep NaN


class Collection:
    """The observed tensors of one step, applied together by `apply`.

    Args:
        bounds_keep_nan: whether a tensor's min and max are NaN whenever it
            holds a NaN, so that they alone reveal NaN and Inf and each
            point costs two reductions, not three (`bounds_keep_nan`).
            Defaults to `False`: a sum finds the NaN.
    """

    def __init__(self, bounds_keep_nan=False):
        self.entries = []
        self.samples = []  # (sample, inputs, observer, bit) of `keep`
        self.bounds_keep_nan = bounds_keep_nan
        self._axes = {}

    def add(self, observer, inputs, bit):
        """Adds `observer`'s tensor `inputs`, recorded for phase `bit`."""
        values = ops.cast(inputs, "float32")
        axes = self.all_axes(len(values.shape))
        # `initial` costs two ops per point: only for a tensor known to be
        # empty (JAX and PyTorch refuse to reduce one without it; a
        # TensorFlow graph gives the same inf and -inf for an empty batch).
        empty = 0 in values.shape
        self.entries.append(
            _Entry(
                observer,
                values,
                bit,
                ops.min(values, axis=axes, initial=np.inf if empty else None),
                ops.max(values, axis=axes, initial=-np.inf if empty else None),
                None if self.bounds_keep_nan else ops.sum(values, axis=axes),
            )
        )

    def keep(self, sample, inputs, observer, bit):
        """Adds `inputs`, a model input that replay `sample` keeps when
        `observer` records in phase `bit` (at run time: its mask)."""
        self.samples.append((sample, inputs, observer, bit))

    def all_axes(self, rank):
        """The axes of a tensor of `rank`, for a reduction to a scalar.

        On TensorFlow, one constant per rank for the whole step: left to
        itself, each reduction adds its own constant of axes to the graph,
        and every op costs tracing time (decision D45). Elsewhere None,
        which reduces over all axes.
        """
        if keras.backend.backend() != "tensorflow" or rank == 0:
            return None
        if rank not in self._axes:
            self._axes[rank] = ops.convert_to_tensor(list(range(rank)), "int32")
        return self._axes[rank]

    def apply(self):
        """Updates every observer added: one batched update per bank (an
        observed model has one)."""
        banks = {}
        for entry in self.entries:
            banks.setdefault(id(entry.observer.bank), []).append(entry)
        for entries in banks.values():
            _BankStep(entries).apply()
        for sample, inputs, observer, bit in self.samples:
            recording = _has_bit(observer.record_mask.value, bit)
            for variable, value in sample.step_updates(inputs, recording):
                variable.assign(value)
        self.entries, self.samples = [], []


class _BankStep:
    """The batched update of the observers of one bank that recorded."""

    def __init__(self, entries):
        self.entries = entries
        self.bank = entries[0].observer.bank
        self.rows = [entry.observer.bank_index for entry in entries]

    def apply(self):
        read = self.bank.read_tables(self.rows)
        state = self.bank.rows(read, self.rows)
        # The points of one step share its phase bit.
        recording = _has_bit(state["record_mask"], self.entries[0].bit)
        low, high, nonfinite = distribution.reduce_batch_stats(
            *self._batch_stats()
        )
        # A point that does not record keeps its state whatever its batch.
        skipped = ops.logical_and(recording, nonfinite)
        takes = ops.logical_and(
            ops.logical_and(recording, ops.logical_not(nonfinite)),
            ops.less_equal(low, high),
        )
        scalars = _next_state(state, takes, skipped, low, high)
        updates = self._histogram_updates(takes, low, high)
        updates += self._sample_updates(recording)
        self.bank.assign_rows(read, self.rows, {**state, **scalars})
        for variable, value in updates:
            variable.assign(value)

    def _batch_stats(self):
        """Each point's batch min and max, and whether its tensor holds
        NaN or Inf, as vectors."""
        low = ops.stack([entry.low for entry in self.entries])
        high = ops.stack([entry.high for entry in self.entries])
        # NaN in the sum (or in the bounds, where they keep it); Inf in
        # the bounds.
        if self.entries[0].total is None:
            nan_probe = low
        else:
            nan_probe = ops.stack([entry.total for entry in self.entries])
        nonfinite = ops.logical_or(
            ops.isnan(nan_probe),
            ops.logical_or(ops.equal(low, -np.inf), ops.equal(high, np.inf)),
        )
        return low, high, nonfinite

    def _histogram_updates(self, takes, low, high):
        """The histogram state of the points with a histogram estimator;
        `takes` says which points take this batch."""
        kept = [
            (index, entry)
            for index, entry in enumerate(self.entries)
            if entry.observer.histogram_ is not None
        ]
        if not kept:
            return []
        counts = []
        for index, entry in kept:
            edges = entry.observer.histogram_edges(low[index], high[index])
            counts.append(
                ops.where(
                    takes[index],
                    entry.observer.batch_histogram(
                        ops.reshape(entry.values, (-1,)), *edges
                    ),
                    ops.zeros((entry.observer.num_bins,), "float64"),
                )
            )
        summed = distribution.sum_across_replicas(ops.stack(counts))
        updates = []
        for row, (index, entry) in enumerate(kept):
            updates += [
                (variable, ops.where(takes[index], value, variable.value))
                for variable, value in entry.observer.next_histogram(
                    summed[row], low[index], high[index]
                )
            ]
        return updates

    def _sample_updates(self, recording):
        """The replay samples of the points that keep one (model inputs)."""
        updates = []
        per_point = None
        for index, entry in enumerate(self.entries):
            if entry.observer.replay is None:
                continue
            if per_point is None:  # one op for all the points' flags
                per_point = ops.unstack(recording)
            updates += entry.observer.replay.step_updates(
                entry.values, per_point[index]
            )
        return updates


def _has_bit(masks, bit):
    """Whether each of `masks` has `bit`, with constants of their dtype
    (no cast in the graph)."""
    dtype = keras.backend.standardize_dtype(masks.dtype)
    return ops.not_equal(
        ops.bitwise_and(masks, np.asarray(bit, dtype)), np.zeros((), dtype)
    )


def _next_state(state, takes, skipped, low, high):
    """`{field: vector}` of the scalars after this batch: min, max and the
    batch counts. `state` holds the old values, `takes` says which points
    take this batch, `skipped` which skip it for NaN or Inf."""
    seen = state["batches_seen_"]
    momentum = state["momentum"]
    first = ops.equal(seen, ops.zeros((), seen.dtype))  # no cast of a 0
    running = ops.equal(momentum, 0.0)

    def moved(old, batch, extreme):
        # A point's first batch is its range: it starts from the batch.
        start = ops.where(first, batch, old)
        average = batch + momentum * (start - batch)
        new = ops.where(running, extreme(start, batch), average)
        return ops.where(takes, new, old)

    counted = state["nonfinite_batches_"]
    return {
        "min_": moved(state["min_"], low, ops.minimum),
        "max_": moved(state["max_"], high, ops.maximum),
        "batches_seen_": seen + ops.cast(takes, seen.dtype),
        "nonfinite_batches_": counted + ops.cast(skipped, counted.dtype),
    }


def bounds_keep_nan(jit_compile):
    """Whether a tensor's min and max are NaN whenever it holds a NaN.

    TensorFlow's and PyTorch's reductions keep NaN; XLA's (JAX, and
    `jit_compile=True`) may drop it, for speed, and then only a sum of
    the tensor reveals it.
    """
    return keras.backend.backend() != "jax" and not jit_compile


def active():
    """The `Collection` open in this thread, or None."""
    stack = getattr(_ACTIVE, "stack", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def collecting(bounds_keep_nan=False):
    """Opens a `Collection(bounds_keep_nan)`: observers called inside add
    to it instead of updating themselves; the caller applies it."""
    collection = Collection(bounds_keep_nan)
    stack = getattr(_ACTIVE, "stack", None)
    if stack is None:
        stack = _ACTIVE.stack = []
    stack.append(collection)
    try:
        yield collection
    finally:
        stack.pop()


def record(observer, inputs, bit):
    """Adds `inputs` to the open collection, or updates `observer` at once
    when none is open or when it fake-quantizes (it must quantize with the
    range that includes this batch)."""
    collection = active()
    if collection is not None and not observer.quantize:
        collection.add(observer, inputs, bit)
        return
    alone = Collection(collection is not None and collection.bounds_keep_nan)
    alone.add(observer, inputs, bit)
    alone.apply()


def keep(sample, inputs, observer, bit):
    """Adds `inputs` to the open collection, to be kept in replay `sample`
    when `observer` records in phase `bit`; or keeps them at once when no
    collection is open."""
    collection = active()
    if collection is not None:
        collection.keep(sample, inputs, observer, bit)
        return
    alone = Collection()
    alone.keep(sample, inputs, observer, bit)
    alone.apply()
