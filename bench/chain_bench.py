"""Features, training and the whole chain on the full 2013 year; prints figures, asserts nothing.

    .venv/bin/python bench/chain_bench.py            # ~5 minutes on 2 cores
    .venv/bin/python bench/chain_bench.py chain      # only part 3 (also: features, dask)

1. feature throughput: pandas in process vs the Dask cluster (threads, then processes)
2. training: samples/s per epoch; test ROC AUC of the torch model vs HistGradientBoosting,
   training Jan–Sep, early stopping on Oct, testing on Nov–Dec
3. ingest → champion through Dagster next to the same work as a plain script (the ratio is the
   orchestration overhead); training_job also builds, serves and parity-checks a Bento, which the
   script does not: those steps are timed apart (from the run's step events) and left out of the
   ratio on equal work
4. Dask over a 10× replicated year under a per-worker memory limit, where it earns its place
5. peak memory of this process
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import _bootstrap  # noqa: E402  (the project on sys.path, the shared set-up)

YEAR = (dt.date(2013, 1, 1), dt.date(2013, 12, 31))
QUALITY_WINDOW = {"window_days": 365, "cutoff": "2013-12-31", "validation_days": 31, "test_days": 61}


def _days() -> list[str]:
    first, last = YEAR
    return [(first + dt.timedelta(d)).isoformat() for d in range((last - first).days + 1)]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def feature_throughput(storage) -> dict[str, float]:
    from ml.feature_days import RAW_UPSTREAMS, features_for_days
    from resources.compute import DaskCluster
    from resources.parquet_io import Warehouse, frame_reader

    days = _days()
    warehouse = Warehouse(storage)
    planes = warehouse.frame("planes")
    versions = {upstream: warehouse.partitions(upstream) for upstream in RAW_UPSTREAMS}
    started = time.perf_counter()
    per_day = [features_for_days(warehouse.frame, [d], versions, planes)[d].features for d in days]
    per_day_s = time.perf_counter() - started
    rows = sum(len(f) for f in per_day if f is not None)
    started = time.perf_counter()
    built = features_for_days(warehouse.frame, days, versions, planes)
    pandas_s = time.perf_counter() - started
    assert sum(len(b.features) for b in built.values() if b.features is not None) == rows
    out = {"rows": rows, "pandas_s": pandas_s, "pandas_per_day_s": per_day_s}
    read = frame_reader(storage.settings())
    chunks = [days[i : i + 31] for i in range(0, len(days), 31)]
    for label, cluster in (
        ("dask_threads", DaskCluster(n_workers=1, threads_per_worker=2)),
        ("dask_processes", DaskCluster(n_workers=2, threads_per_worker=1, processes=True)),
    ):
        started = time.perf_counter()
        with cluster.client() as client:
            ready = time.perf_counter()
            n = len(chunks)
            parts = client.gather(client.map(features_for_days, [read] * n, chunks, [versions] * n, pure=False))
        out[f"{label}_s"] = time.perf_counter() - started
        out[f"{label}_startup_s"] = ready - started
        assert sum(len(b.features) for part in parts for b in part.values() if b.features is not None) == rows
    return out


def plain_chain(storage, mlflow_uri: str) -> dict[str, float]:
    """What the Dagster jobs do up to the champion, without Dagster: ingest → late_history → features
    (checked, written per day) → window → train → baseline, behavioural suite, permutation importance → MLflow (metrics, importance,
    drift reference, registered model) → champion alias."""
    import tempfile as tmp

    import mlflow
    import pandas as pd

    from ingest_bench import plain_ingest
    from ml.dataset import TEST, TRAIN, VALIDATION, WindowSpec, assign_splits, split_days, window_days
    from ml.drift import reference_sample
    from ml.evaluate import Baseline, behavioural_suite, classification_metrics, labels
    from ml import feature_checks
    from ml.feature_days import HISTORY_TABLE, RAW_UPSTREAMS, features_for_days
    from ml.history import history_states
    from ml.importance import as_records, feature_groups, markdown_table, permutation_importance
    from ml.train import train_model
    from resources.parquet_io import BUILT_FROM, Warehouse, parquet_bytes, warehouse_key

    timings = {}
    started = time.perf_counter()
    plain_ingest(storage, *YEAR)
    # plain_ingest writes under plain/; the features read the warehouse layout
    for obj in storage.list("plain/"):
        dataset, name = obj.key.split("/")[1:]
        asset = {"flights": "raw_flights", "weather": "raw_weather"}.get(dataset, dataset)
        partition = name.removesuffix(".parquet") if dataset in ("flights", "weather") else None
        storage.write_bytes(warehouse_key(asset, partition), storage.read_bytes(obj.key))
    timings["ingest_s"] = time.perf_counter() - started

    started = time.perf_counter()
    warehouse = Warehouse(storage)
    days = _days()
    flights = {d: warehouse.frame("raw_flights", d) for d in days}
    for day, state in history_states(days, flights, warehouse.frame("airports", None)).items():  # as late_history: each day from the one before
        storage.write_bytes(warehouse_key(HISTORY_TABLE, day), parquet_bytes(state))
    timings["history_s"] = time.perf_counter() - started

    started = time.perf_counter()
    versions = {upstream: warehouse.partitions(upstream) for upstream in RAW_UPSTREAMS}
    built = {d: b for d, b in features_for_days(warehouse.frame, days, versions).items() if b.features is not None}
    frames = {d: b.features for d, b in built.items()}
    blocking = [  # flight_features' checks (the null shares only warn), then each day written with its lineage
        feature_checks.model_inputs_intact(frames),
        feature_checks.label_rate(frames),
        feature_checks.row_counts_match(frames, {d: b.raw_rows for d, b in built.items()}),
    ]
    feature_checks.null_shares(frames, {d for d, b in built.items() if not b.had_weather})
    feature_checks.null_shares_by_day(frames)
    assert all(c.passed for c in blocking), [c.detail for c in blocking]
    for day, b in built.items():
        storage.write_bytes(warehouse_key("flight_features", day), parquet_bytes(b.features, {BUILT_FROM: b.built_from}))
    spec = WindowSpec(**QUALITY_WINDOW)
    splits = split_days(window_days(list(frames), spec), spec)
    data = assign_splits(pd.concat(frames.values(), ignore_index=True), splits)
    timings["features_s"] = time.perf_counter() - started

    started = time.perf_counter()
    parts = {s: data[data.split == s] for s in (TRAIN, VALIDATION, TEST)}
    result = train_model(parts[TRAIN], parts[VALIDATION])
    test, y_test = parts[TEST], labels(parts[TEST])
    metrics = classification_metrics(y_test, result.unit.predict_proba(test))
    baseline = classification_metrics(y_test, Baseline().fit(parts[TRAIN]).predict_proba(test))
    behaviour = behavioural_suite(result.unit.predict_proba, test.sample(min(2000, len(test)), random_state=7))
    columns = [*result.unit.preprocessor.categorical, *result.unit.preprocessor.numeric]
    auc, groups = permutation_importance(result.unit.predict_proba, test, y_test, feature_groups(columns), seed=7)
    mlflow.set_tracking_uri(mlflow_uri)
    experiment = mlflow.create_experiment("plain", artifact_location=(Path(mlflow_uri[len("sqlite:///"):]).parent / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment), tmp.TemporaryDirectory() as folder:
        mlflow.log_metrics({"test_roc_auc": metrics["roc_auc"], "baseline_test_roc_auc": baseline["roc_auc"],
                            **{f"behaves_{b.name}": float(b.passed) for b in behaviour}})
        mlflow.log_dict({"test_roc_auc": auc, "groups": as_records(groups)}, "explainability/permutation_importance.json")
        mlflow.log_text(markdown_table(auc, groups), "explainability/permutation_importance.md")
        reference_sample(parts[TRAIN]).to_parquet(Path(folder) / "drift_reference.parquet", index=False)
        mlflow.log_artifact(str(Path(folder) / "drift_reference.parquet"))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(Path(__file__).resolve().parents[1] / "resources" / "delay_pyfunc.py"),
            artifacts={"unit": str(result.unit.save(Path(folder) / "unit"))},
            code_paths=[str(Path(__file__).resolve().parents[1] / "ml")],
            input_example=None, pip_requirements=["torch"], registered_model_name="plain_delay",
        )
        mlflow.MlflowClient().set_registered_model_alias("plain_delay", "champion", info.registered_model_version)
    timings["train_s"] = time.perf_counter() - started
    timings["samples_per_s"] = max(h.samples_per_s for h in result.history)
    timings["epochs"] = len(result.history)
    timings["roc_auc"] = metrics["roc_auc"]
    timings["baseline_roc_auc"] = baseline["roc_auc"]
    timings["train_rows"] = len(parts[TRAIN])
    timings["test_rows"] = len(parts[TEST])
    return timings


#: Steps of training_job that the plain script has no counterpart for: build the champion's Bento,
#: serve it and check parity over HTTP, export it. Timed apart so the ratio compares equal work.
BENTO_STEPS = ("bento", "bento_release")


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Wall time of each step of a run, from the event log's step start and end events."""
    return {
        stats.step_key: stats.end_time - stats.start_time
        for stats in instance.get_run_step_stats(run_id)
        if stats.start_time is not None and stats.end_time is not None
    }


