"""The request and response of ``POST /explain``: the flights of ``/predict``, fewer of them, and why.

The computation is ``ml.explain`` (integrated gradients); this module only bounds and shapes it.
"""

from __future__ import annotations

import threading
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from infra import settings
from serving.schema import Flight

MAX_EXPLAIN_FLIGHTS = settings.explain().max_flights

ExplainFlights = Annotated[list[Flight], Field(min_length=1, max_length=MAX_EXPLAIN_FLIGHTS)]
"""1 to ``EXPLAIN_MAX_FLIGHTS`` flights (more is a 400): each costs tens of forward and backward passes."""


class ExplainRequest(BaseModel):
    """The body of ``POST /explain``."""

    model_config = ConfigDict(extra="forbid")

    flights: ExplainFlights
    top_k: int = Field(default_factory=lambda: settings.explain().top_k, ge=1, le=64,
                       description="How many contributing features to return per flight.")


class FeatureContribution(BaseModel):
    feature: str = Field(description="A feature of the request (one-hot/embedding and missing flag summed into it).")
    attribution: float = Field(description="Signed, in log-odds of a 15+ minute delay: positive pushes towards late.")


class FlightExplanation(BaseModel):
    delay_probability: float
    baseline_probability: float = Field(description="The model's probability for a typical flight (training means).")
    contributions: list[FeatureContribution] = Field(description="Top features by absolute attribution, largest first.")
    completeness_gap: float = Field(description="|sum of all attributions − (logit − baseline logit)|, in log-odds.")
    model_version: str


class ExplainSlots:
    """At most ``limit`` explanations computed at once in this worker; a request beyond that is refused (503)."""

    def __init__(self, limit: int):
        self._slots = threading.BoundedSemaphore(limit)

    def try_acquire(self) -> bool:
        return self._slots.acquire(blocking=False)

    def release(self) -> None:
        self._slots.release()


def to_response(explanations, model_version: str) -> list[FlightExplanation]:
    """``ml.explain.Explanation`` objects as the response's models."""
    return [
        FlightExplanation(
            delay_probability=e.delay_probability,
            baseline_probability=e.baseline_probability,
            contributions=[FeatureContribution(feature=c.feature, attribution=c.attribution) for c in e.contributions],
            completeness_gap=e.completeness_gap,
            model_version=model_version,
        )
        for e in explanations
    ]
