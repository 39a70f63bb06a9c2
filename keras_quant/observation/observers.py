"""Observers: identity layers that record the range of a tensor.

An `Observer` sits at a quantization point. While it records, each batch
updates its state: the running (or moving-average) min and max, a
histogram for the histogram estimators, and counts of the batches taken
and of the batches skipped because the tensor held NaN or Inf (decision
D44). The state lives in Keras variables (the scalars in the model's
`state_bank`), so it is saved in the `.keras` file and restored on load.

When it records is data too: `record_mask` is a bit set of
`RECORD_INFERENCE` (evaluate, predict, validation) and `RECORD_TRAINING`
(training steps), read by the compiled step functions at run time. A
Python copy, `traced_mask`, decides which traced functions contain
recording ops at all: a training step of a model whose observers record on
validation only carries no observer op. `set_record_mask` changes both;
`observed_model.set_recording` also rebuilds the model's step functions.

The update itself is batched over the model's observers, once per step
(`collection`): under a `tf.distribute` strategy, the statistics of all
points are gathered across replicas (and workers) in one exchange, so
every replica holds the range a single device would compute on the same
global batch.

Example:

>>> import numpy as np
>>> observer = Observer(estimator="minmax")
>>> _ = observer(keras.ops.convert_to_tensor([[-1.0, 2.0], [0.5, 1.0]]))
>>> _ = observer(keras.ops.convert_to_tensor([[-9.0, np.nan]]))
>>> observer.range()
(-1.0, 2.0)
>>> int(observer.nonfinite_batches_.numpy())
1
"""

import keras
import numpy as np
from keras import ops

from keras_quant.observation import collection
from keras_quant.observation import replay
from keras_quant.observation.ranges import ESTIMATORS
from keras_quant.observation.ranges import MIN_RANGE_WIDTH
from keras_quant.observation.ranges import SILENT_RANGE_WIDTH
from keras_quant.observation.ranges import check_estimator
from keras_quant.observation.ranges import widen_range
from keras_quant.observation.state_bank import FIELDS
from keras_quant.observation.state_bank import NAMES
from keras_quant.observation.state_bank import StateBank
from keras_quant.observation.state_bank import default_row
from keras_quant.observation.state_bank import read


