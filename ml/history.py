"""Late rates from previous days only: per route and per carrier, over a rolling window ending the day before.

The state kept for day D is the per-day counts (flights with an arrival, of which late) of each route
and carrier over the ``HISTORY_DAYS`` days before D. It is built incrementally: the state of D−1 minus
its oldest day, plus D−1's flights (``advance``), never the whole window again; a range folds it day
by day (``history_states``). A day's features then read only its own state, so no later day and
nothing of the day itself enters them.

An arrival is known only once it has happened: a flight's rates count the arrivals that landed
before its cutoff. Nearly all of a day's arrivals land before the next day's first cutoff and are
counted as one row per route (``known_at`` 0); the few that land later (red-eyes, long delays) keep
their own arrival minute, and count only for flights whose cutoff comes after it. The live state
(``streaming/``) knows exactly the arrivals that happened, so both agree flight by flight.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from ml.day_so_far import CUTOFF_MARGIN_MINUTES
from ml.flight_times import NEW_YORK, arrival_minutes

VERSION = "2"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

HISTORY_DAYS = 28
PRIOR_FLIGHTS = 20.0
"""Rates are shrunk toward the window's overall late rate as if this many flights had it: a route
flown twice in four weeks gets a rate near the overall one, not 0 or 1."""
LATE_MINUTES = 15
STATE_COLUMNS = ("day", "kind", "key", "known_at", "flights", "late")
"""``known_at``: 0 for arrivals known before any cutoff of a later day, else the minute (since 1970 UTC) of the one arrival."""
KINDS = {"route": ("origin", "dest"), "carrier": ("carrier",)}
HISTORY_FEATURES = ("route_late_rate_28d", "route_flights_28d", "carrier_late_rate_28d")


def empty_state() -> pd.DataFrame:
    return pd.DataFrame({"day": pd.Series(dtype="string"), "kind": pd.Series(dtype="string"),
                         "key": pd.Series(dtype="string"), "known_at": pd.Series(dtype="int64"),
                         "flights": pd.Series(dtype="int64"),
                         "late": pd.Series(dtype="int64")})


def known_before_next_day(day: str) -> int:
    """The earliest cutoff any flight of a later day can have: local midnight after ``day`` less the margin (minutes, UTC)."""
    midnight = pd.Timestamp(dt.date.fromisoformat(day) + dt.timedelta(days=1)).tz_localize(NEW_YORK)
    return int(midnight.tz_convert("UTC").value // 60_000_000_000) - CUTOFF_MARGIN_MINUTES


def day_counts(flights: pd.DataFrame, day: str, airports: pd.DataFrame) -> pd.DataFrame:
    """One day's raw flights as counts per route and carrier: flights that arrived, and of those late.

    ``airports`` gives the destinations' time zones, which place each arrival in time (``known_at``).
    """
    arrived = flights[flights["arr_delay"].notna()]
    late = (arrived["arr_delay"].astype("float64") >= LATE_MINUTES).astype("int64")
    landed = arrival_minutes(arrived, airports)
    known_at = np.where(landed >= known_before_next_day(day), landed, 0).astype("int64")
    parts = []
    for kind, columns in KINDS.items():
        key = arrived[columns[0]].astype("string")
        for column in columns[1:]:
            key = key + "-" + arrived[column].astype("string")
        frame = pd.DataFrame({"key": key.to_numpy(), "known_at": known_at, "late": late.to_numpy()})
        grouped = frame.groupby(["key", "known_at"], sort=True)["late"].agg(["size", "sum"])
        parts.append(pd.DataFrame({"day": day, "kind": kind,
                                   "key": grouped.index.get_level_values("key").astype("string"),
                                   "known_at": grouped.index.get_level_values("known_at").astype("int64"),
                                   "flights": grouped["size"].astype("int64").to_numpy(),
                                   "late": grouped["sum"].astype("int64").to_numpy()}))
    out = pd.concat(parts, ignore_index=True) if parts else empty_state()
    return out.astype({"day": "string", "kind": "string", "key": "string"})[list(STATE_COLUMNS)]


def advance(state: pd.DataFrame, yesterday: str, yesterday_flights: pd.DataFrame | None,
            airports: pd.DataFrame) -> pd.DataFrame:
    """The state of the day after ``yesterday``: ``state`` (that of ``yesterday``) less the days now
    outside the window, plus ``yesterday``'s counts (none when its flights are absent)."""
    first = (dt.date.fromisoformat(yesterday) - dt.timedelta(days=HISTORY_DAYS - 1)).isoformat()
    kept = state[state["day"] >= first]
    if yesterday_flights is None or not len(yesterday_flights):
        return kept.reset_index(drop=True)
    return pd.concat([kept, day_counts(yesterday_flights, yesterday, airports)], ignore_index=True)


