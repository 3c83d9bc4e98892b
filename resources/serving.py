"""Serving: where Bentos are built and kept (BentoML's home) and how a built Bento is served."""

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from resources.processes import free_port, serving


class BentoServing(dg.ConfigurableResource):
    """BentoML's model and Bento stores (``bentoml_home``) and the prediction log the service writes.

    BentoML resolves its home once per process, so builds and servers run as subprocesses with
    ``BENTOML_HOME`` set: the Dagster process never imports bentoml.
    """

    bentoml_home: str
    prediction_log_url: str
    python: str = sys.executable

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            **os.environ,
            "BENTOML_HOME": self.bentoml_home,
            "BENTOML_DO_NOT_TRACK": "true",
            "PREDICTION_LOG_URL": self.prediction_log_url,
            **overrides,
        }

    def build(self, unit_dir: Path, model_version: str, run_id: str, model_uri: str) -> dict:
        """Save the unit as a BentoML model and build the Bento (``serving/build.py``); its JSON summary."""
        command = [
            self.python, "-m", "serving.build", "--unit", str(unit_dir),
            "--model-version", model_version, "--run-id", run_id, "--model-uri", model_uri,
        ]
        done = subprocess.run(command, env=self.env(), capture_output=True, text=True, cwd=_project_root())
        if done.returncode != 0:
            raise RuntimeError(f"bento build failed (exit {done.returncode}): {done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def delete(self, bento_tag: str) -> bool:
        """Remove a Bento (one that failed or missed its parity check must never be 'latest'); False if that failed."""
        done = subprocess.run([self._bentoml(), "delete", "-y", bento_tag], env=self.env(), capture_output=True, text=True)
        if done.returncode != 0:
            dg.get_dagster_logger().error(f"could not delete Bento {bento_tag}: {done.stderr[-500:]}")
        return done.returncode == 0

    @contextlib.contextmanager
    def serve(self, bento_tag: str, log: Path, prediction_log_url: str | None = None) -> Iterator[str]:
        """Serve a built Bento on 127.0.0.1 (a real ``bentoml serve`` process); yield its base URL."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = self.env(**({"PREDICTION_LOG_URL": prediction_log_url} if prediction_log_url else {}))
        env.pop("SERVICE_API_TOKEN", None)
        command = [self._bentoml(), "serve", bento_tag, "--host", "127.0.0.1", "-p", str(port)]
        with serving(command, f"{url}/readyz", log, timeout_s=120, env=env):
            yield url

    def _bentoml(self) -> str:
        return str(Path(self.python).parent / "bentoml")


def _project_root() -> str:
    return str(Path(__file__).resolve().parents[1])
