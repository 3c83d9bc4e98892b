"""A stand-in asset with a real asset's key and one check's result: sensors read check evaluations by key."""

import dagster as dg


def check_result_stand_in(asset: str, check: str, passed: bool, description: str) -> dg.AssetsDefinition:
    """An asset named ``asset`` that materializes and reports ``check`` as ``passed``."""

    @dg.asset(name=asset, check_specs=[dg.AssetCheckSpec(check, asset=asset)])
    def stand_in():
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(check_name=check, passed=passed, description=description)

    return stand_in
