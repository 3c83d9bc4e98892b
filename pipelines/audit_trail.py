"""``python -m pipelines.audit_trail <model version>``: a model version's life, from the audit log.

Trained (its verdict and evidence), promoted (over which version, by whom, why), deployed as Bentos and
exported, the batches it served (summarised: count, rows, callers by token id, first and last), and
how its reign ended: superseded by a newer champion, or rolled back. Reads ``AUDIT_URL``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from infra import audit


@dataclass
class ServedSummary:
    batches: int = 0
    rows: int = 0
    callers: set[str] = field(default_factory=set)
    first: str | None = None
    last: str | None = None


@dataclass
class ModelTrail:
    """What the audit log says about one model version, oldest first."""

    version: str
    events: list[dict]
    """Its training, promotions, rollbacks, Bentos and exports, and the moves that ended its reign."""
    served: ServedSummary

    @property
    def kinds(self) -> list[str]:
        return [label for label, _ in (describe(e, self.version) for e in self.events)]


def model_trail(records: Sequence[dict], version: str) -> ModelTrail:
    """The records of ``version`` (``records`` as ``AuditLog.records`` returns them, oldest first)."""
    version = str(version)
    events, served, bentos = [], ServedSummary(), set()
    for r in records:
        kind = r["event"]
        if kind == audit.BATCH_SERVED:
            if str(r.get("model_version")) == version:
                served.batches += 1
                served.rows += int(r.get("rows", 0))
                served.callers.add(r.get("token_id", "?"))
                served.first = served.first or r["at"]
                served.last = r["at"]
            continue
        if kind == audit.BENTO_EXPORTED:
            if r.get("bento_tag") in bentos:
                events.append(r)
            continue
        if str(r.get("model_version")) == version or str(r.get("from_version")) == version:
            events.append(r)
            if kind == audit.BENTO_DEPLOYED:
                bentos.add(r.get("bento_tag"))
    return ModelTrail(version=version, events=events, served=served)


def describe(r: dict, version: str) -> tuple[str, str]:
    """A label (what happened to ``version``) and one line of detail for a record of its trail."""
    kind, evidence = r["event"], r.get("evidence") or {}
    if kind == audit.MODEL_TRAINED:
        verdict = "passed its checks" if evidence.get("passed_checks") else f"rejected: {evidence.get('rejection_reason')}"
        return "trained", (f"{verdict}; test ROC AUC {evidence.get('test_roc_auc')} vs baseline "
                           f"{evidence.get('baseline_test_roc_auc')} and champion v{evidence.get('evaluated_against') or 'none'} "
                           f"{evidence.get('champion_test_roc_auc')}; mlflow run {evidence.get('mlflow_run_id')}")
    if kind in (audit.MODEL_PROMOTED, audit.MODEL_ROLLED_BACK, audit.CHAMPION_MOVED):
        if str(r.get("to_version")) != version:
            label = "rolled back" if kind == audit.MODEL_ROLLED_BACK else "superseded"
            return label, f"champion v{version} → v{r.get('to_version')}: {r.get('reason')}"
        label = {audit.MODEL_PROMOTED: "promoted", audit.MODEL_ROLLED_BACK: "restored by rollback",
                 audit.CHAMPION_MOVED: "made champion outside Dagster"}[kind]
        over = f"over v{r['from_version']}" if r.get("from_version") else "first champion"
        return label, f"{over}: {r.get('reason')}"
    if kind == audit.BENTO_DEPLOYED:
        return "deployed", f"Bento {r.get('bento_tag')} (BentoML model {r.get('bentoml_model')})"
    if kind == audit.BENTO_EXPORTED:
        return "exported", f"Bento {r.get('bento_tag')} to {r.get('export_uri')} (image {r.get('image')})"
    return kind, ""


def render(trail: ModelTrail) -> str:
    lines = [f"model version {trail.version}"]
    if not trail.events and not trail.served.batches:
        lines.append("  nothing in the audit log (unknown version, or its records are past AUDIT_RETENTION_DAYS)")
    for r in trail.events:
        label, detail = describe(r, trail.version)
        lines.append(f"  {r['at']}  {label:<22} {detail}")
        lines.append(f"  {'':<32}{'':<22} by {r['actor']}")
    s = trail.served
    if s.batches:
        lines.append(f"  served {s.batches} batches, {s.rows} rows, {len(s.callers)} caller(s) "
                     f"({', '.join(sorted(s.callers))}), {s.first} … {s.last}")
    else:
        lines.append("  served no online batches")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flightdelay audit-trail", description=__doc__.splitlines()[0])
    parser.add_argument("version", help="the registered model version (MLflow's number)")
    args = parser.parse_args(argv)
    from resources.audit import AuditTrail

    records = AuditTrail.from_settings().records()
    print(render(model_trail(records, args.version)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
