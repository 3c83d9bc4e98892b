"""When a failed monitoring check should start a retraining: "drift seen" is not "retraining can help".

A pure decision over what the loop knows (docs/retraining-policy.md argues the choices):

- **Realised performance first.** A failed performance check is the model doing worse on labelled
  days: it retrains once any labelled day has arrived since the last training window ended.
- **Drift alone waits for data.** Drift against the champion's training window says the inputs moved
  (in summer, every day: temperature and dew point are seasonal), not that a new model would do
  better. Only labelled days from the new regime can teach one, so a drift-only trigger retrains once
  ``drift_min_new_days`` labelled days have arrived since the last window's end, not on every day.
- **Rejections back off.** A candidate the champion gate did not promote is a completed evaluation:
  the data was not yet enough. Each consecutive one doubles the new days required (up to
  ``max_new_days``), and the streak raises one warning, not one alert a day.
- **Cooldown** in wall-clock time between two trainings still holds, whatever the trigger.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

VERSION = "2"
"""Bump when the retraining decision changes."""

PERFORMANCE, DRIFT = "performance", "drift"
"""What triggered the decision: a failed performance check (realised AUC), or drift alone."""


@dataclass(frozen=True)
class PolicySettings:
    cooldown_s: float = 6 * 3600
    """Least seconds between the start of two trainings, whatever their outcome."""
    drift_min_new_days: int = 7
    """Labelled days since the last window's end before drift alone retrains."""
    performance_min_new_days: int = 1
    """Labelled days since the last window's end before a failed performance check retrains."""
    max_new_days: int = 56
    """Cap of the backoff: never wait for more new days than this."""
    warn_after_rejections: int = 2
    """Consecutive candidates not promoted before the one backoff warning."""


@dataclass(frozen=True)
class LoopState:
    """What the loop knows at a sensor tick; times in seconds since the epoch, days as ISO dates."""

    trigger: str
    now_s: float
    last_training_start_s: float | None = None
    """Start of the newest training run, whatever its outcome (None: never trained)."""
    window_last_day: str | None = None
    """Last day of the newest training window built (None: no window yet)."""
    labelled_days: tuple[str, ...] = ()
    """Days whose labelled data is in the lake (feature days: their flights have arrived)."""
    rejections: int = 0
    """Candidates not promoted since the last promotion, newest first without a promotion between."""


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reason: str
    new_days: int
    required_new_days: int


def new_labelled_days(labelled_days: Iterable[str], window_last_day: str | None) -> int:
    """Labelled days after the window's last day (all of them when there was no window)."""
    return sum(1 for day in set(labelled_days) if window_last_day is None or day > window_last_day)


def required_new_days(trigger: str, rejections: int, settings: PolicySettings) -> int:
    """New labelled days the trigger needs, doubled for each consecutive rejection, capped.

    A setting of 0 asks for no wait: the trigger retrains at once until a candidate is rejected, then
    the backoff counts from one day."""
    if trigger not in (PERFORMANCE, DRIFT):
        raise ValueError(f"unknown retraining trigger {trigger!r}; expected {PERFORMANCE!r} or {DRIFT!r}")
    base = settings.performance_min_new_days if trigger == PERFORMANCE else settings.drift_min_new_days
    if base <= 0:
        return 0 if rejections <= 0 else min(2 ** (rejections - 1), max(settings.max_new_days, 1))
    return min(max(base, 1) * 2 ** max(rejections, 0), max(settings.max_new_days, base))


def decide(state: LoopState, settings: PolicySettings) -> Decision:
    """Retrain now or not, and why (a sentence fit for a sensor's skip reason or a run tag)."""
    new = new_labelled_days(state.labelled_days, state.window_last_day)
    required = required_new_days(state.trigger, state.rejections, settings)
    if state.last_training_start_s is not None and state.now_s - state.last_training_start_s < settings.cooldown_s:
        waited = state.now_s - state.last_training_start_s
        return Decision(False, f"{state.trigger}: within the {settings.cooldown_s:.0f} s cooldown "
                               f"({waited:.0f} s since the last training started)", new, required)
    since = f"since the last window ended {state.window_last_day}" if state.window_last_day else "(no window yet)"
    backoff = f", backed off after {state.rejections} candidate(s) not promoted" if state.rejections else ""
    if state.window_last_day is not None and new < required:
        what = ("realised performance fell, but a new model needs new labels" if state.trigger == PERFORMANCE
                else "drift seen, retraining cannot help yet")
        return Decision(False, f"{state.trigger}: {what}: {new} of {required} labelled day(s) {since}{backoff}",
                        new, required)
    return Decision(True, f"{state.trigger}: {new} labelled day(s) {since} (needs {required}{backoff})", new, required)


def backoff_warning(rejections: int, champion: str | None, settings: PolicySettings) -> str | None:
    """The warning a rejection streak raises once it reaches ``warn_after_rejections`` (None below)."""
    if rejections < max(settings.warn_after_rejections, 1):
        return None
    return (
        f"retraining backed off: the last {rejections} candidate(s) were not promoted over champion "
        f"v{champion or '?'} (it keeps serving). Drift alone now retrains after "
        f"{required_new_days(DRIFT, rejections, settings)} new labelled day(s), a failed performance check after "
        f"{required_new_days(PERFORMANCE, rejections, settings)}. If drift persists, look at the features and the "
        "training window; this warning is not repeated until a candidate is promoted."
    )
