"""Compute: the torch device for training, and the Dask cluster for feature ranges and training windows."""

import contextlib
from collections.abc import Iterator
from typing import Any

import dagster as dg


class TorchCompute(dg.ConfigurableResource):
    """Where training runs. ``device="auto"`` takes the accelerator torch finds (CUDA, …), else the CPU.

    Training steps also join the Dagster pool ``training`` (set on the asset), which a deployment
    limits and can route to GPU nodes.
    """

    device: str = "auto"
    threads: int = 0  # 0: torch's default (all cores)

    def torch_device(self) -> str:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        if self.device != "auto":
            return self.device
        accelerator = torch.accelerator.current_accelerator(check_available=True)
        return str(accelerator) if accelerator is not None else "cpu"


class DaskCluster(dg.ConfigurableResource):
    """A Dask client: the remote scheduler at ``scheduler_address`` when set, a local cluster otherwise."""

    scheduler_address: str | None = None
    n_workers: int = 2
    threads_per_worker: int = 1
    processes: bool = False
    """Worker processes isolate memory (and spill under a limit) but cost seconds to start; threads start at once."""
    memory_limit: str = "auto"

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        from distributed import Client, LocalCluster

        if self.scheduler_address:
            with Client(self.scheduler_address) as client:
                yield client
            return
        with LocalCluster(
            n_workers=self.n_workers,
            threads_per_worker=self.threads_per_worker,
            processes=self.processes,
            memory_limit=self.memory_limit,
            dashboard_address=None,
            silence_logs=40,
        ) as cluster, Client(cluster) as client:
            yield client

