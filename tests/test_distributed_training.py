"""Data-parallel training: DDP on CPU matches one process, torchrun through Pipes from `delay_model`,
and the trainer pod `PipesK8sClient` would start (built and validated, not run)."""

import dagster as dg
import pytest

from resources.compute import TorchCompute
from resources.kubernetes import GPU_RESOURCE, training_pod_spec
from resources.trainer import DistributedTrainer

WINDOW_DAYS = 21
FAST = {"epochs": 6, "patience": 2}


@pytest.fixture(scope="module")
def three_weeks():
    """Real features of 2013-01-01..21 with labels, split by time (train 14 days, validation 3, test 4)."""
    from ml.contracts import AIRPORTS, FLIGHTS, PLANES, WEATHER
    from ml.dataset import WindowSpec, assign_splits, split_days
    from ml.features import build_features
    from ml.parsing import parse_frame
    from ml.reference_data import read_table

    def first_days(table):
        return table[(table.month == "1") & (table.day.astype(int) <= WINDOW_DAYS)].reset_index(drop=True)

    features = build_features(
        parse_frame(first_days(read_table("flights")), FLIGHTS, "f").frame,
        parse_frame(first_days(read_table("weather")), WEATHER, "w").frame,
        parse_frame(read_table("planes"), PLANES, "p").frame,
        parse_frame(read_table("airports"), AIRPORTS, "a").frame,
    )
    features = features[features["arrived_late"].notna()]
    days = sorted(features["date"].unique())
    return assign_splits(features, split_days(days, WindowSpec(validation_days=3, test_days=4))).reset_index(drop=True)


def _parts(frame):
    from ml.dataset import SPLIT, TEST, TRAIN, VALIDATION

    return [frame[frame[SPLIT] == name] for name in (TRAIN, VALIDATION, TEST)]


def _ddp_worker(rank: int, size: int, rendezvous: str, window_path: str, out_dir: str) -> None:
    """One process of the group: trains its shards and saves the weights it ends with."""
    import pandas as pd
    import torch

    from ml.distributed import process_group
    from ml.train import TrainConfig, train_model

    train, validation, _ = _parts(pd.read_parquet(window_path))
    with process_group(init_method=f"file://{rendezvous}", rank=rank, size=size, threads=1) as group:
        result = train_model(train, validation, TrainConfig(**FAST), device=group.device, parallel=group)
    torch.save(result.unit.network.state_dict(), f"{out_dir}/rank{rank}.pt")
    if group.is_leader:
        result.unit.save(f"{out_dir}/unit")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(three_weeks, tmp_path):
    """Same seed, same window: 2-process DDP on CPU ends within 0.005 test ROC AUC of one process,
    and both processes end with the same weights (the gradients were all-reduced, not trained apart)."""
    import torch
    import torch.multiprocessing as mp

    from ml.evaluate import classification_metrics, labels
    from ml.model import ModelUnit
    from ml.train import TrainConfig, train_model

    train, validation, test = _parts(three_weeks)
    torch.set_num_threads(1)
    single = train_model(train, validation, TrainConfig(**FAST))
    window = tmp_path / "window.parquet"
    three_weeks.to_parquet(window)
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "rendezvous"), str(window), str(tmp_path)), nprocs=2)

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    ddp = ModelUnit.load(tmp_path / "unit")
    single_auc = classification_metrics(labels(test), single.unit.predict_proba(test))["roc_auc"]
    ddp_auc = classification_metrics(labels(test), ddp.predict_proba(test))["roc_auc"]
    assert single_auc > 0.6
    assert abs(ddp_auc - single_auc) <= 0.005, (single_auc, ddp_auc)


@pytest.mark.slow
def test_mixed_precision_trains_on_cpu(three_weeks):
    """``amp`` autocasts to bfloat16 on CPU (float16 + GradScaler on CUDA): it still learns."""
    from ml.evaluate import classification_metrics, labels
    from ml.train import TrainConfig, train_model

    train, validation, test = _parts(three_weeks)
    result = train_model(train, validation, TrainConfig(**FAST, amp=True))
    assert classification_metrics(labels(test), result.unit.predict_proba(test))["roc_auc"] > 0.6


@pytest.mark.slow
def test_delay_model_trains_with_torchrun_through_pipes(featured_lake, mlflow_registry):
    """TRAINING_LAUNCHER=torchrun: `delay_model` starts 2 gloo processes through PipesSubprocessClient; the
    child's per-epoch logs, figures and unit come back through Pipes and the model is registered as usual."""
    from assets.training import delay_model, training_set
    from assets.features import flight_features
    from tests.conftest import chain_resources

    lake, instance = featured_lake
    resources = {**chain_resources(lake, mlflow_registry), "trainer": DistributedTrainer(launcher="torchrun", processes=2)}
    result = dg.materialize(
        [flight_features.to_source_asset(), training_set, delay_model], resources=resources, instance=instance,
        run_config={"ops": {"delay_model": {"config": FAST}}}, selection=[training_set, delay_model],
        raise_on_error=False,
    )
    assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    metadata = instance.get_latest_materialization_event(dg.AssetKey("delay_model")).asset_materialization.metadata
    assert metadata["train_processes"].value == 2
    assert metadata["train_backend"].value == "gloo"
    assert metadata["test_roc_auc"].value > 0.6 and metadata["model_version"].value == "1"
    assert {"model_version", "test_roc_auc", "baseline_test_roc_auc", "best_epoch", "device", "data_fingerprint"} <= set(metadata)
    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any("epoch 1:" in m and "on 2 processes" in m for m in logs)
    run = mlflow_registry.client().get_run(metadata["mlflow_run_id"].value)
    assert run.data.params["train_processes"] == "2" and run.data.params["train_launcher"] == "torchrun"