def dagster_chain() -> dict[str, float]:
    import dagster as dg

    from pipelines.definitions import defs
    from pipelines.runner import run_job_over_range

    instance = dg.DagsterInstance.ephemeral()
    timings = {}
    steps = {}
    for job in ("ingest_job", "features_job"):
        started = time.perf_counter()
        report = run_job_over_range(job, YEAR[0].isoformat(), YEAR[1].isoformat(), instance)
        timings[f"{job}_s"] = time.perf_counter() - started
        steps[job] = step_seconds(instance, report.run_id)
    started = time.perf_counter()
    result = defs.resolve_job_def("training_job").execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"training_set": {"config": QUALITY_WINDOW}},
                    "loggers": {"console": {"config": {"log_level": "ERROR"}}}},
    )
    timings["training_job_s"] = time.perf_counter() - started
    steps["training_job"] = step_seconds(instance, result.run_id)
    timings["bento_steps_s"] = sum(steps["training_job"].get(step, 0.0) for step in BENTO_STEPS)
    timings["steps"] = steps
    event = instance.get_latest_materialization_event(dg.AssetKey("delay_model"))
    md = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    timings["roc_auc"] = md["test_roc_auc"]
    timings["baseline_roc_auc"] = md["baseline_test_roc_auc"]
    timings["promoted"] = float(result.success)
    return timings


