"""late_history in Dagster: a range folds in one run, a later day builds on the stored state, features join it."""

import datetime as dt

import dagster as dg
import pandas as pd

from tests.conftest import chain_resources, replay

FIRST, LAST = "2013-01-01", "2013-01-10"


def test_late_history_folds_a_range_then_extends_it_a_day_at_a_time(lake):
    from assets.features import flight_features, late_history
    from assets.ingest import airports, planes, raw_flights, raw_weather
    from ml.history import history_states
    from pipelines.partition_ranges import range_tags
    from resources.parquet_io import Warehouse

    replay(lake, dt.date.fromisoformat(FIRST), dt.date.fromisoformat(LAST))
    instance = dg.DagsterInstance.ephemeral()
    resources = {k: v for k, v in chain_resources(lake, None).items() if v is not None}
    raw = [raw_flights, raw_weather, planes, airports]
    assert dg.materialize(raw, resources=resources, tags=range_tags(FIRST, LAST), instance=instance, selection=raw).success
    chain = [late_history, flight_features]
    first_run = dg.materialize(chain, resources=resources, tags=range_tags(FIRST, "2013-01-08"), instance=instance, selection=chain)
    assert first_run.success
    for day in ("2013-01-09", "2013-01-10"):  # one day at a time, each from the stored state of the day before
        assert dg.materialize(chain, resources=resources, partition_key=day, instance=instance, selection=chain).success

    warehouse = Warehouse(lake)
    days = [f"2013-01-{d:02d}" for d in range(1, 11)]
    expected = history_states(days, {d: warehouse.frame("raw_flights", d) for d in days}, warehouse.frame("airports", None))
    for day in days:
        pd.testing.assert_frame_equal(warehouse.frame("late_history", day).reset_index(drop=True),
                                      expected[day].reset_index(drop=True), check_dtype=False, obj=day)
    assert warehouse.frame("late_history", "2013-01-01").empty
    assert sorted(warehouse.frame("late_history", "2013-01-10")["day"].unique()) == days[:-1]
    first, last = warehouse.frame("flight_features", "2013-01-01"), warehouse.frame("flight_features", "2013-01-10")
    assert first["route_late_rate_28d"].isna().all() and last["route_late_rate_28d"].notna().mean() > 0.99
