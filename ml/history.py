"""Late rates from previous days only: per route and per carrier, over a rolling window ending the day before.

The state kept for day D is the per-day counts (flights with an arrival, of which late) of each route
and carrier over the ``HISTORY_DAYS`` days before D. It is built incrementally: the state of D−1 minus
its oldest day, plus D−1's flights (``advance``), never the whole window again; a range folds it day
by day (``history_states``). A day's features then read only its own state, so no later day and
nothing of the day itself enters them.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

VERSION = "1"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

HISTORY_DAYS = 28
PRIOR_FLIGHTS = 20.0
"""Rates are shrunk toward the window's overall late rate as if this many flights had it: a route
flown twice in four weeks gets a rate near the overall one, not 0 or 1."""
LATE_MINUTES = 15
STATE_COLUMNS = ("day", "kind", "key", "flights", "late")
KINDS = {"route": ("origin", "dest"), "carrier": ("carrier",)}
HISTORY_FEATURES = ("route_late_rate_28d", "route_flights_28d", "carrier_late_rate_28d")


def empty_state() -> pd.DataFrame:
    return pd.DataFrame({"day": pd.Series(dtype="string"), "kind": pd.Series(dtype="string"),
                         "key": pd.Series(dtype="string"), "flights": pd.Series(dtype="int64"),
                         "late": pd.Series(dtype="int64")})


def day_counts(flights: pd.DataFrame, day: str) -> pd.DataFrame:
    """One day's raw flights as counts per route and carrier: flights that arrived, and of those late."""
    arrived = flights[flights["arr_delay"].notna()]
    late = (arrived["arr_delay"].astype("float64") >= LATE_MINUTES).astype("int64")
    parts = []
    for kind, columns in KINDS.items():
        key = arrived[columns[0]].astype("string")
        for column in columns[1:]:
            key = key + "-" + arrived[column].astype("string")
        grouped = pd.DataFrame({"key": key, "late": late}).groupby("key", sort=True)["late"].agg(["size", "sum"])
        parts.append(pd.DataFrame({"day": day, "kind": kind, "key": grouped.index.astype("string"),
                                   "flights": grouped["size"].astype("int64").to_numpy(),
                                   "late": grouped["sum"].astype("int64").to_numpy()}))
    out = pd.concat(parts, ignore_index=True) if parts else empty_state()
    return out.astype({"day": "string", "kind": "string", "key": "string"})[list(STATE_COLUMNS)]


def advance(state: pd.DataFrame, yesterday: str, yesterday_flights: pd.DataFrame | None) -> pd.DataFrame:
    """The state of the day after ``yesterday``: ``state`` (that of ``yesterday``) less the days now
    outside the window, plus ``yesterday``'s counts (none when its flights are absent)."""
    first = (dt.date.fromisoformat(yesterday) - dt.timedelta(days=HISTORY_DAYS - 1)).isoformat()
    kept = state[state["day"] >= first]
    if yesterday_flights is None or not len(yesterday_flights):
        return kept.reset_index(drop=True)
    return pd.concat([kept, day_counts(yesterday_flights, yesterday)], ignore_index=True)


def history_states(days: list[str], flights_by_day: dict[str, pd.DataFrame | None],
                   before_first: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """The state of each of ``days`` (consecutive, oldest first), folded from the state of the day
    before the first (``before_first``; None: nothing known) and each previous day's flights."""
    out = {}
    state = before_first if before_first is not None else empty_state()
    previous = (dt.date.fromisoformat(days[0]) - dt.timedelta(days=1)).isoformat() if days else ""
    for day in days:
        state = advance(state, previous, flights_by_day.get(previous))
        out[day] = state
        previous = day
    return out


def history_features(features: pd.DataFrame, states: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``HISTORY_FEATURES`` for rows with ``date``, ``origin``, ``dest``, ``carrier``; NaN for a day without a state."""
    out = pd.DataFrame(np.nan, index=features.index, columns=list(HISTORY_FEATURES))
    for day, rows in features.groupby("date", sort=False):
        state = states.get(day)
        if state is None or not len(state):
            continue
        totals = state.groupby(["kind", "key"])[["flights", "late"]].sum()
        route = totals.loc["route"] if "route" in totals.index.get_level_values(0) else totals.iloc[:0]
        prior = float(route["late"].sum()) / max(float(route["flights"].sum()), 1.0)

        def rate(kind: str, keys: pd.Series) -> tuple[np.ndarray, np.ndarray]:
            table = totals.loc[kind] if kind in totals.index.get_level_values(0) else totals.iloc[:0]
            found = table.reindex(keys.to_numpy())
            flights = found["flights"].fillna(0).to_numpy(dtype="float64")
            late = found["late"].fillna(0).to_numpy(dtype="float64")
            return (late + PRIOR_FLIGHTS * prior) / (flights + PRIOR_FLIGHTS), flights

        route_keys = rows["origin"].astype("string") + "-" + rows["dest"].astype("string")
        out.loc[rows.index, "route_late_rate_28d"], out.loc[rows.index, "route_flights_28d"] = rate("route", route_keys)
        out.loc[rows.index, "carrier_late_rate_28d"] = rate("carrier", rows["carrier"].astype("string"))[0]
    return out
