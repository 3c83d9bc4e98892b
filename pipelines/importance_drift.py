"""``python -m pipelines.importance_drift``: how the champions' feature-group importance moved between versions.

Reads, through the registry resource, the permutation importance each promoted version logged with its
training run (``delay_model``, ``ml/importance.py``) and prints it side by side, oldest champion first
(``--last N``: the newest N). ``MLFLOW_TRACKING_URI`` / ``DATA_DIR`` pick the registry, as for the pipeline.
"""

from __future__ import annotations

import argparse
import sys


def report(registry, last: int | None = None) -> str:
    """The Markdown table of the champions' importance, or a sentence saying why there is none."""
    from ml.importance import drift_table

    versions = registry.champion_history()
    if last:
        versions = versions[-last:]
    importance = {v: registry.importance(v) for v in versions}
    known = {v: i for v, i in importance.items() if i is not None}
    if not known:
        return "no champion has logged its feature importance yet"
    skipped = [v for v in versions if v not in known]
    note = f"\n\n(v{', v'.join(skipped)}: no importance logged)" if skipped else ""
    return drift_table(known) + note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flightdelay importance-drift", description=__doc__.split("\n")[0])
    parser.add_argument("--last", type=int, default=None, help="only the newest N champions")
    args = parser.parse_args(argv)
    from resources import mlflow_registry_from_env

    print(report(mlflow_registry_from_env(), args.last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
