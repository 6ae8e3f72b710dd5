"""What every mean metric inherits: an interval valid at any n on its declared range, and no worst value where
its range has no end on the bad side."""

from __future__ import annotations

import numpy as np
import pytest

from harness.metrics import MeanOf
from harness.metrics.base import MeanMetric


def _metric(value_range: tuple[float, float], higher_is_better: bool = True) -> MeanMetric:
    return MeanOf(name="m", family="test", fn=lambda data: np.zeros(0), value_range=value_range,
                  higher_is_better=higher_is_better)


def _stats(values: list[float]) -> np.ndarray:
    return np.stack([np.array(values, float), np.ones(len(values))], axis=1)


@pytest.mark.parametrize(("value_range", "values", "inside"), [
    ((0, 1), [1.0] * 24, (0.85, 1.0)),       # a rate all right: Clopper-Pearson, not the bootstrap's [1, 1]
    ((1, 5), [1.0] * 30, (1.0, 1.5)),        # a 1-5 scale all at its lowest: on the scale, not read as a 0/1 rate
    ((1, 5), [4.0] * 10, (2.0, 5.0)),        # ten scores all 4: an interval of some width, never [4, 4]
])
def test_a_bounded_mean_has_an_interval_of_its_range_at_any_n(value_range, values, inside):
    low, high = _metric(value_range).interval(_stats(values), 0.95)
    assert value_range[0] <= low < high <= value_range[1]
    assert inside[0] <= low and high <= inside[1] and high - low > 0.05


def test_a_mean_with_an_open_side_keeps_the_bootstrap_and_has_no_worst_there():
    words = _metric((0, float("inf")), higher_is_better=False)  # answer length: longer is worse, no longest
    stats, failed = _stats([2.0] * 20), np.arange(20) >= 18
    assert words.interval(stats, 0.95) is None
    assert words.worst_case(stats, failed) is None  # the timed-out request may be the runaway answer
    # the good side may be open: a higher-is-better score bounded below still has its worst
    floored = _metric((0, float("inf")))
    assert np.array_equal(floored.worst_case(stats, failed)[failed], np.array([[0.0, 1.0], [0.0, 1.0]]))
