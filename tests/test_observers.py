import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_quant.observation import observers
from keras_quant.observation import ranges
from keras_quant.observation.observers import Observer
from keras_quant.observation.observers import read

RNG = np.random.default_rng(0)


def feed(observer, batches, training=False):
    for batch in batches:
        observer(keras.ops.convert_to_tensor(batch), training=training)
    return observer


def batches_of(*shifts, size=(16, 5)):
    return [RNG.normal(shift, 1.0, size).astype("float32") for shift in shifts]


def test_minmax_matches_numpy_running_min_and_max():
    batches = batches_of(0.0, 3.0, -2.0)
    observer = feed(Observer("minmax"), batches)
    everything = np.concatenate(batches)
    assert read(observer.min_) == everything.min()
    assert read(observer.max_) == everything.max()
    assert read(observer.batches_seen_) == 3


def test_ema_matches_numpy_moving_average():
    batches = batches_of(0.0, 3.0, -2.0, 1.0)
    observer = feed(Observer("ema"), batches)
    momentum = ranges.ESTIMATORS["ema"].momentum
    low, high = batches[0].min(), batches[0].max()
    for batch in batches[1:]:
        low = momentum * low + (1 - momentum) * batch.min()
        high = momentum * high + (1 - momentum) * batch.max()
    np.testing.assert_allclose(read(observer.min_), low, rtol=1e-6)
    np.testing.assert_allclose(read(observer.max_), high, rtol=1e-6)


def order_statistic_bounds(values, percentile):
    """Sorted values around the upper and lower cuts of `percentile`."""
    ordered = np.sort(values, axis=None)
    tail = len(ordered) * (100.0 - percentile) / 200.0
    last = len(ordered) - 1

    def around(rank):
        return (
            ordered[max(int(np.floor(rank)) - 1, 0)],
            ordered[min(int(np.ceil(rank)), last)],
        )

    return around(tail), around(len(ordered) - tail)


def test_percentile_single_batch_matches_numpy_within_a_bin():
    values = RNG.standard_t(2, size=(64, 64)).astype("float32")
    observer = feed(Observer("percentile", percentile=99.0), [values])
    low, high = observer.range()
    (low_a, low_b), (high_a, high_b) = order_statistic_bounds(values, 99.0)
    bin_width = (values.max() - values.min()) / observer.num_bins
    assert low_a - bin_width <= low <= low_b + bin_width
    assert high_a - bin_width <= high <= high_b + bin_width


def test_percentile_over_growing_batches_stays_close_to_numpy():
    batches = [
        RNG.standard_t(2, size=(32, 64)).astype("float32") * s
        for s in (1, 2, 4)
    ]
    observer = feed(Observer("percentile", percentile=99.0), batches)
    everything = np.concatenate(batches)
    low, high = observer.range()
    (low_a, low_b), (high_a, high_b) = order_statistic_bounds(everything, 99.0)
    # Each range growth re-bins the old counts at their bin centres: the
    # error stays within a bin of each of the three histograms used.
    slack = 3 * (everything.max() - everything.min()) / observer.num_bins
    assert low_a - slack <= low <= low_b + slack
    assert high_a - slack <= high <= high_b + slack
    assert high < everything.max() / 2


@pytest.mark.parametrize("estimator", ["minmax", "ema", "percentile"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_batches_with_nan_or_inf_are_skipped_and_counted(estimator, bad):
    finite = np.array([[1.0, -2.0], [0.5, 3.0]], "float32")
    poisoned = np.array([[40.0, bad], [-50.0, 0.0]], "float32")
    observer = feed(Observer(estimator), [finite, poisoned, finite])
    clean = feed(Observer(estimator), [finite, finite])
    assert read(observer.nonfinite_batches_) == 1
    assert read(observer.batches_seen_) == 2
    assert observer.range() == clean.range()
    assert read(clean.nonfinite_batches_) == 0


def test_all_nonfinite_batch_records_nothing():
    observer = feed(Observer(), [np.full((2, 2), np.nan, "float32")])
    assert not observer.calibrated
    assert read(observer.nonfinite_batches_) == 1


def test_record_mask_selects_training_or_inference_calls():
    observer = Observer()
    feed(observer, batches_of(0.0), training=True)
    assert not observer.calibrated  # default: inference calls only
    observer.set_record_mask(observers.RECORD_TRAINING)
    feed(observer, batches_of(0.0), training=True)
    feed(observer, batches_of(50.0), training=False)
    assert read(observer.batches_seen_) == 1
    assert read(observer.max_) < 50.0


def test_reset_forgets_ranges():
    observer = feed(Observer("percentile"), batches_of(5.0))
    observer.reset()
    assert not observer.calibrated
    feed(observer, [np.array([[0.25, 0.5]], "float32")])
    np.testing.assert_allclose(observer.range(), (0.0, 0.5), atol=0.5 / 2048)


def test_fixed_range_needs_no_data():
    observer = Observer(fixed_range=(0.0, 0.5))
    assert observer.calibrated and observer.range() == (0.0, 0.5)


def test_range_before_any_data_raises():
    with pytest.raises(RuntimeError, match="seen no values"):
        Observer(point="conv").range()


@pytest.mark.parametrize("estimator", ["histogram", "", None])
def test_unknown_estimator_is_rejected(estimator):
    with pytest.raises(ValueError, match="Received: estimator"):
        Observer(estimator)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(-1e6, 1e6, allow_nan=False),
)
def test_widened_range_contains_zero_and_has_width(a, b):
    low, high = ranges.widen_range(min(a, b), max(a, b))
    assert low <= 0.0 <= high
    assert high - low >= ranges.MIN_RANGE_WIDTH
    assert low <= min(a, b, 0.0) and high >= max(a, b, 0.0)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(0, 1e3), min_size=4, max_size=64),
    st.floats(50.5, 100.0),
)
def test_histogram_range_is_monotone_and_inside(counts, percentile):
    counts = np.asarray(counts)
    low, high = ranges.histogram_range(counts, -1.0, 3.0, percentile)
    assert -1.0 <= low <= high <= 3.0
    wider = ranges.histogram_range(
        counts, -1.0, 3.0, min(100.0, percentile + 0.4)
    )
    assert wider[0] <= low + 1e-9 and wider[1] >= high - 1e-9


def test_observer_round_trips_through_config_and_weights():
    observer = feed(
        Observer("percentile", point="p", percentile=99.5), batches_of(1.0)
    )
    clone = Observer.from_config(observer.get_config())
    clone.set_weights(observer.get_weights())
    assert clone.point == "p" and clone.percentile == 99.5
    assert clone.range() == observer.range()
