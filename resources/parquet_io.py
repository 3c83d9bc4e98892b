"""Parquet partitions in the lake, one file per partition, read as pandas or Dask."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from upath import UPath

from resources.storage import LakeStorage


WAREHOUSE_PREFIX = "warehouse"


def warehouse_key(asset: str, partition: str | None = None) -> str:
    """The lake key where the IO manager keeps an asset (one file per partition)."""
    return f"{WAREHOUSE_PREFIX}/{asset}/{partition}.parquet" if partition else f"{WAREHOUSE_PREFIX}/{asset}.parquet"


def read_warehouse_frame(storage: LakeStorage, asset: str, partition: str | None = None):
    """A stored asset partition as pandas, or None when it does not exist (never made, or held back)."""
    import io

    import pandas as pd

    try:
        return pd.read_parquet(io.BytesIO(storage.read_bytes(warehouse_key(asset, partition))))
    except FileNotFoundError:
        return None


class PartitionedParquetIOManager(dg.UPathIOManager):
    """Writes ``{partition: DataFrame}`` as ``<asset>/<partition>.parquet`` and reads them back.

    A step that covers a range of partitions (single-run backfill) returns one frame per partition;
    a partition mapped to ``None`` was held back by a blocking check: any older file at its path is
    removed, so downstream can never read rows that failed validation. A partition left out of the
    mapping is left as it is. Local files are written to a temporary name and renamed, so readers
    never see half a file (S3 puts are atomic already). An input annotated as a Dask
    DataFrame is read lazily with ``dd.read_parquet`` over the partitions' files.
    """

    extension = ".parquet"

    def __init__(self, base_path: UPath, storage_options: Mapping[str, Any] | None = None):
        super().__init__(base_path=base_path)
        self._storage_options = dict(storage_options or {})

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        if _is_dask_frame_type(type(obj)):
            obj = obj.compute()
        if path.protocol in ("", "file", "local"):
            import os

            target = str(path.path)
            partial = f"{target}.partial-{os.getpid()}"
            obj.to_parquet(partial, index=False)
            os.replace(partial, target)
            return
        with path.open("wb") as handle:
            obj.to_parquet(handle, index=False)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        import pandas as pd

        try:
            with path.open("rb") as handle:
                return pd.read_parquet(handle)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()}: no Parquet at {path}. The partition was "
                "never materialized, or a blocking check held it back (see quarantine/ in the lake)."
            ) from None

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None and not context.has_asset_partitions:
            path = self._get_path(context)
            if self.path_exists(path):
                self.unlink(path)  # held back: never leave an older, stale table in its place
            return None
        if not (context.has_asset_partitions and isinstance(obj, Mapping)):
            return super().handle_output(context, obj)
        paths = self._get_paths_for_partitions(context)
        unknown = set(obj) - set(paths)
        if unknown:
            raise ValueError(f"{context.asset_key.to_user_string()}: output for partitions {sorted(unknown)} not in this run")
        written, removed, rows = 0, 0, 0
        for partition, path in paths.items():
            if partition not in obj:
                continue  # nothing new arrived for it: whatever is stored stays
            frame = obj[partition]
            if frame is None:
                if self.path_exists(path):
                    self.unlink(path)
                    removed += 1
                continue
            self.make_directory(path.parent)
            self.dump_to_path(context, frame, path)
            written += 1
            rows += len(frame)
        context.add_output_metadata(
            {
                "partitions_written": written,
                "stale_files_removed": removed,
                "dagster/row_count": rows,
                "path": dg.MetadataValue.path(str(self._get_path_without_extension(context))),
            }
        )

    def load_input(self, context: dg.InputContext) -> Any:
        annotation = getattr(context.dagster_type, "typing_type", None)
        if context.has_asset_partitions and _is_dask_frame_type(annotation):
            import dask.dataframe as dd

            paths = self._get_paths_for_partitions(context)
            missing = [key for key, path in paths.items() if not self.path_exists(path)]
            if missing:
                raise FileNotFoundError(
                    f"{context.asset_key.to_user_string()}: partitions {missing[:5]} have no Parquet "
                    "(never materialized, or held back by a blocking check)"
                )
            return dd.read_parquet(
                [str(p) for p in paths.values()], storage_options=self._storage_options or None
            )
        return super().load_input(context)


def _is_dask_frame_type(annotation: Any) -> bool:
    module = getattr(annotation, "__module__", "") or ""
    return module.startswith("dask") and getattr(annotation, "__name__", "") == "DataFrame"


class LakeParquetIOManager(dg.ConfigurableIOManagerFactory):
    """Parquet IO manager over the lake's ``warehouse/`` prefix, local or S3."""

    storage: LakeStorage
    prefix: str = WAREHOUSE_PREFIX

    def create_io_manager(self, context: dg.InitResourceContext) -> PartitionedParquetIOManager:
        return PartitionedParquetIOManager(
            base_path=self.storage.upath(self.prefix),
            storage_options=self.storage.storage_options(),
        )