def _fill_lake(jobs: list[str]) -> None:
    """Run ``jobs`` over the year, as the chain part does, for parts run without it."""
    import dagster as dg

    from pipelines.runner import run_job_over_range

    instance = dg.DagsterInstance.ephemeral()
    for job in jobs:  # a day held back by a blocking check fails the run, and the other days are written
        if not run_job_over_range(job, YEAR[0].isoformat(), YEAR[1].isoformat(), instance).materialized:
            raise SystemExit(f"chain_bench: {job} materialized nothing; the parts after it have nothing to read")


def replicated_dask(storage, copies: int = 10) -> dict[str, float]:
    """The year's features ×10 (~3.4M rows) aggregated by Dask worker processes capped at 1 GB each."""
    import dask.dataframe as dd
    import pandas as pd

    from resources.compute import DaskCluster
    from resources.parquet_io import Warehouse

    folder = Path(tempfile.mkdtemp(prefix="replicated-"))
    sources = sorted(Path(Warehouse(storage).uri("flight_features")).glob("*.parquet"))
    for copy in range(copies):
        for source in sources:
            (folder / f"{copy:02d}-{source.name}").symlink_to(source)
    cluster = DaskCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GB")
    started = time.perf_counter()
    with cluster.client():
        frame = dd.read_parquet(str(folder))
        summary = (
            frame[~frame.arrived_late.isna()]
            .assign(late=lambda f: f.arrived_late.astype("float64"))
            .groupby(["origin", "carrier"])["late"].agg(["mean", "count"])
            .compute()
        )
    seconds = time.perf_counter() - started
    rows = int(summary["count"].sum())
    started = time.perf_counter()
    whole = pd.concat([pd.read_parquet(s, columns=["origin", "carrier", "arrived_late"]) for s in sources])
    single_s = (time.perf_counter() - started) * copies  # pandas would need all copies in memory at once
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds,
            "pandas_in_memory_mb_needed": whole.memory_usage(deep=True).sum() * copies / 1e6,
            "pandas_read_s_estimate": single_s}


