"""Training the delay model: tensors prepared once, sliced per batch, early stopping on validation."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from ml.evaluate import classification_metrics, labels
from ml.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from ml.model import ModelConfig, ModelUnit, fit_temperature, members
from ml.preprocess import Preprocessor

VERSION = "3"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 4096
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 4
    seed: int = 7
    amp: bool = False
    """Mixed precision: float16 autocast with a GradScaler on CUDA, bfloat16 autocast on CPU."""
    model: ModelConfig = field(default_factory=ModelConfig)
    numeric_features: tuple[str, ...] = NUMERIC_FEATURES
    """The numeric features the model takes (a subset for ablations); categorical ones are always in."""
    calibrate: bool = True
    """Fit a temperature on validation after training (``ml.model.fit_temperature``)."""


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_roc_auc: float
    samples_per_s: float
    member: int = 0
    """Which network of the ensemble (``ModelConfig.members``) this epoch trained."""


@dataclass
class TrainResult:
    unit: ModelUnit
    history: list[EpochStats]
    best_epoch: int
    """The latest of the members' best epochs (each member keeps the weights of its own best one)."""
    device: str


class DataParallel(Protocol):
    """How `train_model` shares work between processes: `SingleProcess`, or ``ml.distributed.ProcessGroup``."""

    rank: int
    size: int

    def wrap(self, network: nn.Module) -> nn.Module: ...

    def shard(self, batch: torch.Tensor) -> torch.Tensor: ...

    def total(self, value: float) -> float: ...

    def leader_value(self, value: float) -> float: ...


class SingleProcess:
    """`train_model` in one process: every batch whole, values as they are."""

    rank = 0
    size = 1

    def wrap(self, network: nn.Module) -> nn.Module:
        return network

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        return batch

    def total(self, value: float) -> float:
        return value

    def leader_value(self, value: float) -> float:
        return value


def set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _tensors(pre: Preprocessor, frame: pd.DataFrame, device: torch.device):
    cats, numbers = pre.transform(frame)
    y = labels(frame).astype(np.float32)
    return (
        torch.from_numpy(cats).to(device),
        torch.from_numpy(numbers).to(device),
        torch.from_numpy(y).to(device),
    )


def _autocast_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def train_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    config: TrainConfig | None = None,
    device: str = "cpu",
    on_epoch: Callable[[EpochStats], None] | None = None,
    parallel: DataParallel | None = None,
) -> TrainResult:
    """Fit preprocessing on ``train``, train each network of the unit (one, or an ensemble's members one after
    another on the same tensors), each keeping the weights of its best validation epoch; then fit the
    temperature of the whole on validation.

    ``parallel`` (``ml.distributed.ProcessGroup``) trains data-parallel: every process prepares the same
    tensors and the same batch order, takes its shard of each batch, and DDP averages the gradients.
    The loss is a sum scaled by processes / batch rows, so the averaged gradient is the whole batch's mean,
    as in one process. Validation loss is the first process's, so all stop at the same epoch.
    """
    config = config or TrainConfig()
    parallel = parallel or SingleProcess()
    set_seeds(config.seed)
    torch_device = torch.device(device)
    pre = Preprocessor.fit(train, CATEGORICAL_FEATURES, tuple(config.numeric_features))
    unit = ModelUnit.create(pre, config.model)
    train_tensors = _tensors(pre, train, torch_device)
    val_tensors = _tensors(pre, validation, torch_device)
    history: list[EpochStats] = []
    best_epochs = []
    for index, member in enumerate(members(unit.network)):
        member_history, best_epoch = _fit_network(
            member.to(torch_device), train_tensors, val_tensors, config, index, torch_device, parallel, on_epoch
        )
        history += member_history
        best_epochs.append(best_epoch)
    network = unit.network.to("cpu").eval()
    _, _, v_y = val_tensors
    if config.calibrate and len(v_y):
        v_cat, v_num, _ = val_tensors
        with torch.no_grad():
            v_logits = network(v_cat.cpu(), v_num.cpu())
        unit.temperature = fit_temperature(v_logits, v_y.cpu())
    return TrainResult(unit=unit, history=history, best_epoch=max(best_epochs), device=str(torch_device))


def _validation_scores(network: nn.Module, val_tensors, loss_fn, parallel: DataParallel) -> tuple[float, float]:
    """Validation loss (the leader's under DDP) and ROC AUC (NaN with one class) of ``network``, in eval mode."""
    v_cat, v_num, v_y = val_tensors
    network.eval()
    with torch.no_grad():
        v_logits = network(v_cat, v_num)
        val_loss = parallel.leader_value(float(loss_fn(v_logits, v_y)))
        v_prob = torch.sigmoid(v_logits).cpu().numpy()
    val_auc = classification_metrics(v_y.cpu().numpy(), v_prob)["roc_auc"] if len(set(v_y.tolist())) > 1 else float("nan")
    return val_loss, val_auc


def _fit_network(
    network: nn.Module, train_tensors, val_tensors, config: TrainConfig, member: int, torch_device: torch.device,
    parallel: DataParallel, on_epoch: Callable[[EpochStats], None] | None,
) -> tuple[list[EpochStats], int]:
    """Train one network with early stopping on validation loss; it ends with its best epoch's weights.

    Member ``k`` of an ensemble draws its batch order from ``seed + k``: members differ by initialisation
    and by order, as networks trained apart would."""
    x_cat, x_num, y = train_tensors
    positive_rate = float(y.mean().item()) if len(y) else 0.5
    with torch.no_grad():  # start at the base rate: fewer wasted epochs
        network.mlp[-1].bias.fill_(float(np.log(max(positive_rate, 1e-3) / max(1 - positive_rate, 1e-3))))
    model = parallel.wrap(network)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    scaler = torch.amp.GradScaler(torch_device.type, enabled=config.amp and torch_device.type == "cuda")
    amp_dtype = _autocast_dtype(torch_device)
    generator = torch.Generator(device="cpu").manual_seed(config.seed + member)

    history: list[EpochStats] = []
    best_loss, best_epoch, best_state, stale = float("inf"), 0, None, 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(y), generator=generator).to(torch_device)
        total = 0.0
        for start in range(0, len(y), config.batch_size):
            batch = order[start : start + config.batch_size]
            idx = parallel.shard(batch)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(torch_device.type, dtype=amp_dtype, enabled=config.amp):
                logits = model(x_cat[idx], x_num[idx])
            loss_sum = nn.functional.binary_cross_entropy_with_logits(logits.float(), y[idx], reduction="sum")
            scaler.scale(loss_sum * (parallel.size / len(batch))).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss_sum.detach())
        seconds = time.perf_counter() - started
        total = parallel.total(total)
        val_loss, val_auc = _validation_scores(network, val_tensors, loss_fn, parallel)
        stats = EpochStats(epoch, total / max(len(y), 1), val_loss, val_auc, len(y) / seconds if seconds else 0.0, member)
        history.append(stats)
        if on_epoch:
            on_epoch(stats)
        if val_loss < best_loss - 1e-5:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    network.to("cpu")
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    return history, best_epoch