def history_states(days: list[str], flights_by_day: dict[str, pd.DataFrame | None], airports: pd.DataFrame,
                   before_first: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """The state of each of ``days`` (consecutive, oldest first), folded from the state of the day
    before the first (``before_first``; None: nothing known) and each previous day's flights."""
    out = {}
    state = before_first if before_first is not None else empty_state()
    previous = (dt.date.fromisoformat(days[0]) - dt.timedelta(days=1)).isoformat() if days else ""
    for day in days:
        state = advance(state, previous, flights_by_day.get(previous), airports)
        out[day] = state
        previous = day
    return out


def history_features(features: pd.DataFrame, states: dict[str, pd.DataFrame], cutoffs: np.ndarray) -> pd.DataFrame:
    """``HISTORY_FEATURES`` for rows with ``date``, ``origin``, ``dest``, ``carrier``; NaN for a day without a state.

    ``cutoffs``: each row's cutoff (minutes since 1970 UTC); only arrivals known before it count.
    """
    out = pd.DataFrame(np.nan, index=features.index, columns=list(HISTORY_FEATURES))
    cutoff = pd.Series(np.asarray(cutoffs, dtype="int64"), index=features.index)
    for day, rows in features.groupby("date", sort=False):
        state = states.get(day)
        if state is None or not len(state):
            continue
        if "known_at" not in state.columns:
            raise ValueError(f"late_history {day}: a state without arrival times (written before ml.history v2); "
                             "rematerialize late_history for the range")
        route_keys = (rows["origin"].astype("string") + "-" + rows["dest"].astype("string")).to_numpy()
        carrier_keys = rows["carrier"].astype("string").to_numpy()
        day_cutoffs = cutoff.loc[rows.index].to_numpy()
        settled = state[state["known_at"] == 0]
        pending = state[state["known_at"] > 0]
        totals = settled.groupby(["kind", "key"])[["flights", "late"]].sum()

        def counts(kind: str, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            table = totals.loc[kind] if kind in totals.index.get_level_values(0) else totals.iloc[:0]
            found = table.reindex(keys)
            flights = found["flights"].fillna(0).to_numpy(dtype="float64")
            late = found["late"].fillna(0).to_numpy(dtype="float64")
            known = pending[pending["kind"] == kind]
            if len(known):
                asked = pd.DataFrame({"row": np.arange(len(keys)), "key": keys, "cutoff": day_cutoffs})
                hits = asked.merge(known[["key", "known_at", "flights", "late"]], on="key")
                hits = hits[hits["known_at"] < hits["cutoff"]].groupby("row")[["flights", "late"]].sum()
                flights[hits.index.to_numpy()] += hits["flights"].to_numpy(dtype="float64")
                late[hits.index.to_numpy()] += hits["late"].to_numpy(dtype="float64")
            return flights, late

        route_flights, route_late = counts("route", route_keys)
        settled_routes = settled[settled["kind"] == "route"]
        pending_routes = pending[pending["kind"] == "route"].sort_values("known_at", kind="stable")
        known_before = np.searchsorted(pending_routes["known_at"].to_numpy(), day_cutoffs, side="left")
        pending_flights = np.concatenate([[0.0], np.cumsum(pending_routes["flights"].to_numpy(dtype="float64"))])
        pending_late = np.concatenate([[0.0], np.cumsum(pending_routes["late"].to_numpy(dtype="float64"))])
        window_flights = float(settled_routes["flights"].sum()) + pending_flights[known_before]
        window_late = float(settled_routes["late"].sum()) + pending_late[known_before]
        prior = window_late / np.maximum(window_flights, 1.0)

        carrier_flights, carrier_late = counts("carrier", carrier_keys)
        out.loc[rows.index, "route_late_rate_28d"] = (route_late + PRIOR_FLIGHTS * prior) / (route_flights + PRIOR_FLIGHTS)
        out.loc[rows.index, "route_flights_28d"] = route_flights
        out.loc[rows.index, "carrier_late_rate_28d"] = (carrier_late + PRIOR_FLIGHTS * prior) / (carrier_flights + PRIOR_FLIGHTS)
    return out
