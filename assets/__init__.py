"""Software-defined assets: thin Dagster layers over ``ml/``.

Dagster marks ``backfill_policy`` (single-run backfills, which every daily asset here relies on) as
beta and the package loader as preview, and warns on each use at import. We pin dagster, so the
warnings say nothing to a user of this project: they are silenced for every importer of the code
location (``make serve``'s ``verified-bento`` included), not only the root definitions.
"""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)
