"""Data-parallel training with PyTorch DDP: the same `train_model`, one shard of each batch per process.

Every process reads the whole window, fits the same preprocessing and draws the same batch order
(same seed); process r takes the r-th slice of each batch, DDP averages the gradients, so the
weights stay identical everywhere and follow the single-process run up to float rounding and
dropout masks. Process 0 is the leader: its validation loss decides early stopping for all, and
only its result is kept. Launched by ``torchrun`` (``env://`` rendezvous) or by any caller that
names the rendezvous itself (tests spawn processes with a ``file://`` one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from ml.train import EpochStats, TrainConfig, TrainResult, train_model


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the default process group, and the collectives `train_model` needs."""

    rank: int
    size: int
    device: str = "cpu"

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def wrap(self, network: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [torch.device(self.device).index] if torch.device(self.device).type == "cuda" else None
        # the buffers are constant column indices: synced once at construction, not before each forward
        return DistributedDataParallel(network, device_ids=device_ids, forward_sync_buffers=False)

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's contiguous slice of a batch; slices differ in size by at most one row."""
        return batch.tensor_split(self.size)[self.rank]

    def total(self, value: float) -> float:
        """The sum of ``value`` over all processes."""
        tensor = torch.tensor([value], dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def leader_value(self, value: float) -> float:
        """The leader's ``value``, in every process."""
        tensor = torch.tensor([value], dtype=torch.float64, device=self._collective_device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def broadcast_object(self, value: Any) -> Any:
        """The leader's ``value`` (anything picklable), in every process."""
        box = [value if self.is_leader else None]
        dist.broadcast_object_list(box, src=0, device=torch.device(self._collective_device))
        return box[0]

    @property
    def _collective_device(self) -> str:
        return self.device if dist.get_backend() == "nccl" else "cpu"


def backend_for(device: str) -> str:
    """NCCL between GPUs, gloo on CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def process_device(device: str, local_rank: int) -> str:
    """The device a process trains on: its own GPU (``cuda:<local rank>``) when ``device`` is CUDA."""
    return f"cuda:{local_rank}" if torch.device(device).type == "cuda" else device


@contextlib.contextmanager
def process_group(
    device: str = "cpu", init_method: str = "env://", rank: int | None = None, size: int | None = None,
    threads: int = 1,
) -> Iterator[ProcessGroup]:
    """Join the default process group for the duration (torchrun's ``env://`` unless named), then leave it.

    ``threads`` caps torch's intra-op threads per process: N processes × all cores each would
    oversubscribe the machine and slow every one of them.
    """
    if threads:
        torch.set_num_threads(threads)
    kwargs = {} if rank is None else {"rank": rank, "world_size": size}
    dist.init_process_group(backend_for(device), init_method=init_method, **kwargs)
    try:
        rank_here = dist.get_rank()
        local_rank = dist.get_node_local_rank(fallback_rank=rank_here)
        here = process_device(device, local_rank)
        if torch.device(here).type == "cuda":
            torch.cuda.set_device(here)
        yield ProcessGroup(rank=rank_here, size=dist.get_world_size(), device=here)
    finally:
        dist.destroy_process_group()


def train_data_parallel(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    config: TrainConfig,
    group: ProcessGroup,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult | None:
    """`train_model` as one process of ``group``: the leader gets the result (and ``on_epoch``), the others None."""
    result = train_model(
        train, validation, config, device=group.device, on_epoch=on_epoch if group.is_leader else None, parallel=group
    )
    return result if group.is_leader else None
