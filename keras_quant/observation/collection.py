"""One batched update per step for every observer of a model.

An observer's own work in a step is three reductions of its tensor (min,
max and sum). Everything else is done once per step for all observers
together, as vector operations over the points (decision D43):

1. one check of the sums: a finite sum means the tensor holds no NaN or
   Inf, and only when some sum is not finite are the tensors masked and
   reduced again (one conditional for the whole model, not one per point);
2. one exchange across `tf.distribute` replicas and workers, of all the
   points' statistics stacked, so every replica holds the range a single
   device would compute on the global batch;
3. the next state of every point (running or moving-average min and max,
   batch and NaN/Inf counts) as vector `where`s, then one assignment per
   variable.

Histograms (for the histogram estimators) and the replay sample stay per
point, computed after the exchange. There is no conditional per point, so
a traced step holds a few operations per point instead of a hundred, and
an observer that does not record in a phase adds nothing to its trace.

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

import numpy as np
from keras import ops

from keras_quant.observation import distribution

_ACTIVE = threading.local()


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One observer's tensor in this step, and its three reductions."""

    observer: object
    values: object  # float32, the observed tensor's shape
    bit: int
    low: object
    high: object
    total: object


class Collection:
    """The observed tensors of one step, applied together by `apply`."""

    def __init__(self):
        self.entries = []

    def add(self, observer, inputs, bit):
        """Adds `observer`'s tensor `inputs`, recorded for phase `bit`."""
        values = ops.cast(inputs, "float32")
        self.entries.append(
            _Entry(
                observer,
                values,
                bit,
                ops.min(values, initial=np.inf),
                ops.max(values, initial=-np.inf),
                ops.sum(values),
            )
        )

    def apply(self):
        """Updates every observer added, as one batched step."""
        if not self.entries:
            return
        observers = [entry.observer for entry in self.entries]
        masks = ops.stack([o.record_mask.value for o in observers])
        bits = ops.convert_to_tensor([e.bit for e in self.entries], "int32")
        recording = ops.not_equal(ops.bitwise_and(masks, bits), 0)
        low, high, nonfinite = self._batch_stats(recording)
        low, high, nonfinite = distribution.reduce_batch_stats(
            low, high, nonfinite
        )
        takes = _takes_batch(recording, low, high)
        updates = _next_state(observers, takes, nonfinite, low, high)
        updates += self._histogram_updates(takes, low, high)
        updates += self._sample_updates(recording)
        for variable, value in updates:
            variable.assign(value)

    def _batch_stats(self, recording):
        """Each point's min and max of its finite values and count of the
        others, as vectors; a point that does not record offers an empty
        batch (`inf`, `-inf`, 0)."""
        counter = _counter_dtype(self.entries)
        low = ops.stack([entry.low for entry in self.entries])
        high = ops.stack([entry.high for entry in self.entries])
        total = ops.stack([entry.total for entry in self.entries])
        low, high, nonfinite = ops.cond(
            ops.all(ops.isfinite(total)),
            lambda: (low, high, ops.zeros_like(total, dtype=counter)),
            lambda: self._masked_stats(counter),
        )
        return (
            ops.where(recording, low, np.inf),
            ops.where(recording, high, -np.inf),
            ops.where(recording, nonfinite, ops.zeros_like(nonfinite)),
        )

    def _masked_stats(self, counter):
        """Min, max and NaN/Inf count of every point, NaN and Inf masked:
        the slow path, taken only by steps where some tensor has them.

        All the points' values are reduced together, by segment, so that
        this path adds a few ops per point to the traced step, not a dozen.
        """
        flat = [ops.reshape(entry.values, (-1,)) for entry in self.entries]
        segments = ops.concatenate(
            [ops.full(ops.shape(v), i, "int32") for i, v in enumerate(flat)]
        )
        values = ops.concatenate(flat)
        finite = ops.isfinite(values)
        points = len(flat)

        def masked_max(signed):
            return ops.segment_max(
                ops.where(finite, signed, -np.inf), segments, points
            )

        counts = ops.segment_sum(
            ops.cast(ops.logical_not(finite), counter), segments, points
        )
        return -masked_max(-values), masked_max(values), counts

    def _histogram_updates(self, takes, low, high):
        """The histogram state of the points with a histogram estimator;
        `takes` says which points take this batch (`_takes_batch`)."""
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
        for index, entry in enumerate(self.entries):
            observer = entry.observer
            if observer.sample_ is None:
                continue
            keep = ops.logical_and(
                recording[index],
                ops.less(observer.samples_kept_, observer.sample_size),
            )
            updates += zip(
                (observer.sample_, observer.samples_kept_),
                ops.cond(
                    keep,
                    lambda entry=entry: entry.observer.next_sample(
                        ops.reshape(
                            entry.values,
                            (-1, *entry.observer.sample_shape),
                        )
                    ),
                    lambda observer=observer: (
                        observer.sample_.value,
                        observer.samples_kept_.value,
                    ),
                ),
            )
        return updates


def _takes_batch(recording, low, high):
    """Whether each point's state takes this batch: it records and the
    batch has finite values."""
    return ops.logical_and(recording, ops.less_equal(low, high))


def _next_state(observers, takes, nonfinite, low, high):
    """`(variable, value)` for every point's min, max and counts; `takes`
    says which points take this batch (`_takes_batch`)."""
    stacked = {
        name: ops.stack([getattr(o, name).value for o in observers])
        for name in ("min_", "max_", "batches_seen_", "nonfinite_count_")
    }
    momentum = ops.stack([o.momentum.value for o in observers])
    first = ops.equal(stacked["batches_seen_"], 0)
    running = ops.equal(momentum, 0.0)

    def moved(old, batch, extreme):
        average = momentum * old + (1.0 - momentum) * batch
        new = ops.where(running, extreme(old, batch), average)
        return ops.where(takes, ops.where(first, batch, new), old)

    seen = stacked["batches_seen_"]
    state = {
        "min_": moved(stacked["min_"], low, ops.minimum),
        "max_": moved(stacked["max_"], high, ops.maximum),
        "batches_seen_": ops.where(takes, seen + 1, seen),
        "nonfinite_count_": stacked["nonfinite_count_"]
        + ops.cast(nonfinite, stacked["nonfinite_count_"].dtype),
    }
    return [
        (getattr(observer, name), value)
        for name, values in state.items()
        for observer, value in zip(observers, ops.unstack(values))
    ]


def _counter_dtype(entries):
    return entries[0].observer.nonfinite_count_.dtype


def active():
    """The `Collection` open in this thread, or None."""
    stack = getattr(_ACTIVE, "stack", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def collecting():
    """Opens a `Collection`: observers called inside add to it instead of
    updating themselves; the caller applies it."""
    collection = Collection()
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
    collection = None if observer.quantize else active()
    if collection is not None:
        collection.add(observer, inputs, bit)
        return
    alone = Collection()
    alone.add(observer, inputs, bit)
    alone.apply()
