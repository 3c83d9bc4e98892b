"""Whether a trained candidate may become champion: a pure decision over metrics and behavioural results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ml.evidence import Interval
from ml.gates import BASELINE_TOLERANCE, PROMOTION_MARGIN

VERSION = "4"
"""Bump when the promotion decision changes (tests/test_module_versions.py)."""

PROMOTE, KEEP_CHAMPION, REJECT = "promote", "keep_champion", "reject"
"""A verdict's outcome: promote the candidate; keep the champion (a well-behaved candidate that is not
better than the champion beyond the noise, or not even the baseline while a champion serves: a completed
evaluation, not a fault); reject (misbehaving, or below the baseline with no champion to fall back on:
something is wrong)."""


class Behaviour(Protocol):
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    """The decision and why: each gate's outcome, and one reason per gate that failed."""

    beats_baseline: bool
    beats_champion: bool
    behaves: bool
    reasons: tuple[str, ...]
    has_champion: bool = False
    """A champion serves: a candidate that loses on quality leaves it in place."""

    @property
    def passed(self) -> bool:
        return self.beats_baseline and self.beats_champion and self.behaves

    @property
    def outcome(self) -> str:
        if self.passed:
            return PROMOTE
        if not self.behaves:
            return REJECT
        return KEEP_CHAMPION if self.beats_baseline or self.has_champion else REJECT


def judge(
    roc_auc: float,
    baseline_roc_auc: float,
    champion_gain: Interval | None,
    behaviour: Sequence[Behaviour] = (),
    champion_version: str | None = None,
    baseline_tolerance: float = BASELINE_TOLERANCE,
    promotion_margin: float = PROMOTION_MARGIN,
) -> Verdict:
    """Judge a candidate's test ROC AUC against the baseline's, and its gain over the champion on the same flights.

    ``champion_gain`` is the paired interval of AUC(candidate) − AUC(champion) on the candidate's test
    flights (``ml.evidence.paired_auc_difference``); None: there is no champion, so that gate passes. The
    candidate beats the champion only when the whole interval lies above ``promotion_margin``: a gain
    inside the noise of its test days keeps the champion. Every behavioural test must pass.
    """
    beats_baseline = roc_auc >= baseline_roc_auc - baseline_tolerance
    beats_champion = champion_gain is None or champion_gain.low > promotion_margin
    behaves = all(b.passed for b in behaviour)
    reasons = (
        *([] if beats_baseline else [f"ROC AUC {roc_auc:.4f} < baseline {baseline_roc_auc:.4f} - {baseline_tolerance}"]),
        *([] if beats_champion else [f"ROC AUC gain over champion v{champion_version} {champion_gain.describe()} "
                                     f"is not above {promotion_margin}"]),
        *[f"{b.name}: {b.detail}" for b in behaviour if not b.passed],
    )
    return Verdict(beats_baseline, beats_champion, behaves, reasons, has_champion=champion_gain is not None)
