"""Range arithmetic shared by observers: pure NumPy, no Keras.

`widen_range` makes a range usable by TFLite (it must contain 0 and may
not be degenerate). The histogram estimators read a range off an observed
histogram (`counts` over equal bins from `low` to `high`):

- `histogram_range`: the central part holding a percentile of the values;
- `mse_range`: the range with the least int8 quantization error, rounding
  inside the range plus clipping outside it;
- `entropy_range`: the range whose int8 grid loses the least information
  (KL divergence, as TensorRT calibrates);
- `auto_range`: `mse_range` where the tails are long (the min/max range
  would waste two bits or more on rare values), the min/max range elsewhere.

`mse_range` and `entropy_range` search ranges shrunk towards 0 by the same
factor at both ends, which keeps the zero point where min/max puts it.
"""

import dataclasses

import numpy as np

# A range narrower than this holds no signal (a dead ReLU's zeros); it is
# reported as `SILENT_RANGE_WIDTH` wide instead. A scale near zero would make
# LiteRT's XNNPACK delegate refuse the model (seen: "failed to create
# XNNPACK runtime"), and zeros quantize exactly with any scale.
MIN_RANGE_WIDTH = 2.0**-20
SILENT_RANGE_WIDTH = 1.0


def widen_range(low, high):
    """Widens `[low, high]` to contain 0; a silent range gets a unit width.

    >>> widen_range(0.5, 2.0)
    (0.0, 2.0)
    >>> widen_range(0.0, 0.0)
    (0.0, 1.0)
    """
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high - low < MIN_RANGE_WIDTH:
        high = low + SILENT_RANGE_WIDTH
    return (low, high)


def histogram_range(counts, low, high, percentile):
    """The central `percentile` percent of a histogram, as `(min, max)`.

    Each tail drops `(100 - percentile) / 2` percent of the mass, with
    linear interpolation inside the bin where the cut falls.

    >>> histogram_range(np.ones(100), 0.0, 100.0, 98.0)
    (1.0, 99.0)
    """
    counts = np.asarray(counts, np.float64)
    total = float(np.sum(counts))
    if total <= 0:
        return (low, high)
    tail = total * (100.0 - percentile) / 200.0
    edges = np.linspace(low, high, len(counts) + 1)
    cumulative = np.cumsum(counts)
    return (
        _cut(cumulative, counts, edges, tail),
        _cut(cumulative, counts, edges, total - tail),
    )


def _cut(cumulative, counts, edges, target):
    """The point where the cumulative count reaches `target`, assuming the
    values of each bin are spread evenly across it."""
    index = min(int(np.searchsorted(cumulative, target)), len(counts) - 1)
    before = cumulative[index] - counts[index]
    fraction = 0.0
    if counts[index] > 0:
        fraction = min(max((target - before) / counts[index], 0.0), 1.0)
    return float(edges[index] + fraction * (edges[index + 1] - edges[index]))


# int8 activations have 256 levels.
LEVELS = 256

# Shrink factors `mse_range` and `entropy_range` try, from 1 (min/max)
# down to 1/64 of the min/max range.
SHRINK_FACTORS = np.geomspace(1.0, 1.0 / 64.0, 97)


def mse_range(counts, low, high, levels=LEVELS):
    """The range with the least expected squared quantization error.

    The error of a value inside the range is the rounding noise of a
    uniform grid, `step**2 / 12`; outside, its distance to the range.

    A hundred million values below 100 and one at 999.5: clipping the
    outlier costs less than the coarser grid would.

    >>> counts = np.zeros(1000); counts[:100] = 1e6; counts[-1] = 1.0
    >>> low, high = mse_range(counts, 0.0, 1000.0)
    >>> 100.0 < high < 200.0
    True
    """
    counts, centers = _bins(counts, low, high)
    low, high = min(low, 0.0), max(high, 0.0)
    lows = low * SHRINK_FACTORS[:, None]
    highs = high * SHRINK_FACTORS[:, None]
    clipped = np.clip(centers, lows, highs)
    inside = (centers >= lows) & (centers <= highs)
    step = (highs - lows) / (levels - 1)
    errors = np.sum(
        counts * ((centers - clipped) ** 2 + inside * step**2 / 12.0), axis=1
    )
    best = int(np.argmin(errors))
    return (float(lows[best, 0]), float(highs[best, 0]))


