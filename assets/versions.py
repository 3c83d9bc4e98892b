"""Asset code versions, derived from the versioned `ml/` modules an asset calls (`infra/code_versions.py`).

Each such module declares `VERSION = "<n>"`, bumped when its output changes (the record in
`tests/module_versions.json` makes a logic change without a bump fail the tests). An asset's
`code_version` names the versions of every module it reaches, found in the source (never listed by
hand), so Dagster marks partitions built by older logic as stale.
"""

import dagster as dg

from infra.code_versions import code_version, versioned_modules_of_service, versioned_modules_reached


def derived_code_version(asset: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """``asset`` with the code version of every versioned `ml/` module its function calls.

    Stack it above ``@dg.asset``. What counts as called, read from the source (nothing is imported):
    the ``ml`` imports in the function and in the same module's functions it calls, the `ml` imports
    of the resource classes it is given, and every `ml` module those import in turn. A change to the
    verdict (``ml.promotion``, called through ``ml.evaluation``) so marks the model stale.
    """
    called = versioned_modules_reached(asset.op.compute_fn.decorated_fn)
    if not called:
        return asset  # it calls no versioned module: its declared code_version stands
    version = code_version(*called)
    return asset.map_asset_specs(lambda spec: spec.replace_attributes(code_version=version))


def service_code_version(module: str) -> str:
    """The code version of the versioned `ml` modules a service module reaches (``"streaming.processor"``):
    for an asset that reads what that service computed."""
    return code_version(*versioned_modules_of_service(module))


