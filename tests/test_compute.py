"""The compute resources: device choice, and Dask through a scheduler address over TCP."""

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
def test_a_remote_scheduler_with_a_local_lake_is_refused_clearly(lake):
    """Remote workers cannot read this machine's folder: say so instead of finding "no flights"."""
    from assets.features import flight_features
    from tests.conftest import resources_for

    resources = {**resources_for(lake), "dask": DaskCluster(scheduler_address="tcp://127.0.0.1:8786")}
    result = dg.materialize([flight_features], resources=resources, partition_key="2013-01-01", raise_on_error=False)
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "remote workers cannot read" in failure.step_failure_data.error.message


def _late_rate_by_carrier():
    import dask.dataframe as dd
    import pandas as pd

    frame = pd.DataFrame({"carrier": list("AABBBC") * 50, "late": [0, 1, 1, 0, 1, 1] * 50})
    graph = dd.from_pandas(frame, npartitions=4).groupby("carrier")["late"].mean()
    return graph, frame.groupby("carrier")["late"].mean()


def test_compute_runs_in_process_without_a_scheduler(monkeypatch):
    """No scheduler address and threads: Dask's threaded scheduler, no cluster started."""

    def no_cluster(self):
        raise AssertionError("compute started a cluster")

    monkeypatch.setattr(DaskCluster, "client", no_cluster)
    graph, expected = _late_rate_by_carrier()
    assert DaskCluster().compute(graph).to_dict() == expected.to_dict()
    with pytest.raises(AssertionError, match="started a cluster"):  # worker processes do need one
        DaskCluster(processes=True).compute(graph)


@pytest.mark.slow
def test_compute_goes_to_the_scheduler_when_one_is_set():
    from distributed import LocalCluster

    graph, expected = _late_rate_by_carrier()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        result = DaskCluster(scheduler_address=cluster.scheduler_address).compute(graph)
        assert cluster.scheduler.task_prefixes, "the graph never reached the scheduler"
    assert result.to_dict() == expected.to_dict()
