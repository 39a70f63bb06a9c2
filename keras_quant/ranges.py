"""Range arithmetic shared by observers: pure NumPy, no Keras.

`widen_range` makes a range usable by TFLite (it must contain 0 and may
not be degenerate); `histogram_range` reads the central part of a
histogram, for the `"percentile"` estimator.
"""

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
