"""The set-up bench scripts share: the project on the import path, scratch places, the services they start.

A script runs as ``python bench/<name>.py``, so ``bench/`` is first on ``sys.path`` and ``import _bootstrap``
comes before any project import; importing it puts the project root on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def scratch_folder(prefix: str) -> Path:
    """A new temporary folder the bench keeps (its path is printed, for a look afterwards)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def scratch_lake(prefix: str) -> Path:
    """A new ``DATA_DIR`` for this process: the lake, Dagster's and MLflow's files all under it, never the
    ones the environment names (``LAKE_URL`` and ``MLFLOW_TRACKING_URI`` unset)."""
    root = scratch_folder(prefix)
    os.environ["DATA_DIR"] = str(root)
    os.environ.pop("LAKE_URL", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return root


def bento_env(workdir: Path, *python_paths: Path) -> dict[str, str]:
    """The environment of a BentoML service (and of this process's store) kept under ``workdir``:
    its store, its prediction log, the project (and ``python_paths``) importable, no telemetry."""
    env = {**os.environ, "BENTOML_HOME": str(workdir / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "PREDICTION_LOG_URL": str(workdir / "predictions"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *map(str, python_paths), *filter(None, [os.environ.get("PYTHONPATH")])])}
    os.environ["BENTOML_HOME"] = env["BENTOML_HOME"]
    return env


def redis_url() -> str:
    """The state store's Redis: ``REDIS_URL``, else a local one."""
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def stream_processor(nats_url: str, namespace: str, unit_dir: Path, idle_exit_s: int) -> subprocess.Popen:
    """``streaming.processor`` on its own, scoring with ``unit_dir`` into the store's ``namespace``; it exits
    after ``idle_exit_s`` without events. No prediction log: the bench times the stream, not the log."""
    from ml.model import unit_digest

    env = {**os.environ, "NATS_URL": nats_url, "REDIS_URL": redis_url(), "STREAM_STATE_NAMESPACE": namespace,
           "STREAM_PREDICTION_LOG": "false"}
    return subprocess.Popen([sys.executable, "-m", "streaming.processor", "--unit-dir", str(unit_dir),
                             "--unit-digest", unit_digest(unit_dir), "--idle-exit-s", str(idle_exit_s)], env=env)
