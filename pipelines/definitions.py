"""The code location's one root: it loads what each package defines and merges it, nothing more."""

import warnings

import dagster as dg

# The package loader and BackfillPolicy are marked preview/beta; we pin dagster, so silence the noise.
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)

import assets
import resources
import sensors
from pipelines import jobs, schedules



def build_definitions() -> dg.Definitions:
    """Everything, with resources configured from the environment as it is now."""
    return dg.Definitions.merge(
        dg.load_definitions_from_package_module(assets),
        dg.load_definitions_from_package_module(sensors),
        dg.load_definitions_from_modules([jobs, schedules]),
        resources.build_defs(),
        # Steps run in the run's own process: a child process per step costs ~1.8 s here, far more
        # than our steps. A Kubernetes deployment swaps in its executor in deploy/.
        dg.Definitions(executor=dg.in_process_executor),
    )


defs = build_definitions()
