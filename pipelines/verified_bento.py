"""``python -m pipelines.verified_bento``: print the tag of the newest Bento whose parity check passed.

What ``make serve`` and deployments serve: the tag recorded by the last `bento` materialization in
the Dagster instance (``DAGSTER_HOME``), never BentoML's ``latest`` (which a run killed mid-build
can leave pointing at a Bento nobody checked). Exit 1, saying what to do, when there is none or it
is missing from ``BENTOML_HOME``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def verified_bento_tag(instance) -> str | None:
    """The newest verified Bento's tag in ``instance``, None when no `bento` run has passed."""
    from assets.inference import verified_bento_tags

    newest = verified_bento_tags(instance, keep=1)
    return newest[0]["bento_tag"] if newest else None


def bento_path(bentoml_home: str, tag: str) -> Path:
    name, _, version = tag.partition(":")
    return Path(bentoml_home) / "bentos" / name / version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flightdelay verified-bento", description=__doc__.split("\n")[0])
    parser.parse_args(argv)

    from pipelines.runner import instance_from_env
    from infra import settings

    with instance_from_env() as instance:
        tag = verified_bento_tag(instance)
    if tag is None:
        print("no verified Bento in this Dagster instance (DAGSTER_HOME): run `make run`, or materialize "
              "`bento` and let its parity check pass", file=sys.stderr)
        return 1
    home = settings.project().bentoml_home
    if not bento_path(home, tag).is_dir():
        print(f"the verified Bento {tag} is not in BENTOML_HOME={home}: point BENTOML_HOME at the store the "
              "`bento` run used, or materialize `bento` again", file=sys.stderr)
        return 1
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
