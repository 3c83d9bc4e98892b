"""Whether a trained candidate may become champion: a pure decision over metrics and behavioural results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ml.gates import BASELINE_TOLERANCE, CHAMPION_TOLERANCE

VERSION = "3"
"""Bump when the promotion decision changes (tests/test_module_versions.py)."""

PROMOTE, KEEP_CHAMPION, REJECT = "promote", "keep_champion", "reject"
"""A verdict's outcome: promote the candidate; keep the champion (a well-behaved candidate that is not
better than the champion, or not even the baseline while a champion serves: a completed evaluation, not a
fault); reject (misbehaving, or below the baseline with no champion to fall back on: something is wrong)."""


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
    champion_roc_auc: float | None,
    behaviour: Sequence[Behaviour] = (),
    champion_version: str | None = None,
    baseline_tolerance: float = BASELINE_TOLERANCE,
    champion_tolerance: float = CHAMPION_TOLERANCE,
) -> Verdict:
    """Judge a candidate's test ROC AUC against the baseline's and the champion's on the same test set.

    ``champion_roc_auc`` None: there is no champion, so that gate passes. Every behavioural test must pass.
    """
    beats_baseline = roc_auc >= baseline_roc_auc - baseline_tolerance
    beats_champion = champion_roc_auc is None or roc_auc >= champion_roc_auc - champion_tolerance
    behaves = all(b.passed for b in behaviour)
    reasons = (
        *([] if beats_baseline else [f"ROC AUC {roc_auc:.4f} < baseline {baseline_roc_auc:.4f} - {baseline_tolerance}"]),
        *([] if beats_champion else [f"ROC AUC {roc_auc:.4f} < champion v{champion_version} {champion_roc_auc:.4f}"]),
        *[f"{b.name}: {b.detail}" for b in behaviour if not b.passed],
    )
    return Verdict(beats_baseline, beats_champion, behaves, reasons, has_champion=champion_roc_auc is not None)