def main() -> int:
    root = _bootstrap.scratch_lake("chain-bench-")  # the Dagster side's; the plain script's under plain/

    import torch

    from pipelines.replay import replay
    from resources import lake_storage_from_env
    from resources.storage import LakeStorage

    print(f"torch threads: {torch.get_num_threads()}, cores: {os.cpu_count()}")
    dagster_storage = lake_storage_from_env()
    replay(dagster_storage, *YEAR)
    plain_storage = LakeStorage(url=str(root / "plain" / "lake"), sse=None)
    replay(plain_storage, *YEAR)

    parts = set(sys.argv[1:]) or {"chain", "features", "dask"}
    if "chain" in parts:
        chain(dagster_storage, plain_storage, root)
    if "chain" not in parts:  # the chain's jobs fill the lake the other parts read
        _fill_lake(["ingest_job", *(["features_job"] if "dask" in parts else [])])
    if "features" in parts:
        features = feature_throughput(dagster_storage)
        print("\n== feature throughput on the year (365 partitions, read Parquet → features)")
        print(f"pandas, day by day: {features['rows'] / features['pandas_per_day_s']:9,.0f} rows/s ({features['pandas_per_day_s']:.1f} s)")
        print(f"pandas, one pass  : {features['rows'] / features['pandas_s']:9,.0f} rows/s ({features['pandas_s']:.1f} s)")
        for label in ("dask_threads", "dask_processes"):
            s = features[f"{label}_s"]
            print(f"{label:18s}: {features['rows'] / s:9,.0f} rows/s ({s:.1f} s, of which cluster start {features[f'{label}_startup_s']:.1f} s); "
                  f"dask/pandas time ratio {s / features['pandas_s']:.2f}")
    if "dask" in parts:
        replicated = replicated_dask(dagster_storage)
        print("\n== Dask on the year ×10 (worker processes capped at 1 GB each)")
        print(f"{replicated['rows']:,} labelled rows aggregated in {replicated['seconds']:.1f} s "
              f"({replicated['rows_per_s']:,.0f} rows/s); pandas would hold ~{replicated['pandas_in_memory_mb_needed']:,.0f} MB at once")
    print(f"\npeak RSS of this process: {_peak_mb():,.0f} MB (bench data in {root})")
    return 0


def chain(dagster_storage, plain_storage, root: Path) -> None:
    """The whole chain both ways; the ratio on equal work leaves out the Bento steps the script does not do."""
    started = time.perf_counter()
    plain = plain_chain(plain_storage, f"sqlite:///{root / 'plain' / 'mlflow.db'}")
    plain_total = time.perf_counter() - started
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # mlflow.set_tracking_uri exports it; the Dagster side has its own
    started = time.perf_counter()
    dag = dagster_chain()
    dagster_total = time.perf_counter() - started

    print("\n== whole chain on the year (ingest → features → train → register → champion)")
    print(f"plain script : {plain_total:6.1f} s  (ingest {plain['ingest_s']:.1f}, history {plain['history_s']:.1f}, features {plain['features_s']:.1f}, train+baseline+checks+importance+mlflow {plain['train_s']:.1f})")
    print(f"dagster      : {dagster_total:6.1f} s  (ingest_job {dag['ingest_job_s']:.1f}, features_job {dag['features_job_s']:.1f}, training_job {dag['training_job_s']:.1f}"
          f" of which Bento build + parity + export {dag['bento_steps_s']:.1f})")
    equal = dagster_total - dag["bento_steps_s"]
    print(f"ratio dagster/plain, as run: {dagster_total / plain_total:.2f}; on equal work (without the Bento steps): {equal / plain_total:.2f}")
    for job, steps in dag["steps"].items():
        job_s = dag[f"{job}_s"]
        listed = ", ".join(f"{step} {seconds:.1f}" for step, seconds in steps.items())
        print(f"  {job}: {job_s:.1f} s = steps ({listed}) + {job_s - sum(steps.values()):.1f} s outside steps")

    print("\n== model quality: train Jan–Sep, early stopping on Oct, test Nov–Dec")
    print(f"train rows {plain['train_rows']:,}, test rows {plain['test_rows']:,}")
    print(f"torch model ROC AUC {plain['roc_auc']:.4f} (dagster run: {dag['roc_auc']:.4f}); "
          f"HistGradientBoosting {plain['baseline_roc_auc']:.4f} (dagster run: {dag['baseline_roc_auc']:.4f})")
    print(f"training: {plain['samples_per_s']:,.0f} samples/s per epoch (best epoch of {plain['epochs']:.0f}), 2 cores")


if __name__ == "__main__":
    sys.exit(main())
