"""The histogram estimators `mse`, `entropy` and `auto`, against NumPy."""

import keras
import numpy as np
import pytest

from keras_quant.observation import ranges
from keras_quant.observation.observers import Observer
from keras_quant.observation.observers import read


def rng():
    return np.random.default_rng(0)


def long_tailed(size=50_000):
    """Student's t with 2 degrees of freedom: rare, far outliers."""
    return rng().standard_t(2, size).astype("float32")


def quantization_mse(values, low, high):
    """Squared error of rounding `values` to the int8 grid of a range."""
    step = (high - low) / 255.0
    levels = np.clip(np.round((values - low) / step), 0, 255)
    return float(np.mean((values - (low + levels * step)) ** 2))


def histogram(values, bins=2048):
    counts, edges = np.histogram(values, bins)
    return counts, float(edges[0]), float(edges[-1])


def with_outliers(size=50_000):
    """Normal values and two far outliers."""
    return np.concatenate([rng().normal(size=size), [400.0, -300.0]])


@pytest.mark.parametrize("make_values", [long_tailed, with_outliers])
def test_mse_range_is_the_best_shrink_on_the_raw_values(make_values):
    values = make_values()
    found = ranges.mse_range(*histogram(values))
    low, high = min(values.min(), 0), max(values.max(), 0)
    brute_force = min(
        quantization_mse(values, low * f, high * f)
        for f in ranges.SHRINK_FACTORS
    )
    assert quantization_mse(values, *found) <= 1.05 * brute_force
    assert quantization_mse(values, *found) <= quantization_mse(
        values, low, high
    )


def test_mse_clips_rare_far_outliers():
    # Two outliers in a million: clipping them costs less than the grid.
    values = with_outliers(1_000_000)
    found = ranges.mse_range(*histogram(values))
    minmax = quantization_mse(values, values.min(), values.max())
    assert quantization_mse(values, *found) < 0.5 * minmax


def test_mse_keeps_a_well_filled_range():
    values = rng().uniform(-1.0, 3.0, 50_000)
    low, high = ranges.mse_range(*histogram(values))
    assert low == pytest.approx(values.min(), abs=0.01)
    assert high == pytest.approx(values.max(), abs=0.01)


def test_entropy_clips_long_tails_and_keeps_zero_inside():
    values = long_tailed()
    low, high = ranges.entropy_range(*histogram(values))
    assert values.min() / 4 < low < 0 < high < values.max() / 4


def test_entropy_of_one_sided_values_starts_at_zero():
    values = np.abs(long_tailed())
    low, high = ranges.entropy_range(*histogram(values))
    assert low == 0.0
    assert high < values.max() / 2


def test_auto_keeps_min_max_unless_tails_are_long():
    short = rng().normal(size=50_000)
    assert ranges.auto_range(*histogram(short)) == pytest.approx(
        (short.min(), short.max())
    )
    counts, low, high = histogram(with_outliers(1_000_000))
    assert ranges.auto_range(counts, low, high) == ranges.mse_range(
        counts, low, high
    )
    assert ranges.auto_range(counts, low, high)[1] < 200.0


@pytest.mark.parametrize(
    "estimator, estimate",
    [
        ("mse", ranges.mse_range),
        ("entropy", ranges.entropy_range),
        ("auto", ranges.auto_range),
    ],
)
def test_observer_reads_its_estimator_off_its_histogram(estimator, estimate):
    values = long_tailed(8_000).reshape(40, 200)
    observer = Observer(estimator)
    for batch in np.split(values, 4):
        observer(keras.ops.convert_to_tensor(batch))
    expected = ranges.widen_range(
        *estimate(
            read(observer.histogram_),
            read(observer.histogram_min_),
            read(observer.histogram_max_),
        )
    )
    assert observer.range() == expected
    assert read(observer.histogram_).sum() == values.size
    assert read(observer.histogram_min_) == values.min()
    assert read(observer.histogram_max_) == values.max()


def test_unknown_estimator_lists_the_known_ones():
    with pytest.raises(ValueError, match="'entropy'.*Received: estimator='kl'"):
        Observer("kl")
