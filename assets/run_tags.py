"""The run tags assets write and sensors read: formatted and parsed here only.

A training run's outcome (`champion_model` tags it) is the retraining sensor's history; a retraining
request's reasons (the sensor tags the run it requests) are what an operator reads in the UI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

OUTCOME_TAG = "training/outcome"
WINDOW_LAST_DAY_TAG = "training/window_last_day"
_RETRAIN = "retrain/"
_MAX_TAG_CHARS = 250


class TrainingOutcome(StrEnum):
    PROMOTED = "promoted"
    NOT_PROMOTED = "not_promoted"


@dataclass(frozen=True)
class TrainingRunTags:
    """What `champion_model` records on its run: the outcome and the training window's last day."""

    outcome: TrainingOutcome
    window_last_day: str | None = None

    def format(self) -> dict[str, str]:
        tags = {OUTCOME_TAG: self.outcome.value}
        if self.window_last_day:
            tags[WINDOW_LAST_DAY_TAG] = self.window_last_day
        return tags

    @classmethod
    def parse(cls, tags: Mapping[str, str]) -> TrainingRunTags | None:
        """The outcome a run's tags record; None for a run without one (failed before, or still running)."""
        try:
            outcome = TrainingOutcome(tags[OUTCOME_TAG])
        except (KeyError, ValueError):
            return None
        return cls(outcome, tags.get(WINDOW_LAST_DAY_TAG))


@dataclass(frozen=True)
class RetrainRequestTags:
    """Why the retraining sensor asked for a training run."""

    trigger: str
    """``<asset>:<check>`` whose failed evaluation started it."""
    trigger_run: str
    failed_evaluations: int
    policy: str
    """The policy's reason, already redacted by the caller; cut to fit a tag."""
    new_labelled_days: int
    required_new_days: int
    rejections_before: int

    def format(self) -> dict[str, str]:
        return {
            f"{_RETRAIN}trigger": self.trigger,
            f"{_RETRAIN}trigger_run": self.trigger_run,
            f"{_RETRAIN}failed_evaluations": str(self.failed_evaluations),
            f"{_RETRAIN}policy": self.policy[:_MAX_TAG_CHARS],
            f"{_RETRAIN}new_labelled_days": str(self.new_labelled_days),
            f"{_RETRAIN}required_new_days": str(self.required_new_days),
            f"{_RETRAIN}rejections_before": str(self.rejections_before),
        }
