"""The thresholds of every quality gate, defined once: imported by `ml/`, the assets, the bench and the docs' figures.

Plain numbers (no pandas here): the code location imports this at load time for its config defaults.
"""

VERSION = "2"
"""Bump when a gate's threshold changes (tests/test_module_versions.py)."""


DRIFT_COLUMNS = ("temp", "dewp")
DRIFT_COLUMN_THRESHOLD = 2.75
"""What the daily drift check gates on (bench/drift_calibration.py, docs/monitoring.md).

One day of traffic against a 10k-row sample of a 3-month window: at Evidently's 0.1 nearly every
weather and day-level column "drifts" on ordinary days (a day has one weather pattern and constant
daily counts), so a share over all columns cannot tell January from July. The normed Wasserstein
distance of temperature and dew point can: 2.75 reference standard deviations separated every
in-window day of 2013 (max 2.51) from every June–August day (min 2.92) for a Jan–Mar reference.
"""
DRIFT_SHARE_THRESHOLD = 0.5
"""The drift check fails on a day whose share of drifted gate columns is at or above this (either column)."""
DRIFT_MIN_ROWS = 200
"""Days with fewer current rows are reported but never fail the drift check (too few to tell)."""

PERFORMANCE_WINDOW_DAYS = 14
"""The performance check pools the labelled flights of the last this many days the serving model scored."""
PERFORMANCE_CONFIDENCE = 0.90
"""Level of the realised ROC AUC's DeLong interval over that window."""
PERFORMANCE_AUC_TOLERANCE = 0.055
"""The check fails when the interval's upper bound is more than this below the model's test ROC AUC.

Calibrated on 2013 (bench/policy_calibration.py, docs/figures/policy_calibration.md): monthly models
scoring the rest of the year; 0.055 is the smallest step of 0.005 over every gap (test AUC − upper bound)
of a model in its first 28 days (largest 0.053), so a fresh model never fires, while 35 % of windows of
models 91+ days old do. Shorter windows are too noisy: with 7 days the same rule needs 0.11 and then
hardly ever fires. The old rule (one day's AUC < test AUC − 0.05) fired on 41–69 % of days at every age."""
PERFORMANCE_MIN_LABELLED = 1000
"""Windows with fewer labelled flights are reported but never fail the performance check."""

BASELINE_TOLERANCE = 0.01
"""A candidate's test ROC AUC may be at most this far below the baseline's."""
PROMOTION_CONFIDENCE = 0.99
"""Level of the paired DeLong interval of the candidate's ROC AUC gain over the champion, on the same test flights."""
PROMOTION_MARGIN = 0.005
"""The gain's interval must lie above this: the candidate is promoted only when it is better beyond the noise.

DeLong's interval covers which test flights were drawn, not how training varies: on 2013 two seeds of the
same window differ by up to 0.005 (|z| 3.8), windows a day apart by |z| 7. With a margin of 0 even the
99 % interval promoted 9 of 22 such near-copies; with 0.005 it promotes none of them and all 8 pairs of a
new-regime model over one from January–April (bench/policy_calibration.py)."""
