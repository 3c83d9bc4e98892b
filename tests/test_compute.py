"""The compute resources: device choice, and Dask through a scheduler address over TCP."""

import datetime as dt

import dagster as dg
import pytest

from resources.compute import DaskCluster, TorchCompute


def _has_accelerator() -> bool:
    import torch

    return torch.accelerator.current_accelerator(check_available=True) is not None


@pytest.mark.skipif(_has_accelerator(), reason="this machine has an accelerator")
def test_auto_device_falls_back_to_the_cpu():
    assert TorchCompute().torch_device() == "cpu"


@pytest.mark.skipif(not _has_accelerator(), reason="needs a GPU or another accelerator")
def test_auto_device_takes_the_accelerator():
    assert TorchCompute().torch_device() != "cpu"


def test_explicit_device_is_respected():
    assert TorchCompute(device="cpu", threads=1).torch_device() == "cpu"


@pytest.mark.slow
def test_features_run_on_a_scheduler_given_by_address(lake):
    """DASK_SCHEDULER_ADDRESS routes feature work to that scheduler, as in production."""
    from distributed import LocalCluster

    from assets.features import flight_features
    from assets.ingest import airports, planes, raw_flights, raw_weather
    from pipelines.partition_ranges import range_tags
    from pipelines.replay import replay
    from tests.conftest import resources_for

    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 2))
    tags = range_tags("2013-01-01", "2013-01-02")
    assert dg.materialize([raw_flights, raw_weather, planes, airports], resources=resources_for(lake), tags=tags).success
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      host="127.0.0.1", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        resources = {**resources_for(lake), "dask": DaskCluster(scheduler_address=cluster.scheduler_address)}
        result = dg.materialize([flight_features], resources=resources, tags=tags)
        assert result.success
        events = result.get_asset_materialization_events()
        assert {e.materialization.metadata["engine"].value for e in events} == {"dask"}
    assert len(lake.list("warehouse/flight_features/")) == 2