def test_default_is_one_process_in_process(monkeypatch):
    for name in ("TRAINING_LAUNCHER", "TRAINING_PROCESSES", "TRAINING_GPUS", "TRAINING_NODE_SELECTOR", "TRAINING_TOLERATIONS"):
        monkeypatch.delenv(name, raising=False)
    trainer = DistributedTrainer.from_settings()
    assert (trainer.launcher, trainer.process_count(), trainer.gpus) == ("inprocess", 1, 0)


def test_more_than_one_process_means_torchrun_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("TRAINING_LAUNCHER", raising=False)
    monkeypatch.setenv("TRAINING_PROCESSES", "2")
    trainer = DistributedTrainer.from_settings()
    assert (trainer.launcher, trainer.process_count()) == ("torchrun", 2)
    with pytest.raises(dg.Failure, match="cannot run in process"):
        DistributedTrainer(launcher="inprocess", processes=2).train(None, None, None, None, "cpu")


def test_torchrun_command_runs_the_pipes_child_on_n_processes():
    command = DistributedTrainer(launcher="torchrun", processes=2).torchrun_command("cpu")
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert command[5:7] == ["-m", "pipelines.ddp_train"] and command[-4:] == ["--device", "cpu", "--threads", "1"]


def test_an_unknown_launcher_says_which_exist():
    with pytest.raises(dg.Failure, match="TRAINING_LAUNCHER to one of"):
        DistributedTrainer(launcher="slurm").train(None, None, None, None, "cpu")


def test_k8s_trainer_pod_carries_the_gpu_needs(monkeypatch):
    """The pod `PipesK8sClient` would create, built by dagster-k8s from our arguments and validated
    against the Kubernetes schema: GPU limits, node selector, tolerations, one process per GPU."""
    import kubernetes
    import kubernetes_validate
    from dagster_k8s.pipes import build_pod_body

    toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    monkeypatch.setenv("TRAINING_LAUNCHER", "k8s")
    monkeypatch.setenv("TRAINING_IMAGE", "registry.example/flight-delay-trainer:1")
    monkeypatch.setenv("TRAINING_GPUS", "2")
    monkeypatch.setenv("TRAINING_NODE_SELECTOR", '{"pool": "gpu"}')
    monkeypatch.setenv("TRAINING_TOLERATIONS", f'[{{"key": "{GPU_RESOURCE}", "operator": "Exists", "effect": "NoSchedule"}}]')
    monkeypatch.setenv("TRAINING_MEMORY", "24Gi")
    monkeypatch.setenv("TRAINING_SERVICE_ACCOUNT", "flight-delays-trainer")
    monkeypatch.setenv("K8S_ENV_SECRETS", "flight-delays-secrets")
    arguments = DistributedTrainer.from_settings().k8s_run_arguments("cpu")

    pod = build_pod_body("dagster-pipes-trainer", arguments["image"], arguments["command"],
                         {"DAGSTER_PIPES_CONTEXT": "e30="}, None, arguments["base_pod_spec"])
    manifest = {"apiVersion": "v1", "kind": "Pod", **kubernetes.client.ApiClient().sanitize_for_serialization(pod)}
    kubernetes_validate.validate(manifest, "1.30", strict=True)
    container = manifest["spec"]["containers"][0]
    assert container["resources"] == {"limits": {GPU_RESOURCE: "2", "memory": "24Gi"}, "requests": {"memory": "24Gi"}}
    assert container["envFrom"] == [{"secretRef": {"name": "flight-delays-secrets"}}], "the pod reaches S3 and MLflow"
    assert manifest["spec"]["serviceAccountName"] == "flight-delays-trainer"
    assert manifest["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert manifest["spec"]["tolerations"] == [toleration]
    assert container["image"] == "registry.example/flight-delay-trainer:1"
    assert "--nproc_per_node=2" in container["command"] and container["command"][-4:-2] == ["--device", "cuda"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert training_pod_spec(TorchCompute())["containers"][0].get("resources") is None


def test_torchrun_runs_one_process_per_gpu_of_its_pod():
    """Under the k8s executor with TRAINING_LAUNCHER=torchrun, the step pod's GPUs set the process count."""
    assert DistributedTrainer(launcher="torchrun", gpus=2).process_count() == 2
    assert DistributedTrainer(launcher="torchrun", processes=3).process_count() == 3
    assert DistributedTrainer(launcher="inprocess", gpus=2).process_count() == 1


@pytest.mark.slow
def test_a_killed_run_worker_takes_its_ddp_workers_along(tmp_path):
    """The torchrun command runs under the guard: SIGKILL the process that launched it (as the OOM killer
    would a run worker) and no worker survives, even one in a session of its own (as torchrun starts them)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from resources.processes import guarded

    pids = tmp_path / "worker.pid"
    worker = f"setsid sh -c 'echo $$ > {pids}; exec sleep 120' & wait"
    launcher = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time; "
        f"subprocess.Popen({guarded(['sh', '-c', worker])!r}); time.sleep(120)"
    )])
    deadline = time.monotonic() + 20
    while not (pids.exists() and pids.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    worker_pid = int(pids.read_text())
    os.kill(worker_pid, 0)  # alive
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(worker_pid, signal.SIGKILL)
        pytest.fail(f"the worker {worker_pid} outlived its killed launcher")


def test_k8s_without_an_image_says_what_to_set():
    with pytest.raises(dg.Failure, match="TRAINING_IMAGE"):
        DistributedTrainer(launcher="k8s", gpus=1).k8s_run_arguments("cuda")
