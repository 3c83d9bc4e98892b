"""Who runs `delay_model`'s training: this process, torchrun on this machine, or torchrun in a GPU pod.

The three launchers train with the same `ml.train.train_model` and give the asset the same
`TrainResult`; the two torchrun ones go through Dagster Pipes (`pipelines/ddp_train.py` is the child):
the window goes out as Parquet, the unit comes back with its SHA-256 (verified before it is loaded),
and the child's logs, figures and history come back as Pipes messages.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg

from infra.settings import PROJECT_ROOT
from resources.compute import TorchCompute
from resources.kubernetes import training_pod_spec
from resources.processes import guarded
from resources.storage import LakeStorage

if TYPE_CHECKING:
    import pandas as pd

    from ml.train import TrainConfig, TrainResult

LAUNCHERS = ("inprocess", "torchrun", "k8s")
CHILD_MODULE = "pipelines.ddp_train"


@dataclass
class LaunchedTraining:
    """What a launcher gives back: the training result, how many processes made it, what the child reported."""

    result: TrainResult
    processes: int
    launcher: str
    reported: dict[str, Any] = field(default_factory=dict)


class DistributedTrainer(dg.ConfigurableResource):
    """Launches `delay_model`'s training: in process (default), or data-parallel with torchrun via Pipes.

    ``torchrun``: ``python -m torch.distributed.run --standalone --nproc_per_node=<processes>`` through
    `dg.PipesSubprocessClient`, the window in a temporary folder. ``k8s``: the same command in a pod of
    ``image`` through `dagster_k8s.PipesK8sClient`, with `training_pod_spec` (one process per GPU when
    GPUs are asked for), the window and unit exchanged through ``staging`` (the lake, by default).
    """

    launcher: str = "inprocess"
    processes: int = 1
    threads_per_process: int = 1
    """torch threads in each DDP process: processes × threads should not exceed the cores."""
    image: str | None = None
    namespace: str | None = None
    gpus: int = 0
    memory: str | None = None
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    service_account: str | None = None
    """The trainer pod's service account (its cloud role reaches the staging area); None: the namespace's default."""
    env_secrets: list[str] = []
    """Secrets whose keys become the trainer pod's environment (``K8S_ENV_SECRETS``, as for the run's pods)."""
    staging: LakeStorage | None = None

    @classmethod
    def from_settings(cls) -> DistributedTrainer:
        """The trainer from ``TRAINING_*`` settings; its k8s staging area in the lake's settings."""
        from infra import settings

        training = settings.training()
        compute = TorchCompute.from_settings()
        return cls(
            launcher=training.launcher, processes=training.processes,
            image=training.image, namespace=training.namespace, gpus=compute.gpus,
            memory=compute.memory, node_selector=compute.node_selector, tolerations=compute.tolerations,
            service_account=training.service_account, env_secrets=settings.executor().env_secrets,
            staging=LakeStorage.from_settings(settings.lake().under(training.staging_url)),
        )

    def train(
        self, context: dg.AssetExecutionContext, train: pd.DataFrame, validation: pd.DataFrame,
        config: TrainConfig, device: str,
    ) -> LaunchedTraining:
        """Train on ``train``, stop early on ``validation``, with the configured launcher."""
        if self.launcher not in LAUNCHERS:
            raise dg.Failure(
                f"delay_model: training launcher {self.launcher!r} is unknown; set TRAINING_LAUNCHER to one of {LAUNCHERS}",
                allow_retries=False,
            )
        if self.launcher == "inprocess":
            from ml.train import train_model

            if self.processes > 1:
                raise dg.Failure(
                    f"delay_model: {self.processes} training processes cannot run in process; "
                    "set TRAINING_LAUNCHER=torchrun (or leave it unset) for DDP, or TRAINING_PROCESSES=1",
                    allow_retries=False,
                )
            return LaunchedTraining(train_model(train, validation, config, device=device), 1, self.launcher)
        with self._exchange(context) as (root, storage_options):
            unit_uri = f"{root}/unit"
            _write_window(train, validation, f"{root}/window.parquet", storage_options)
            extras = {
                "window_uri": f"{root}/window.parquet", "unit_uri": unit_uri,
                "storage_options": storage_options, "train_config": _flat_config(config),
            }
            if self.launcher == "torchrun":
                invocation = dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT)).run(
                    # Under the guard: torchrun's workers run in sessions of their own, and a SIGKILLed
                    # run worker would leave them training; the guard dies with it and takes them along.
                    context=context, command=guarded(self.torchrun_command(device)), extras=extras
                )
            else:
                from dagster_k8s import PipesK8sClient

                invocation = PipesK8sClient().run(context=context, extras=extras, **self.k8s_run_arguments(device))
            return self._collect(invocation, unit_uri, storage_options)

    def process_count(self) -> int:
        """Processes per run under torchrun: one per GPU when the pod asks for GPUs, else ``processes``."""
        return self.gpus if self.launcher != "inprocess" and self.gpus else max(1, self.processes)

    def pod_needs(self) -> TorchCompute:
        """The trainer pod's needs in the form the step's tag is built from (resources/kubernetes.py)."""
        return TorchCompute(gpus=self.gpus, memory=self.memory, node_selector=self.node_selector,
                            tolerations=self.tolerations)

    def torchrun_command(self, device: str, python: str | None = None) -> list[str]:
        """The torchrun command line of the Pipes child (``python``: the image's on k8s, this one here)."""
        return [
            python or sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={self.process_count()}", "-m", CHILD_MODULE,
            "--device", device, "--threads", str(self.threads_per_process),
        ]

    def k8s_run_arguments(self, device: str) -> dict[str, Any]:
        """Keyword arguments of `PipesK8sClient.run` besides context and extras: image, command, pod spec."""
        if not self.image:
            raise dg.Failure("delay_model: TRAINING_LAUNCHER=k8s needs TRAINING_IMAGE (the trainer image)", allow_retries=False)
        arguments: dict[str, Any] = {
            "image": self.image,
            "command": self.torchrun_command("cuda" if self.gpus else device, python="python"),
            "base_pod_spec": training_pod_spec(self.pod_needs(), self.service_account, self.env_secrets),
        }
        if self.namespace:
            arguments["namespace"] = self.namespace
        return arguments

    @contextlib.contextmanager
    def _exchange(self, context: dg.AssetExecutionContext) -> Iterator[tuple[str, dict[str, Any]]]:
        """Where parent and child exchange the window and the unit, removed afterwards.

        A temporary folder for torchrun here; for a pod, a run-scoped prefix of ``staging``.
        """
        if self.launcher == "torchrun":
            with tempfile.TemporaryDirectory(prefix="delay-model-ddp-") as folder:
                yield folder, {}
            return
        if self.staging is None:
            raise dg.Failure("delay_model: TRAINING_LAUNCHER=k8s needs a staging area the pod can reach "
                             "(TRAINING_STAGING_URL)", allow_retries=False)
        import fsspec

        root = self.staging.uri(f"delay_model/{context.run_id}")
        options = self.staging.storage_options()
        try:
            yield root, options
        finally:
            fs, path = fsspec.core.url_to_fs(root, **options)
            if fs.exists(path):
                fs.rm(path, recursive=True)

    def _collect(self, invocation, unit_uri: str, storage_options: dict[str, Any]) -> LaunchedTraining:
        """The unit the child saved at ``unit_uri`` (verified against its reported SHA-256), history and figures."""
        import fsspec

        from ml.model import UNIT_FILES, ModelUnit
        from ml.train import EpochStats, TrainResult

        messages = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and "unit_sha256" in m]
        if not messages:
            raise dg.Failure("delay_model: the distributed trainer ended without reporting a model unit; "
                             "see the step's logs for the trainer's output", allow_retries=False)
        report = messages[-1]
        reported = dict(invocation.get_materialize_result().metadata)
        with tempfile.TemporaryDirectory(prefix="delay-model-unit-") as local:
            fs, root = fsspec.core.url_to_fs(unit_uri, **storage_options)
            for name in UNIT_FILES:
                fs.get_file(f"{root.rstrip('/')}/{name}", f"{local}/{name}")
            unit = ModelUnit.load(local, expected_digest=report["unit_sha256"])
        result = TrainResult(
            unit=unit, history=[EpochStats(**stats) for stats in report["history"]],
            best_epoch=report["best_epoch"], device=report["device"],
        )
        processes = int(reported["train_processes"].value) if "train_processes" in reported else self.process_count()
        return LaunchedTraining(result, processes, self.launcher, reported)


def _write_window(train: pd.DataFrame, validation: pd.DataFrame, uri: str, storage_options: dict[str, Any]) -> None:
    import pandas as pd

    pd.concat([train, validation]).to_parquet(uri, index=False, storage_options=storage_options or None)


def _flat_config(config: TrainConfig) -> dict[str, Any]:
    """The training config as JSON for the child (tuples become lists; the child turns them back)."""
    return asdict(config)