class _Scalar:
    """An observer's scalar state field: its row of the bank, as a
    `state_bank.Slot` (read `.value`, `.assign`)."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, observer, owner=None):
        if observer is None:
            return self
        return observer.bank.slot(self.name, observer.bank_index)


RECORD_OFF = 0
RECORD_INFERENCE = 1
RECORD_TRAINING = 2
RECORD_ALWAYS = RECORD_INFERENCE | RECORD_TRAINING


# The largest range magnitude a saved observer may hold: an activation
# beyond it means a damaged file, and would quantize everything to zero.
MAX_MAGNITUDE = 1e15


@keras.saving.register_keras_serializable(package="keras_quant")
class Observer(keras.layers.Layer):
    """Identity layer that records the range of the tensor passing through.

    Args:
        estimator: `"minmax"` (running min and max), `"ema"` (moving average
            of batch min and max), or one read off a histogram of the
            values, for long-tailed activations: `"percentile"` (drops the
            tails), `"mse"` (least quantization error), `"entropy"` (least
            KL divergence, as TensorRT) or `"auto"` (`"mse"` where the tails
            are long, min/max elsewhere; see `keras_quant.ranges`).
            Defaults to `"minmax"`.
        point: name of the quantization point observed.
        fixed_range: `(min, max)` fixed by the TFLite spec, or None.
        percentile: for `"percentile"`, the share of values kept inside the
            range, in percent. Defaults to `99.99`.
        num_bins: histogram bins of the histogram estimators. Defaults to
            `2048`.
        quantize: also fake-quantize the tensor with the current range, as
            quantization-aware training does (see `keras_quant.qat`).
            Defaults to `False`: an identity.
        sample_shape: for an observer of a model input, the shape of one
            sample: the observer then also keeps the first `sample_size`
            samples it records (the replay sample, decision D30). None
            keeps none.
        sample_size: how many samples to keep. Defaults to `0`.
        banked: whether a model keeps this observer's scalars in its
            `state_bank.StateBank` (`observe` makes such observers). Defaults
            to `False`: the observer keeps them itself.
        **kwargs: standard layer arguments (`name`, ...).

    Fitted state: the scalars `min_`, `max_`, `batches_seen_` and
    `nonfinite_batches_` (with `momentum` and `record_mask`), rows of the
    model's `state_bank.StateBank`; and Keras variables of the observer's
    own: `histogram_` for the histogram estimators, and `sample_` with
    `samples_kept_` for a replay sample.
    """

    min_ = _Scalar()
    max_ = _Scalar()
    batches_seen_ = _Scalar()
    nonfinite_batches_ = _Scalar()
    momentum = _Scalar()
    record_mask = _Scalar()

    def __init__(
        self,
        estimator="minmax",
        point=None,
        fixed_range=None,
        percentile=99.99,
        num_bins=2048,
        quantize=False,
        sample_shape=None,
        sample_size=0,
        banked=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.banked = bool(banked)
        self.sample_shape = (
            None if sample_shape is None else tuple(sample_shape)
        )
        self.sample_size = int(sample_size) if sample_shape is not None else 0
        self.quantize = bool(quantize)
        self.estimator = check_estimator(estimator)
        self.point = point or self.name
        self.fixed_range = None if fixed_range is None else tuple(fixed_range)
        if not 50.0 < percentile <= 100.0:
            raise ValueError(
                "Expected `percentile` in (50, 100]. "
                f"Received: percentile={percentile}"
            )
        self.percentile = float(percentile)
        self.num_bins = int(num_bins)
        self.supports_masking = True
        self._convert_input_args = False
        self.traced_mask = RECORD_INFERENCE
        self._build_state()

    def _build_state(self):
        spec = ESTIMATORS[self.estimator]

        def state(name, shape=(), dtype="float32", value=0.0):
            return self.add_weight(
                name=name,
                shape=shape,
                dtype=dtype,
                initializer=keras.initializers.Constant(value),
                trainable=False,
                aggregation="only_first_replica",
            )

        # Until a model attaches it to its bank, a banked observer keeps
        # its scalars in a bank of its own that no layer tracks.
        self.bank = StateBank(
            None if self.banked else self,
            [default_row(momentum=spec.momentum)],
        )
        self.bank_index = 0
        self.histogram_ = None
        if spec.histogram:
            self.histogram_ = state(
                "histogram", shape=(self.num_bins,), dtype="float64"
            )
            self.histogram_min_ = state("histogram_min")
            self.histogram_max_ = state("histogram_max")
        self.sample_ = self.replay = None
        if self.sample_size:
            self.replay = replay.new_sample(
                self,
                self.sample_shape,
                self.sample_size,
                replay.sample_dtype(),
            )
            self.sample_, self.samples_kept_ = self.replay.variables()
        # Samples of model inputs no observer reads, which the model keeps
        # and this observer leads: kept when it records, forgotten when it
        # is reset (`ObservedModel`). Not part of this observer's state.
        self.followers = []
        self.built = True

    def attach(self, bank, index):
        """Moves this observer's scalars to row `index` of `bank` (its
        model's), which must already hold them (`state_row`)."""
        self.bank, self.bank_index = bank, index

    def state_row(self):
        """`{field: value}` of the scalars, as Python numbers."""
        return {name: read(getattr(self, name)) for name in NAMES}

    def build(self, input_shape=None):
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs, *args, **kwargs):
        return keras.KerasTensor(inputs.shape, dtype=inputs.dtype)

    def compute_mask(self, inputs, mask=None):
        return mask

    def call(self, inputs, training=None):
        self.record_from(lambda: inputs, training)
        if self.quantize:
            return self.fake_quantize(inputs)
        return inputs

    def fake_quantize(self, inputs):
        """`inputs` rounded to the int8 grid of the current range.

        Passes `inputs` through unchanged while no range is known yet. The
        gradient is the straight-through estimator of
        `keras.quantizers.fake_quant_with_min_max_vars`.
        """
        if self.fixed_range is not None:
            low, high = self.fixed_range
            return keras.quantizers.fake_quant_with_min_max_vars(
                inputs, low, high, num_bits=8
            )
        low = ops.minimum(self.min_.value, 0.0)
        high = ops.maximum(self.max_.value, 0.0)
        silent = ops.less(high - low, MIN_RANGE_WIDTH)
        high = ops.where(silent, low + SILENT_RANGE_WIDTH, high)
        quantized = keras.quantizers.fake_quant_with_min_max_vars(
            inputs, low, high, num_bits=8
        )
        seen = ops.greater(self.batches_seen_.value, 0)
        return ops.where(seen, quantized, inputs)

    def keep_sample(self, sample, inputs, training=None):
        """Keeps `inputs` in `sample`, one of `followers`, in the steps
        where this observer records (`record_from`)."""
        if self.records(training):
            collection.keep(sample, inputs, self, _phase_bit(training))

    def record_from(self, compute, training=None):
        """Records `compute()` if this observer records in this phase.

        An observer that does not record in this phase (`traced_mask`)
        adds nothing to the trace. Otherwise `compute()` joins the step's
        `collection` (one batched update for all observers, applied by the
        model), or updates this observer at once when called alone. The
        run-time `record_mask` decides, inside the traced step, whether
        the batch counts.
        """
        if self.records(training):
            collection.record(self, compute(), _phase_bit(training))

    def records(self, training=None):
        """Whether a step of this phase (a training step or not) traces
        recording ops for this observer."""
        bit = _phase_bit(training)
        return self.fixed_range is None and bool(self.traced_mask & bit)

    # How one batch changes the state that stays per point; called by the
    # step's `collection`, which updates every point's min and max at once.

    def histogram_edges(self, batch_min, batch_max):
        """The histogram range after this batch: old range and batch range."""
        first = ops.equal(self.batches_seen_.value, 0)
        low = ops.where(
            first, batch_min, ops.minimum(self.histogram_min_, batch_min)
        )
        high = ops.where(
            first, batch_max, ops.maximum(self.histogram_max_, batch_max)
        )
        return low, ops.maximum(high, low + MIN_RANGE_WIDTH)

    def batch_histogram(self, values, low, high):
        """The counts of one batch's `values` (flat, finite: a batch with
        NaN or Inf is skipped) in the bins of `[low, high]`."""
        return ops.segment_sum(
            ops.ones_like(values, dtype="float64"),
            self._bin_index(values, low, high),
            num_segments=self.num_bins,
        )

    def next_histogram(self, batch_histogram, batch_min, batch_max):
        """Re-bins the kept counts into the new range and adds the batch."""
        low, high = self.histogram_edges(batch_min, batch_max)
        first = ops.equal(self.batches_seen_.value, 0)
        old_width = self.histogram_max_ - self.histogram_min_
        centers = self.histogram_min_ + (
            ops.arange(self.num_bins, dtype="float32") + 0.5
        ) * (old_width / self.num_bins)
        held = self.histogram_.value
        momentum = self.momentum.value
        kept = ops.where(
            ops.equal(momentum, 0.0),
            held,
            held * ops.cast(momentum, "float64"),
        )
        rebinned = ops.segment_sum(
            kept,
            self._bin_index(centers, low, high),
            num_segments=self.num_bins,
        )
        counts = ops.where(first, ops.zeros_like(rebinned), rebinned)
        return [
            (self.histogram_, counts + batch_histogram),
            (self.histogram_min_, low),
            (self.histogram_max_, high),
        ]

    def _bin_index(self, values, low, high):
        scaled = (values - low) / (high - low) * self.num_bins
        index = ops.cast(ops.floor(scaled), "int32")
        return ops.clip(index, 0, self.num_bins - 1)

    def own_variables(self):
        """The Keras variables this observer keeps besides its scalars."""
        names = ("histogram_", "histogram_min_", "histogram_max_")
        names = names if self.histogram_ is not None else ()
        if self.sample_ is not None:
            names += ("sample_", "samples_kept_")
        return [getattr(self, name) for name in names]

    def state_values(self):
        """The whole state as numpy values, scalars first, in the order of
        the variables of a saved observer."""
        if self.replay is not None:
            self.replay.flush()
        row = self.state_row()
        scalars = [np.asarray(row[f.name], f.dtype()) for f in FIELDS]
        return scalars + [np.asarray(read(v)) for v in self.own_variables()]

    def restore_state_values(self, values):
        """Sets the state from `state_values()`, recording mask too."""
        values = list(values)
        expected = len(NAMES) + len(self.own_variables())
        if len(values) != expected:
            raise ValueError(
                f"Observer '{self.name}' (point '{self.point}') has "
                f"{expected} state values; the saved state has "
                f"{len(values)}. Either the file was saved by an observer "
                "with another estimator or replay sample size (observe the "
                "model again with the same arguments before loading), or "
                "the file is damaged or was edited (save it again)."
            )
        for name, value in zip(NAMES, values):
            getattr(self, name).assign(np.asarray(value).reshape(()))
        for variable, value in zip(self.own_variables(), values[len(NAMES) :]):
            variable.assign(np.asarray(value))
        if self.replay is not None:
            self.replay.reload()
        self.traced_mask = int(read(self.record_mask))

    def save_own_variables(self, store):
        """Saves the state as scalar variables, whoever holds them, so that
        `.keras` files keep one layout (decision D44)."""
        for index, value in enumerate(self.state_values()):
            store[str(index)] = value

    def load_own_variables(self, store):
        """Restores the state saved in a `.keras` file, recording mask too,
        once it is checked (`check_saved_state`): a damaged or tampered
        file is refused, naming the observer and the field."""
        keys = sorted(store.keys(), key=int)
        if not keys and getattr(self, "_refused", None) is not None:
            # Keras tries a layer it failed to load again at its other
            # paths, with nothing stored there, and reports the last
            # error: keep reporting what was wrong with the file.
            raise self._refused
        values = [np.asarray(store[k]) for k in keys]
        try:
            self.check_saved_state(values)
            self.restore_state_values(values)
        except ValueError as error:
            self._refused = error
            raise

    def check_saved_state(self, values):
        """Raises ValueError unless `values` (as `state_values()` gives
        them) hold a state this observer could have recorded: every value
        of its variable's shape and kind, finite, the counts not negative,
        the range ordered and within `MAX_MAGNITUDE`."""
        expected = [
            *[np.zeros((), f.dtype()) for f in FIELDS],
            *[np.asarray(read(v)) for v in self.own_variables()],
        ]
        if len(values) != len(expected):
            return  # restore_state_values says what differs
        names = [*NAMES, *[v.name for v in self.own_variables()]]
        for name, value, like in zip(names, values, expected):
            if value.shape != like.shape or value.dtype.kind != like.dtype.kind:
                self._refuse(
                    f"'{name}' is {value.dtype} {value.shape}, where "
                    f"{like.dtype} {like.shape} was saved"
                )
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                self._refuse(f"'{name}' holds NaN or infinite values")
            if value.dtype.kind in "iu" and np.any(value < 0):
                self._refuse(f"'{name}' holds a negative count")
        # Checked whether or not a batch was seen: an observer that saw
        # none holds [0, 0], so no state it saves is reversed or huge.
        state = dict(zip(NAMES, values))
        low, high = float(state["min_"]), float(state["max_"])
        if not low <= high:
            self._refuse(f"its range [{low:g}, {high:g}] is reversed")
        if max(abs(low), abs(high)) > MAX_MAGNITUDE:
            self._refuse(
                f"its range [{low:g}, {high:g}] is beyond "
                f"{MAX_MAGNITUDE:g}, which no activation reaches"
            )

    def _refuse(self, what):
        raise ValueError(
            f"Observer '{self.name}' (point '{self.point}') cannot load the "
            f"saved state: {what}. The file is damaged or was edited; "
            "save the model again, or observe the float model and "
            "calibrate it."
        )

    def set_record_mask(self, mask):
        """Sets when this observer records, at run time and in new traces."""
        self.record_mask.assign(mask)
        self.traced_mask = int(mask)

    def reset(self):
        """Forgets everything recorded; keeps `record_mask` and `momentum`."""
        for name in ("min_", "max_", "batches_seen_", "nonfinite_batches_"):
            getattr(self, name).assign(0)
        if self.histogram_ is not None:
            self.histogram_.assign(np.zeros(self.num_bins))
            self.histogram_min_.assign(0.0)
            self.histogram_max_.assign(0.0)
        for sample in [self.replay, *self.followers]:
            if sample is not None:
                sample.clear()

    @property
    def calibrated(self):
        """True once a range is known (fixed, or seen in some batch)."""
        return self.fixed_range is not None or read(self.batches_seen_) > 0

    def range(self):
        """The range to quantize with, as Python floats `(min, max)`.

        The range always contains 0, as TFLite's zero point must be exactly
        representable, and is never narrower than `MIN_RANGE_WIDTH` (see
        `widen_range`).

        Raises:
            RuntimeError: if nothing was recorded yet (see `calibrated`).
        """
        if self.fixed_range is not None:
            return self.fixed_range
        if not self.calibrated:
            raise RuntimeError(f"Observer '{self.point}' has seen no values.")
        if self.histogram_ is not None:
            low, high = ESTIMATORS[self.estimator].from_histogram(
                read(self.histogram_),
                read(self.histogram_min_),
                read(self.histogram_max_),
                self,
            )
        else:
            low, high = read(self.min_), read(self.max_)
        return widen_range(low, high)

    def get_config(self):
        config = super().get_config()
        config.update(
            estimator=self.estimator,
            point=self.point,
            fixed_range=self.fixed_range,
            percentile=self.percentile,
            num_bins=self.num_bins,
            quantize=self.quantize,
            sample_shape=self.sample_shape,
            sample_size=self.sample_size,
            banked=self.banked,
        )
        return config

    def replay_sample(self):
        """The samples kept so far, as a numpy array (maybe empty)."""
        return None if self.replay is None else self.replay.values()


def _phase_bit(training):
    return RECORD_TRAINING if training else RECORD_INFERENCE