def entropy_range(counts, low, high, levels=LEVELS):
    """The range whose quantized histogram diverges least from the observed
    one (KL divergence, TensorRT's entropy calibration).

    For each candidate range, values outside it are clipped onto its end
    bins (the reference distribution `P`); `Q` merges the bins inside into
    the int8 levels and spreads each level's mass back evenly over its
    non-empty bins. Ranges of fewer bins than levels are not tried: they
    would round nothing at the histogram's resolution.

    Student's t with two degrees of freedom, a long-tailed distribution:

    >>> values = np.random.default_rng(0).standard_t(2, 100_000)
    >>> counts, edges = np.histogram(values, 2048)
    >>> low, high = entropy_range(counts, edges[0], edges[-1])
    >>> bool(high < edges[-1] / 4 and low > edges[0] / 4)
    True
    """
    counts, centers = _bins(counts, low, high)
    low, high = min(low, 0.0), max(high, 0.0)
    best, best_range = np.inf, (low, high)
    for factor in SHRINK_FACTORS:
        candidate = (low * factor, high * factor)
        inside = np.flatnonzero(
            (centers >= candidate[0]) & (centers <= candidate[1])
        )
        if len(inside) < levels:
            break
        divergence = _clipped_divergence(counts, centers, inside, candidate)
        if divergence < best:
            best, best_range = divergence, candidate
    return (float(best_range[0]), float(best_range[1]))


def _clipped_divergence(counts, centers, inside, candidate):
    """KL(P || Q) of clipping to `candidate` and rounding to its grid.

    `P` is the histogram with the clipped values piled on the end bins;
    `Q` is built from the bins inside alone, so clipping costs divergence.
    """
    first, last = inside[0], inside[-1]
    sliced = counts[first : last + 1]
    reference = sliced.copy()
    reference[0] += counts[:first].sum()
    reference[-1] += counts[last + 1 :].sum()
    step = (candidate[1] - candidate[0]) / (LEVELS - 1)
    level = np.rint((centers[first : last + 1] - candidate[0]) / step)
    level = level.astype(np.int64)
    occupied = sliced > 0
    mass = np.bincount(level, weights=sliced)
    nonempty = np.bincount(level, weights=occupied)
    spread = np.where(occupied, mass[level] / np.maximum(nonempty[level], 1), 0)
    p = reference / reference.sum()
    q = np.maximum(spread / max(spread.sum(), 1e-300), 1e-12)
    kept = p > 0
    return float(np.sum(p[kept] * np.log(p[kept] / q[kept])))


# `auto_range` clips where the min/max range is this many times wider than
# the range holding 99.99 % of the values: two of the eight bits.
LONG_TAIL_RATIO = 4.0


def auto_range(counts, low, high):
    """`mse_range` for long-tailed histograms, `(low, high)` otherwise.

    Clipping trades exact outliers for a finer grid: worth it where
    outliers are rare and far, not where the range is well filled.

    >>> auto_range(np.ones(100), 0.0, 10.0)
    (0.0, 10.0)
    """
    core_low, core_high = histogram_range(counts, low, high, 99.99)
    core = max(core_high - core_low, MIN_RANGE_WIDTH)
    if (high - low) < LONG_TAIL_RATIO * core:
        return (float(low), float(high))
    return mse_range(counts, low, high)


def _bins(counts, low, high):
    counts = np.asarray(counts, np.float64)
    edges = np.linspace(low, high, len(counts) + 1)
    return counts, (edges[:-1] + edges[1:]) / 2.0


@dataclasses.dataclass(frozen=True)
class Estimator:
    """How an observer turns what it saw into a range.

    Attributes:
        momentum: weight of the old state in each update; 0 keeps the
            running min/max, above 0 gives a moving average of batch min/max
            (and an exponentially forgetting histogram).
        from_histogram: `from_histogram(counts, low, high, observer)` reads
            the range off the observer's histogram; None for the min/max
            estimators, which keep no histogram.
    """

    momentum: float
    from_histogram: object = None

    @property
    def histogram(self):
        return self.from_histogram is not None


def _percentile(counts, low, high, observer):
    return histogram_range(counts, low, high, observer.percentile)


def _ignoring_observer(estimate):
    return lambda counts, low, high, observer: estimate(counts, low, high)


ESTIMATORS = {
    "minmax": Estimator(momentum=0.0),
    "ema": Estimator(momentum=0.9),
    "percentile": Estimator(momentum=0.0, from_histogram=_percentile),
    "mse": Estimator(0.0, _ignoring_observer(mse_range)),
    "entropy": Estimator(0.0, _ignoring_observer(entropy_range)),
    "auto": Estimator(0.0, _ignoring_observer(auto_range)),
}


def check_estimator(estimator):
    """Returns `estimator` if it is known, else raises a ValueError."""
    if estimator not in ESTIMATORS:
        raise ValueError(
            "Expected `estimator` to be one of "
            f"{sorted(ESTIMATORS)}. Received: estimator={estimator!r}"
        )
    return estimator
