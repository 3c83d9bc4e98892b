"""Parity of a served Bento with the verified unit it was built from: the same flights, over HTTP and in process.

The check before a Bento goes out (the ``bento`` asset's ``serves_registry_predictions``): whatever the
Bento packs, serializes or validates on the way must not change a single probability beyond the tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml.features import FEATURE_COLUMNS
from serving.schema import records_from_features

if TYPE_CHECKING:
    from ml.model import ModelUnit

CHUNK_FLIGHTS = 250
"""Flights per ``POST /predict``: well under the service's limit (``serving.schema.MAX_FLIGHTS_PER_REQUEST``)."""


@dataclass(frozen=True)
class ParityReport:
    """How far a served Bento's probabilities are from the unit's on the same flights."""

    rows: int
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        """Some flights compared and none differs by more than the tolerance: an empty sample proves nothing."""
        return self.rows > 0 and self.max_abs_diff <= self.tolerance


def parity_sample(window: pd.DataFrame, rows: int) -> pd.DataFrame:
    """Up to ``rows`` flights of a training window's test days (all its days without a split), drawn reproducibly."""
    test_rows = window[window["split"] == "test"] if "split" in window else window
    return test_rows.sample(n=min(rows, len(test_rows)), random_state=0)


def served_probabilities(url: str, headers: Mapping[str, str], flights: Sequence[dict]) -> np.ndarray:
    """The delay probabilities a service at ``url`` answers for ``flights`` (``POST /predict``, in chunks, in order)."""
    import httpx

    scores: list[float] = []
    with httpx.Client(base_url=url, headers=dict(headers), timeout=60) as client:
        for start in range(0, len(flights), CHUNK_FLIGHTS):
            response = client.post("/predict", json={"flights": list(flights[start : start + CHUNK_FLIGHTS])})
            response.raise_for_status()
            scores += [p["delay_probability"] for p in response.json()]
    return np.asarray(scores, dtype="float64")


def compare(served: np.ndarray, expected: np.ndarray, tolerance: float) -> ParityReport:
    """The largest |served − expected| over the rows, against ``tolerance``."""
    worst = float(np.max(np.abs(served - expected))) if len(expected) else 0.0
    return ParityReport(rows=len(expected), max_abs_diff=worst, tolerance=tolerance)


def check_parity(url: str, headers: Mapping[str, str], sample: pd.DataFrame, unit: ModelUnit,
                 tolerance: float) -> ParityReport:
    """The service at ``url`` against ``unit`` on the flights of ``sample`` (feature rows, as stored)."""
    expected = np.asarray(unit.predict_proba(sample[list(FEATURE_COLUMNS)]), dtype="float64")
    served = served_probabilities(url, headers, records_from_features(sample))
    return compare(served, expected, tolerance)
