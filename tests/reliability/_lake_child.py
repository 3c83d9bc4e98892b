"""A Dagster run in a child process with one fault injected, for tests that SIGKILL or pause it.

Started by the tests as ``python -m tests.reliability._lake_child SPEC.json``. The fault is
test-only code patched in here, never in the pipeline: it signals the parent by writing
``spec["signal"]`` and then waits (to be killed, or until ``spec["go"]`` appears).
"""

import json
import os
import sys
import time
from pathlib import Path


def _signal_and_wait(spec: dict, info: dict) -> None:
    flag = Path(spec["signal"])
    flag.with_suffix(".tmp").write_text(json.dumps(info))
    os.replace(flag.with_suffix(".tmp"), flag)  # the parent never reads half a signal
    go = spec.get("go")
    while not (go and Path(go).exists()):
        time.sleep(0.05)


def _inject(spec: dict) -> None:
    fault = spec.get("fault") or {}
    kind, at = fault.get("kind"), fault.get("at", 1)
    calls = {"n": 0}
    if kind == "serialize":
        # Killed while a Parquet file is being encoded: half of its bytes go where the writer asked.
        import io

        import pyarrow.parquet as pq

        original = pq.write_table

        def half_then_wait(table, where, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] != at:
                return original(table, where, *args, **kwargs)
            buffer = io.BytesIO()
            original(table, buffer, *args, **kwargs)
            data = buffer.getvalue()[: len(buffer.getvalue()) // 2]
            if isinstance(where, (str, os.PathLike)):
                with open(where, "wb") as handle:
                    handle.write(data)
            else:
                where.write(data)
                where.flush()
            _signal_and_wait(spec, {"fault": kind, "target": str(where)})

        pq.write_table = half_then_wait
    elif kind == "rename":
        # Killed after a file is fully written aside, before it is renamed into place.
        original_replace = os.replace

        def wait_then_replace(src, dst, *args, **kwargs):
            if str(dst).endswith(".parquet"):
                calls["n"] += 1
                if calls["n"] == at:
                    _signal_and_wait(spec, {"fault": kind, "source": str(src), "target": str(dst)})
            return original_replace(src, dst, *args, **kwargs)

        os.replace = wait_then_replace
    elif kind == "pause_before_load":
        # Held between steps: after `fault["asset"]` was written, before the next step loads it.
        from resources.parquet_io import PartitionedParquetIOManager

        original_load = PartitionedParquetIOManager.load_input

        def pause_then_load(self, context):
            if context.asset_key.to_user_string() == fault["asset"]:
                _signal_and_wait(spec, {"fault": kind, "run_id": context.step_context.run_id})
            return original_load(self, context)

        PartitionedParquetIOManager.load_input = pause_then_load


def _record_window_instead_of_training(result_path: str) -> None:
    """delay_model records the window it was handed (its days, rows, run) and passes its checks."""
    import dagster as dg

    import assets.training as training_assets
    from resources.mlflow_registry import Candidate

    def record(context, config, training_set, mlflow, compute, trainer=None, fingerprint="unknown"):
        days = sorted(training_set["date"].unique())
        Path(result_path).write_text(json.dumps({"run_id": context.run_id, "days": days, "rows": len(training_set)}))
        checks = [
            dg.AssetCheckResult(check_name=name, passed=True)
            for name in (training_assets.BASELINE_CHECK, training_assets.CHAMPION_CHECK, training_assets.BEHAVIOUR_CHECK)
        ]
        candidate = Candidate(version="0", run_id="", model_uri="", passed=True, reason="", test_roc_auc=None,
                              baseline_roc_auc=None, champion_roc_auc=None, evaluated_against=None,
                              data_fingerprint=fingerprint, unit_digest="", dagster_run_id=context.run_id,
                              window_last_day=days[-1])
        return training_assets.RegisteredCandidate(
            candidate, metadata={"window_first_day": days[0], "window_last_day": days[-1]}, checks=checks)

    training_assets.evaluate_and_register = record


def main(spec_path: str) -> int:
    import dagster as dg

    from assets import features, ingest, training
    from pipelines.partition_ranges import range_tags
    from resources.compute import DaskCluster, TorchCompute
    from resources.mlflow_registry import MlflowRegistry
    from resources import io_managers
    from resources.storage import LakeStorage
    from resources.trainer import DistributedTrainer

    spec = json.loads(Path(spec_path).read_text())
    _inject(spec)
    if spec.get("record_window"):
        _record_window_instead_of_training(spec["record_window"])
    known = {a.key.to_user_string(): a for module in (ingest, features, training) for a in vars(module).values()
             if isinstance(a, dg.AssetsDefinition)}
    storage = LakeStorage(url=spec["lake"])
    resources = {
        "storage": storage,
        **io_managers(storage),
        "dask": DaskCluster(n_workers=1, threads_per_worker=1),
        "registry": MlflowRegistry(tracking_uri=f"sqlite:///{Path(spec_path).parent / 'unused-mlflow.db'}"),
        "compute": TorchCompute(device="cpu"),
        "trainer": DistributedTrainer(),
    }
    selection = [known[name] for name in spec["assets"]]
    instance = dg.DagsterInstance.from_config(spec["dagster_home"]) if spec.get("dagster_home") else dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        selection + [known[name].to_source_asset() for name in spec.get("sources", [])],
        resources=resources,
        instance=instance,
        tags=range_tags(*spec["range"]) if spec.get("range") else None,
        run_config=spec.get("run_config"),
        selection=selection,
        raise_on_error=False,
    )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
