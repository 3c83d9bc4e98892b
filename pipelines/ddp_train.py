"""The Dagster Pipes child of `delay_model` under torchrun: one process per rank, DDP between them.

    python -m torch.distributed.run --standalone --nproc_per_node=N -m pipelines.ddp_train --device cpu

Started by `resources.trainer.DistributedTrainer` (through `dg.PipesSubprocessClient` on one machine,
`PipesK8sClient` in a GPU pod), never by hand: the window to train on, where to put the unit and the
training config come as Pipes extras. Rank 0 alone opens the Pipes session (one writer of messages)
and hands the extras to the others; it streams per-epoch logs, reports the training figures as the
materialization's metadata and the saved unit's location, digest and history as a custom message.
The training itself is ``ml.distributed``: this module only moves data and messages.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

WINDOW_URI = "window_uri"
UNIT_URI = "unit_uri"
STORAGE_OPTIONS = "storage_options"
TRAIN_CONFIG = "train_config"
"""The extras `resources/trainer.py` sets (the same names there: importing it would load dagster in every rank)."""


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: each process takes cuda:<local rank>")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (0: torch's default)")
    return parser.parse_args(argv)


def _read_window(request: dict[str, Any]):
    import pandas as pd

    from ml.dataset import SPLIT, TRAIN, VALIDATION

    frame = pd.read_parquet(request[WINDOW_URI], storage_options=request.get(STORAGE_OPTIONS) or None)
    return frame[frame[SPLIT] == TRAIN], frame[frame[SPLIT] == VALIDATION]


def _upload_unit(unit, request: dict[str, Any]) -> str:
    """Save the unit and copy its files to the parent's ``unit_uri``; its SHA-256, verified by the parent."""
    import fsspec

    from ml.model import UNIT_FILES, unit_digest

    with tempfile.TemporaryDirectory(prefix="delay-model-unit-") as local:
        unit.save(local)
        digest = unit_digest(local)
        fs, root = fsspec.core.url_to_fs(request[UNIT_URI], **(request.get(STORAGE_OPTIONS) or {}))
        fs.makedirs(root, exist_ok=True)
        for name in UNIT_FILES:
            fs.put_file(str(Path(local) / name), f"{root.rstrip('/')}/{name}")
    return digest


def _train(group, request: dict[str, Any], pipes) -> None:
    from ml.distributed import backend_for, train_data_parallel
    from ml.model import ModelConfig
    from ml.train import TrainConfig

    train, validation = _read_window(request)
    flat = dict(request[TRAIN_CONFIG])
    model = {key: tuple(value) if isinstance(value, list) else value for key, value in flat.pop("model").items()}
    config = TrainConfig(**flat, model=ModelConfig(**model))

    def log_epoch(stats) -> None:
        pipes.log.info(
            f"network {stats.member + 1} of {config.model.members}, epoch {stats.epoch}: train loss {stats.train_loss:.4f}, "
            f"validation loss {stats.val_loss:.4f}, "
            f"validation ROC AUC {stats.val_roc_auc:.4f}, {stats.samples_per_s:,.0f} samples/s on {group.size} processes"
        )

    result = train_data_parallel(train, validation, config, group, on_epoch=log_epoch if pipes else None)
    if result is None:
        return
    digest = _upload_unit(result.unit, request)
    pipes.report_custom_message({
        UNIT_URI: request[UNIT_URI],
        "unit_sha256": digest,
        "history": [asdict(stats) for stats in result.history],
        "best_epoch": result.best_epoch,
        "device": result.device,
    })
    pipes.report_asset_materialization(metadata={
        "train_processes": group.size,
        "train_backend": backend_for(group.device),
        "train_samples_per_s": round(max((s.samples_per_s for s in result.history), default=0.0)),
    })


def main(argv: list[str] | None = None) -> int:
    from dagster_pipes import open_dagster_pipes

    from ml.distributed import process_group

    arguments = _arguments(argv)
    with process_group(device=arguments.device, threads=arguments.threads) as group:
        if group.is_leader:
            with open_dagster_pipes() as pipes:
                _train(group, group.broadcast_object(dict(pipes.extras)), pipes)
        else:
            _train(group, group.broadcast_object(None), None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
