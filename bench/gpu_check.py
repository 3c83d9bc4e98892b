"""The GPU check: training throughput on the full 2013 year, CPU against CUDA, mixed precision off and on.

    .venv/bin/python -m bench.gpu_check                 # CPU 1 and 2 processes, then CUDA if present
    .venv/bin/python -m bench.gpu_check --epochs 4 --skip-ddp

Trains Jan–Sep (validation Oct, test Nov–Dec) with `ml.train.train_model`, a fixed number of epochs
(no early stop), and prints samples/s per epoch (the median after the first, warm-up epoch) and the
test ROC AUC for: CPU in one process, CPU DDP with 2 gloo processes (1 thread each), and on CUDA
float32 and mixed precision (float16 autocast + GradScaler), and DDP over every GPU when there are
several. Without CUDA it says so after the CPU figures and exits 0. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def year_window():
    """Features of every 2013 flight with a label, split by time: train Jan–Sep, validation Oct, test Nov–Dec."""
    from ml.contracts import AIRPORTS, FLIGHTS, PLANES, WEATHER
    from ml.dataset import SPLIT, TEST, TRAIN, VALIDATION
    from ml.features import build_features
    from ml.parsing import parse_frame
    from ml.reference_data import read_table

    features = build_features(
        parse_frame(read_table("flights"), FLIGHTS, "flights").frame,
        parse_frame(read_table("weather"), WEATHER, "weather").frame,
        parse_frame(read_table("planes"), PLANES, "planes").frame,
        parse_frame(read_table("airports"), AIRPORTS, "airports").frame,
    )
    features = features[features["arrived_late"].notna()].reset_index(drop=True)
    month = features["date"].astype(str).str.slice(5, 7).astype(int)
    features[SPLIT] = TRAIN
    features.loc[month == 10, SPLIT] = VALIDATION
    features.loc[month >= 11, SPLIT] = TEST
    return features


def _parts(frame):
    from ml.dataset import SPLIT, TEST, TRAIN, VALIDATION

    return [frame[frame[SPLIT] == name] for name in (TRAIN, VALIDATION, TEST)]


def _figures(result, test) -> dict[str, float]:
    from ml.evaluate import classification_metrics, labels

    rates = [stats.samples_per_s for stats in result.history]
    return {
        "samples_per_s": statistics.median(rates[1:] or rates),
        "roc_auc": classification_metrics(labels(test), result.unit.predict_proba(test))["roc_auc"],
    }


def single_process(frame, config, device: str, threads: int = 0) -> dict[str, float]:
    import torch

    from ml.train import train_model

    if threads:
        torch.set_num_threads(threads)
    train, validation, test = _parts(frame)
    return _figures(train_model(train, validation, config, device=device), test)


def _ddp_worker(rank: int, size: int, device: str, rendezvous: str, window: str, config, out: str) -> None:
    import pandas as pd

    from ml.distributed import process_group, train_data_parallel

    train, validation, test = _parts(pd.read_parquet(window))
    with process_group(device=device, init_method=f"file://{rendezvous}", rank=rank, size=size, threads=1) as group:
        result = train_data_parallel(train, validation, config, group)
    if result is not None:
        import json

        Path(out).write_text(json.dumps(_figures(result, test)))


def data_parallel(frame, config, device: str, processes: int) -> dict[str, float]:
    """`processes` DDP processes (gloo on CPU, NCCL on GPUs) spawned here, one rendezvous file."""
    import json

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        window = f"{folder}/window.parquet"
        frame.to_parquet(window)
        args = (processes, device, f"{folder}/rendezvous", window, config, f"{folder}/figures.json")
        mp.spawn(_ddp_worker, args=args, nprocs=processes)
        return json.loads(Path(f"{folder}/figures.json").read_text())


def _line(label: str, figures: dict[str, float], reference: float | None = None) -> str:
    ratio = f"  ×{figures['samples_per_s'] / reference:.2f} vs CPU" if reference else ""
    return f"{label:<44} {figures['samples_per_s']:>12,.0f} samples/s   test ROC AUC {figures['roc_auc']:.4f}{ratio}"


def main(argv: list[str] | None = None) -> int:
    import torch

    from ml.train import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per configuration (all run: no early stop)")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--skip-ddp", action="store_true", help="no multi-process runs")
    arguments = parser.parse_args(argv)

    started = time.perf_counter()
    frame = year_window()
    train, validation, test = _parts(frame)
    print(f"full year: {len(train):,} train / {len(validation):,} validation / {len(test):,} test rows "
          f"(features in {time.perf_counter() - started:.1f} s); torch {torch.__version__}; "
          f"{arguments.epochs} epochs of batch {arguments.batch_size}")

    def config(amp: bool = False) -> TrainConfig:
        return TrainConfig(epochs=arguments.epochs, patience=arguments.epochs + 1, batch_size=arguments.batch_size, amp=amp)

    cpu = single_process(frame, config(), "cpu")
    print(_line(f"cpu, 1 process ({torch.get_num_threads()} threads)", cpu))
    if not arguments.skip_ddp:
        print(_line("cpu, 1 process (1 thread)", single_process(frame, config(), "cpu", threads=1)))
        print(_line("cpu, DDP 2 processes (gloo, 1 thread each)", data_parallel(frame, config(), "cpu", 2)))

    if not torch.cuda.is_available():
        print("CUDA is not available on this machine: GPU figures skipped (CPU figures above).")
        return 0
    reference = cpu["samples_per_s"]
    print(f"CUDA: {torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}")
    print(_line("cuda, float32", single_process(frame, config(), "cuda"), reference))
    print(_line("cuda, mixed precision (fp16 autocast + GradScaler)", single_process(frame, config(amp=True), "cuda"), reference))
    gpus = torch.cuda.device_count()
    if gpus > 1 and not arguments.skip_ddp:
        print(_line(f"cuda, DDP {gpus} processes (NCCL)", data_parallel(frame, config(), "cuda", gpus), reference))
    return 0


if __name__ == "__main__":
    sys.exit(main())
