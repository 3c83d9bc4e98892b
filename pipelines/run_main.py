"""``make run`` (``flightdelay run``): replay real days into the lake and run the chain over them, on embedded defaults.

ingest_job and features_job run over the range as one run each (single-run backfills);
training_job then trains on the window, registers the model in MLflow, promotes a champion and
builds its Bento (parity-checked over HTTP); batch_predictions_job scores the last day in batch.

The run goes to the instance in ``DAGSTER_HOME`` (the Makefile sets ``.dagster_home``), the same
one ``make dev`` opens, so it shows in the UI. The terminal gets a line per job and the summary:
Dagster's event log stays in the instance (``PIPELINE_JSON_LOGS=true`` adds its JSON lines).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import time
from pathlib import Path

#: The chain, in order: each job is one run over the whole range (the last is unpartitioned).
CHAIN = ("ingest_job", "features_job", "training_job")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flightdelay run", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="start", type=dt.date.fromisoformat, default=dt.date(2013, 1, 1))
    parser.add_argument("--to", dest="end", type=dt.date.fromisoformat, default=dt.date(2013, 3, 31))
    parser.add_argument("--verbose", action="store_true",
                        help="Dagster's event log (INFO) and the libraries' messages on the terminal too")
    args = parser.parse_args(argv)
    log_level = "INFO" if args.verbose else "CRITICAL"

    from pipelines.replay import replay
    from pipelines.runner import instance_from_env, run_job_over_range
    from resources import lake_storage_from_env
    from resources.parquet_io import Warehouse
    from resources.storage import LakeArea
    from infra import settings

    storage = lake_storage_from_env()
    library_log = None if args.verbose else settings.project().data_dir / "logs" / "run.log"
    started = time.perf_counter()
    summary = replay(storage, args.start, args.end)
    print(
        f"landing zone {storage.uri('landing')}: {sum(summary.written.values())} file(s) dropped, "
        f"{summary.skipped_existing} already there ({time.perf_counter() - started:.1f} s)"
    )
    instance = instance_from_env()
    reports = []
    steps = len(CHAIN) + 1
    for number, job in enumerate(CHAIN, start=1):
        _announce(number, steps, job, f"{args.start}..{args.end}" if job != "training_job" else "the newest window")
        with _library_messages(library_log):
            report = run_job_over_range(job, args.start.isoformat(), args.end.isoformat(), instance, log_level=log_level)
        reports.append(report)
        print("\n".join(report.lines(holds_as_warnings=True)))
        if report.failed_checks and report.materialized:
            print(
                f"  note: {job} reports FAILURE because a blocking check held partitions back (above);"
                " the others were written and the chain goes on without the held-back ones."
            )
    last_day = args.end.isoformat()
    _announce(steps, steps, "batch_predictions_job", last_day)
    with _library_messages(library_log):
        scoring = run_job_over_range("batch_predictions_job", last_day, last_day, instance, log_level=log_level)
    print("\n".join(scoring.lines(holds_as_warnings=True)))
    print(_model_summary(instance))
    print(f"Parquet under {Warehouse(storage).root}; quarantined files under {storage.uri(LakeArea.QUARANTINE)}")
    print("See the runs in the UI: make dev  (http://127.0.0.1:3000)"
          + (f"; the libraries' messages: {library_log}" if library_log else ""))
    training = reports[-1]
    return 0 if training.success and not training.failed_checks and scoring.success else 1


@contextlib.contextmanager
def _library_messages(log: Path | None):
    """What the libraries print on stderr while a job runs (MLflow announces its migrations and each
    registration; the summary says both) goes to ``log``; None (``--verbose``): the terminal."""
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as sink, contextlib.redirect_stderr(sink):
        yield


def _announce(number: int, steps: int, job: str, over: str) -> None:
    print(f"[{number}/{steps}] {job} over {over} …", flush=True)


def _model_summary(instance) -> str:
    import dagster as dg

    model = instance.get_latest_materialization_event(dg.AssetKey("delay_model"))
    champion = instance.get_latest_materialization_event(dg.AssetKey("champion_model"))
    if model is None:
        return "no model trained"
    md = {k: v.value for k, v in model.asset_materialization.metadata.items()}
    line = (
        f"delay_model v{md['model_version']}: test ROC AUC {md['test_roc_auc']} "
        f"(baseline HistGradientBoosting {md['baseline_test_roc_auc']}, champion before: {md['champion_test_roc_auc']}); "
        f"{md['train_samples_per_s']:,} samples/s on {md['device']}"
    )
    if champion is not None:
        cm = {k: v.value for k, v in champion.asset_materialization.metadata.items()}
        line += f"\nchampion: v{cm['champion_version']} (previous {cm['previous_version']}) = {cm['model_uri']}"
    bento = instance.get_latest_materialization_event(dg.AssetKey("bento"))
    if bento is not None:
        bm = {k: v.value for k, v in bento.asset_materialization.metadata.items()}
        line += (
            f"\nbento: {bm['bento_tag']} (model v{bm['model_version']}, {bm['size_bytes'] / 1e3:.0f} kB);"
            " serve it with: make serve"
        )
    return line


if __name__ == "__main__":
    sys.exit(main())
