"""Typed values handed from one asset to the next, as JSON in the lake: one file per run.

For small records (a registered `Candidate`), not tables: the value is a pydantic model, written with
``model_dump_json`` and read back with the input's own type, so the downstream asset gets the same typed
value whichever process or pod it runs in, never metadata fished back out of the instance.
"""


import dagster as dg
from pydantic import BaseModel

from resources.parquet_io import WAREHOUSE_PREFIX, producing_run
from resources.storage import LakeStorage


def value_key(asset: dg.AssetKey, run_id: str) -> str:
    """``warehouse/<asset>/<run_id>.json``: beside the asset's tables, per run, so two runs never share one."""
    return f"{WAREHOUSE_PREFIX}/{'/'.join(asset.path)}/{run_id}.json"


class LakeValueIOManager(dg.ConfigurableIOManager):
    """Stores a pydantic value per run in the lake; loads the producing run's value as the input's type."""

    storage: LakeStorage

    def handle_output(self, context: dg.OutputContext, obj: BaseModel) -> None:
        if not isinstance(obj, BaseModel):
            raise TypeError(f"{context.asset_key.to_user_string()}: LakeValueIOManager stores pydantic values, "
                            f"got {type(obj).__name__}")
        self.storage.write_bytes(value_key(context.asset_key, context.run_id), obj.model_dump_json().encode())

    def load_input(self, context: dg.InputContext) -> BaseModel:
        value_type = context.dagster_type.typing_type
        if not (isinstance(value_type, type) and issubclass(value_type, BaseModel)):
            raise TypeError(f"{context.asset_key.to_user_string()}: annotate the input with its pydantic type")
        key = value_key(context.asset_key, producing_run(context))
        try:
            return value_type.model_validate_json(self.storage.read_bytes(key))
        except FileNotFoundError:
            raise FileNotFoundError(f"{context.asset_key.to_user_string()}: no value at {self.storage.uri(key)}; "
                                    "materialize it first") from None

