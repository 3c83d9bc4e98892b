"""serving.parity: the comparison behind the `bento` asset's blocking check, without a server."""

import numpy as np
import pandas as pd

from serving.parity import ParityReport, compare, parity_sample


def test_equal_scores_pass_and_the_largest_difference_is_reported():
    expected = np.array([0.1, 0.5, 0.9])
    assert compare(expected.copy(), expected, 1e-6) == ParityReport(rows=3, max_abs_diff=0.0, tolerance=1e-6)
    report = compare(expected + np.array([0.0, 2e-6, -3e-6]), expected, 1e-6)
    assert not report.passed and np.isclose(report.max_abs_diff, 3e-6)


def test_an_empty_sample_proves_nothing():
    report = compare(np.array([]), np.array([]), 1e-6)
    assert report == ParityReport(rows=0, max_abs_diff=0.0, tolerance=1e-6) and not report.passed


def test_the_sample_is_drawn_from_test_days_only_and_reproducibly():
    window = pd.DataFrame({"x": range(100), "split": ["train"] * 60 + ["test"] * 40})
    sample = parity_sample(window, 10)
    assert len(sample) == 10 and set(sample["split"]) == {"test"}
    assert sample.index.equals(parity_sample(window, 10).index)
    assert len(parity_sample(window, 500)) == 40, "never more rows than the test days hold"


def test_a_window_without_a_split_is_sampled_whole():
    assert len(parity_sample(pd.DataFrame({"x": range(7)}), 500)) == 7
