"""Compute: the torch device for training, and the Dask cluster for feature ranges and training windows."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import dagster as dg

from infra import settings

if TYPE_CHECKING:  # pandas loads in the step, not when the code location imports the resources
    import pandas as pd

    from ml.feature_days import FeatureRange
    from resources.storage import LakeStorage

Engine = Literal["pandas", "dask"]
"""What built a range: pandas in this process, or Dask tasks on the cluster."""
Item = TypeVar("Item")
Result = TypeVar("Result")


class TorchCompute(dg.ConfigurableResource):
    """Where training runs. ``device="auto"`` takes the accelerator torch finds (CUDA, …), else the CPU.

    Training steps also join the Dagster pool ``training`` (set on the asset), which a deployment
    limits. Under the Kubernetes executor the training step's pod asks for ``gpus``, ``memory``,
    ``node_selector`` and ``tolerations`` (``resources/kubernetes.py`` turns them into its
    ``dagster-k8s/config`` tag); other executors ignore them.
    """

    device: str = "auto"
    threads: int = 0  # 0: torch's default (all cores)
    gpus: int = 0
    """GPUs the training pod asks for (``nvidia.com/gpu`` limit); 0: a CPU pod."""
    memory: str | None = None
    """Memory the training pod requests and may not exceed (``16Gi``); None: the namespace's default."""
    node_selector: dict[str, str] = {}
    """Node labels the training pod must land on (a GPU node pool's label)."""
    tolerations: list[dict[str, Any]] = []
    """Taints the training pod tolerates (GPU pools are tainted so only GPU work lands there)."""

    @classmethod
    def from_settings(cls) -> "TorchCompute":
        """The resource as the environment sets it: TORCH_DEVICE and the TRAINING_* pod needs."""
        training = settings.training()
        return cls(
            device=settings.compute().torch_device,
            gpus=training.gpus,
            memory=training.memory,
            node_selector=training.node_selector,
            tolerations=training.tolerations,
        )

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

    def compute(self, collection: Any) -> Any:
        """A Dask collection's result, computed where it belongs: on the remote scheduler when one is set, on
        a local cluster of worker processes (``processes``: memory isolated, spill under ``memory_limit``),
        else with Dask's threaded scheduler in this process. The same graph either way; a local cluster of
        threads would only add its start, task transfers and result sizing (~15 s of the 18 s the year's
        training window took, bench/chain_bench.py)."""
        if self.scheduler_address or self.processes:
            with self.client() as client:
                return client.compute(collection).result()
        return collection.compute(scheduler="threads", num_workers=self.n_workers * self.threads_per_worker)

    def features_for_days(
        self,
        storage: LakeStorage,
        days: list[str],
        versions: Mapping[str, Mapping[str, str]],
        planes: pd.DataFrame,
        *,
        min_partitions: int,
        days_per_task: int,
    ) -> tuple[FeatureRange, Engine]:
        """Features of ``days`` (``ml/feature_days.py``) and the engine that built them.

        A range of ``min_partitions`` days or more (any range when a scheduler is set) goes to the cluster
        in tasks of ``days_per_task`` days, which read the lake through its settings; a shorter one is
        built by pandas in this process: locally a year fits in memory and is faster so
        (bench/chain_bench.py). The features are the same either way.
        """
        from ml.feature_days import FeatureRange, features_for_days
        from resources.parquet_io import Warehouse, frame_reader

        if not self.takes(len(days), min_partitions):
            return FeatureRange.of([features_for_days(Warehouse(storage).frame, days, versions, planes)]), "pandas"
        task = functools.partial(features_for_days, frame_reader(storage.settings()), versions=versions, planes=planes)
        return FeatureRange.of(self.map_chunks(task, days, days_per_task)), "dask"

    def takes(self, items: int, min_items: int) -> bool:
        """Whether work of ``items`` goes to the cluster: always with a scheduler, else from ``min_items``."""
        return bool(self.scheduler_address) or items >= min_items

    def require_shared_lake(self, storage: LakeStorage, asset: str) -> None:
        """Refuse a remote scheduler over a local lake: its workers would find no files, not fail."""
        if self.scheduler_address and not storage.is_s3:
            raise dg.Failure(
                f"{asset}: DASK_SCHEDULER_ADDRESS={self.scheduler_address} but the lake is the local "
                f"folder {storage.url}, which remote workers cannot read; set LAKE_URL to an s3:// lake or unset "
                "DASK_SCHEDULER_ADDRESS",
                allow_retries=False,
            )

    def map_chunks(
        self, task: Callable[[list[Item]], Result], items: Sequence[Item], chunk_size: int
    ) -> list[Result]:
        """``task`` of each run of ``chunk_size`` items, as one cluster task each (``task`` must pickle), in order."""
        chunks = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
        with self.client() as client:
            return client.gather(client.map(task, chunks, pure=False))

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

