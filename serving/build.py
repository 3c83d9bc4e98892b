"""Package a saved model unit as a BentoML model and build the Bento around it.

Run as ``python -m serving.build --unit DIR --unit-sha256 HEX --model-version V --run-id R`` (the
``bento`` asset does, in a subprocess with ``BENTOML_HOME`` set: BentoML resolves its stores once per
process). The unit is verified against the digest recorded at registration before anything is saved,
and the digest goes into the BentoML model's metadata (``unit_sha256``), where the service verifies it
again at load. Prints one JSON line: the Bento tag, the BentoML model tag, the Bento's size and path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BENTOFILE = PROJECT_ROOT / "deploy" / "bentofile.yaml"
DIGEST_KEY = "unit_sha256"


def model_tag_for(model_version: str, run_id: str) -> str:
    """One BentoML model per registry version *and* run (a recreated registry reuses version numbers)."""
    from serving.service import MODEL_NAME

    return f"{MODEL_NAME}:v{model_version}-{run_id[:12]}"


def save_unit(unit_dir: Path, unit_sha256: str, model_version: str, run_id: str, model_uri: str) -> str:
    """Verify the unit, copy it into the BentoML model store (idempotent) and return the model's tag.

    A stored model of the same tag is reused only if it carries the same digest and its files still
    match it; otherwise it is replaced.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    from ml.model import UnitIntegrityError, verify_unit

    verify_unit(unit_dir, unit_sha256)
    tag = model_tag_for(model_version, run_id)
    try:
        existing = bentoml.models.get(tag)
    except NotFound:
        existing = None
    if existing is not None:
        try:
            if existing.info.metadata.get(DIGEST_KEY) != unit_sha256:
                raise UnitIntegrityError(f"{tag}: stored with another digest")
            verify_unit(existing.path_of("unit"), unit_sha256)
            return str(existing.tag)
        except UnitIntegrityError:
            bentoml.models.delete(tag)
    with bentoml.models.create(
        tag,
        labels={"source": "mlflow"},
        metadata={"mlflow_version": model_version, "mlflow_run_id": run_id, "mlflow_model_uri": model_uri,
                  DIGEST_KEY: unit_sha256},
    ) as model:
        shutil.copytree(unit_dir, model.path_of("unit"))
    return tag


def build_bento(model_tag: str, model_version: str) -> dict:
    """Build the Bento with exactly ``model_tag`` packed in it."""
    import bentoml

    os.environ["FLIGHT_DELAY_MODEL_TAG"] = model_tag
    bento = bentoml.bentos.build_bentofile(
        str(BENTOFILE), build_ctx=str(PROJECT_ROOT), labels={"model_version": model_version}
    )
    return {
        "bento_tag": str(bento.tag),
        "model_tag": model_tag,
        "size_bytes": sum(p.stat().st_size for p in Path(bento.path).rglob("*") if p.is_file()),
        "path": str(bento.path),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--unit", required=True, type=Path, help="folder of a saved ml.model.ModelUnit")
    parser.add_argument("--unit-sha256", required=True, help="the digest recorded for the unit at registration")
    parser.add_argument("--model-version", required=True, help="the registry version of the unit")
    parser.add_argument("--run-id", required=True, help="the MLflow run that produced it")
    parser.add_argument("--model-uri", default="", help="where the registry keeps it (metadata only)")
    args = parser.parse_args(argv)
    from ml.model import UnitIntegrityError

    try:
        tag = save_unit(args.unit, args.unit_sha256, args.model_version, args.run_id, args.model_uri)
    except UnitIntegrityError as exc:
        print(f"serving.build: refused: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(build_bento(tag, args.model_version)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
