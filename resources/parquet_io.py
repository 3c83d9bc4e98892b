"""Parquet partitions in the lake, one file per partition, read as pandas or Dask."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg
from upath import UPath

from infra.settings import LakeSettings
from ml.tables import Table
from resources.storage import LakeStorage

if TYPE_CHECKING:  # pandas loads in the step, not when the code location imports the resources
    import pandas as pd


WAREHOUSE_PREFIX = "warehouse"
FOOTER_KEY = b"lake"
"""Parquet key-value metadata where the IO manager records what a file is (run, lineage, fingerprint)."""
FOOTER_ATTR = "lake"
"""``DataFrame.attrs`` entry that carries a loaded file's footer to the code that asked for it."""
RUN_SCOPED = "lake/run_scoped"
"""Definition metadata of an asset stored once per run (``<asset>/<run_id>.parquet``), never shared."""
BUILT_FROM = "built_from"
"""Footer (and materialization metadata) entry of a partition, ``{upstream: stored version}``."""
FINGERPRINT = "data_fingerprint"
"""Output metadata recorded in the footer too, so a reader can tell which window a file holds."""
_EPHEMERAL_RUN_ID = "__EPHEMERAL_RUN_ID"


@dataclass(frozen=True)
class FrameWithLineage:
    """A partition's frame and the stored upstream versions it was built from (``{upstream: version}``).

    An asset returns it in place of the bare frame for the IO manager to record ``built_from`` in
    that partition's own footer: each file then says what it was made of, never the whole range.
    """

    frame: pd.DataFrame
    built_from: Mapping[str, str | None]


def warehouse_key(asset: Table, partition: str | None = None) -> str:
    """The lake key where the IO manager keeps an asset (one file per partition)."""
    return f"{WAREHOUSE_PREFIX}/{asset}/{partition}.parquet" if partition else f"{WAREHOUSE_PREFIX}/{asset}.parquet"


class Warehouse:
    """What the IO manager stored, read with its layout: the one reader of ``warehouse/``.

    Assets read through it only what they declare as ``deps`` (so the UI's lineage is true);
    nobody else builds warehouse keys or paths.
    """

    def __init__(self, storage: LakeStorage):
        self.storage = storage

    @property
    def root(self) -> str:
        """Where every asset lives (``s3://…/warehouse`` or an absolute path), for people."""
        return self.storage.uri(WAREHOUSE_PREFIX)

    def uri(self, asset: Table, partition: str | None = None) -> str:
        """Where an asset (partition) lives, for messages: ``s3://…`` or an absolute path."""
        return self.storage.uri(warehouse_key(asset, partition) if partition else f"{WAREHOUSE_PREFIX}/{asset}")

    def frame(self, asset: Table, partition: str | None = None):
        """A stored asset partition as pandas, or None when it does not exist (never made, or held back)."""
        try:
            return frame_from_bytes(self.storage.read_bytes(warehouse_key(asset, partition)))
        except FileNotFoundError:
            return None

    def partitions(self, asset: Table) -> dict[str, str]:
        """``{partition: stored version}`` of an asset's Parquet files; writers' temporaries never count."""
        prefix = f"{WAREHOUSE_PREFIX}/{asset}/"
        found = {}
        for stored in self.storage.list(prefix):
            name = stored.key[len(prefix):]
            if "/" in name or name.startswith(".") or not name.endswith(".parquet"):
                continue
            found[name.removesuffix(".parquet")] = stored.version
        return found

    def footers(self, asset: Table, partitions: list[str]) -> dict[str, dict | None]:
        """Each partition's footer (what the IO manager recorded with it), None for a file without one.

        Reads only the Parquet footer (a few KiB) of each file, not its rows.
        """
        import fsspec
        import pyarrow.parquet as pq

        out = {}
        for partition in partitions:
            with fsspec.open(self.uri(asset, partition), "rb", **self.storage.storage_options()) as handle:
                out[partition] = _footer(pq.read_schema(handle).metadata)
        return out

    def dask_frame(self, asset: Table, partitions: list[str]):
        """The partitions' files as one lazy Dask DataFrame (read on the cluster, storage options included)."""
        import dask.dataframe as dd

        return dd.read_parquet(
            [self.uri(asset, p) for p in partitions], storage_options=self.storage.storage_options() or None
        )

    def remove(self, asset: Table, partitions: list[str]) -> list[str]:
        """Delete the stored files of ``partitions`` (e.g. older features whose rebuild failed its checks)."""
        stored = self.partitions(asset)
        removed = [p for p in partitions if p in stored]
        for partition in removed:
            self.storage.delete(warehouse_key(asset, partition))
        return removed

    def run_output(self, asset: Table, run_id: str | None = None):
        """A run-scoped asset as the run ``run_id`` stored it, or the newest whole one; None if there is none.

        A file counts only when its footer names the run its file name does (the IO manager writes
        both in one put or rename, so such a file is whole).
        """
        prefix = f"{WAREHOUSE_PREFIX}/{asset}/"
        candidates = sorted(
            (o for o in self.storage.list(prefix) if not o.key[len(prefix):].startswith(".") and o.key.endswith(".parquet")),
            key=lambda o: o.modified,
            reverse=True,
        )
        for stored in candidates:
            name = stored.key[len(prefix):].removesuffix(".parquet")
            if run_id is not None and name != run_id:
                continue
            try:
                frame = frame_from_bytes(self.storage.read_bytes(stored.key))
            except FileNotFoundError:
                continue  # pruned meanwhile
            if frame.attrs.get(FOOTER_ATTR, {}).get("run_id") == name:
                return frame
        return None


def frame_reader(lake: LakeSettings) -> Callable[[str, str | None], Any]:
    """A ``read(asset, partition)`` over the lake's settings alone, for ``ml/`` code on Dask workers.

    It pickles (a function of a frozen settings value): workers build no Dagster resource and no
    client that cannot travel; every storage setting reaches them because the value is whole.
    """
    return functools.partial(_read_with_settings, lake)


def _read_with_settings(lake: LakeSettings, asset: str, partition: str | None = None):
    import fsspec

    try:
        with fsspec.open(lake.uri(warehouse_key(asset, partition)), "rb", **lake.fsspec_options()) as handle:
            return frame_from_bytes(handle.read())
    except FileNotFoundError:
        return None


def parquet_bytes(frame, footer: Mapping[str, Any] | None = None) -> bytes:
    """The whole Parquet file as bytes (written in one put or rename), ``footer`` in its metadata.

    Serialised before anything reaches storage, so a failure while encoding leaves nothing behind.
    A frame's ``attrs`` are never written: what a file says about itself is the IO manager's to say.
    """
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if footer:
        metadata = dict(table.schema.metadata or {})
        metadata[FOOTER_KEY] = json.dumps(dict(footer), sort_keys=True, default=str).encode()
        table = table.replace_schema_metadata(metadata)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="snappy")
    return buffer.getvalue()


def frame_from_bytes(data: bytes):
    """A Parquet file as pandas, its footer (if any) in ``attrs[FOOTER_ATTR]``."""
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    frame = table.to_pandas()
    frame.attrs = {}
    footer = _footer(table.schema.metadata)
    if footer is not None:
        frame.attrs[FOOTER_ATTR] = footer
    return frame


def _footer(metadata: Mapping[bytes, bytes] | None) -> dict | None:
    raw = (metadata or {}).get(FOOTER_KEY)
    return json.loads(raw) if raw else None


class PartitionedParquetIOManager(dg.UPathIOManager):
    """Writes ``{partition: DataFrame}`` as ``<asset>/<partition>.parquet`` and reads them back.

    A step that covers a range of partitions (single-run backfill) returns one frame per partition
    (or a ``FrameWithLineage``, whose lineage goes into that file's footer); a partition mapped to ``None`` was held back by a blocking check: any older file at its path is
    removed, so downstream can never read rows that failed validation. A partition left out of the
    mapping is left as it is. Every file is serialised first and stored whole (one S3 put, or a
    hidden local temporary renamed into place), so neither a crash nor a killed process leaves a
    truncated Parquet where readers look. An asset whose definition metadata sets ``RUN_SCOPED``
    is stored per run (``<asset>/<run_id>.parquet``, the newest ``keep_run_outputs`` kept), so two
    runs never share its file. ``Warehouse`` reads the same layout back outside an input.
    """

    extension = ".parquet"

    def __init__(
        self,
        storage: LakeStorage,
        keep_run_outputs: int = 5,
    ):
        super().__init__(base_path=storage.upath(WAREHOUSE_PREFIX))
        self._storage = storage
        self._keep_run_outputs = keep_run_outputs

    def _key(self, path: UPath) -> str:
        relative = str(path)[len(str(self._base_path)):].lstrip("/")
        return f"{WAREHOUSE_PREFIX}/{relative}"

    def _get_path(self, context: dg.InputContext | dg.OutputContext) -> UPath:
        if isinstance(context, dg.OutputContext) and _run_scoped(context.definition_metadata):
            return self._get_path_without_extension(context) / f"{context.run_id}{self.extension}"
        if isinstance(context, dg.InputContext) and context.has_asset_key and context.upstream_output is not None \
                and _run_scoped(context.upstream_output.definition_metadata):
            return self._get_path_without_extension(context) / f"{producing_run(context)}{self.extension}"
        return super()._get_path(context)

    def _footer_for(self, context: dg.OutputContext, built_from: Mapping[str, str | None] | None) -> dict:
        """The run (run-scoped assets), the fingerprint (output metadata) and the partition's lineage
        (given with its frame as ``FrameWithLineage``)."""
        metadata = context.output_metadata or {}
        footer: dict[str, Any] = {}
        if _run_scoped(context.definition_metadata):
            footer["run_id"] = context.run_id
        if FINGERPRINT in metadata:
            footer[FINGERPRINT] = _plain(metadata[FINGERPRINT])
        if built_from is not None:
            footer[BUILT_FROM] = dict(built_from)
        return footer

    def _write(self, context: dg.OutputContext, obj: Any, path: UPath) -> int:
        """Store one frame (a ``FrameWithLineage``'s with its lineage) whole; its rows."""
        built_from = None
        if isinstance(obj, FrameWithLineage):
            obj, built_from = obj.frame, obj.built_from
        if _is_dask_frame_type(type(obj)):
            obj = obj.compute()
        self._storage.write_bytes(self._key(path), parquet_bytes(obj, self._footer_for(context, built_from)))
        return len(obj)

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        self._write(context, obj, path)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        try:
            with path.open("rb") as handle:
                return frame_from_bytes(handle.read())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()}: no Parquet at {path}. The partition was "
                "never materialized, or a blocking check held it back (see quarantine/ in the lake)."
            ) from None

    def _storage_metadata(self) -> dict:
        return {"bucket_versioning": self._storage.bucket_versioning()}

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None and not context.has_asset_partitions:
            path = self._get_path(context)
            if self.path_exists(path):
                self.unlink(path)  # held back: never leave an older, stale table in its place
            return None
        if not (context.has_asset_partitions and isinstance(obj, Mapping)):
            if context.has_asset_partitions:
                super().handle_output(context, obj)
            else:
                path = self._get_path(context)
                self._write(context, obj, path)
                context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})
            metadata = self._storage_metadata()
            if _run_scoped(context.definition_metadata):
                metadata["run_outputs_pruned"] = self._prune_run_outputs(context)
            context.add_output_metadata(metadata)
            return None
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
            rows += self._write(context, frame, path)
            written += 1
        context.add_output_metadata(
            {
                "partitions_written": written,
                "stale_files_removed": removed,
                "dagster/row_count": rows,
                "path": dg.MetadataValue.path(str(self._get_path_without_extension(context))),
                **self._storage_metadata(),
            }
        )

    def _prune_run_outputs(self, context: dg.OutputContext) -> int:
        """Keep the newest ``keep_run_outputs`` files of a run-scoped asset (this run's always)."""
        asset = "/".join(context.asset_key.path)
        prefix = f"{WAREHOUSE_PREFIX}/{asset}/"
        runs = sorted(
            (o for o in self._storage.list(prefix) if not o.key[len(prefix):].startswith(".")),
            key=lambda o: o.modified,
            reverse=True,
        )
        mine = f"{prefix}{context.run_id}{self.extension}"
        old = [o for o in runs if o.key != mine][max(self._keep_run_outputs - 1, 0):]
        for stored in old:
            self._storage.delete(stored.key)
        return len(old)


def producing_run(context: dg.InputContext) -> str:
    """The run whose copy of a run-scoped input to load: the upstream step's run, else the latest materialization."""
    run_id = context.upstream_output.run_id
    if run_id and run_id != _EPHEMERAL_RUN_ID:
        return run_id
    event = context.instance.get_latest_materialization_event(context.asset_key)
    if event is None:
        raise FileNotFoundError(f"{context.asset_key.to_user_string()}: never materialized; materialize it first")
    return event.run_id


def _run_scoped(definition_metadata: Mapping[str, Any] | None) -> bool:
    return bool(_plain((definition_metadata or {}).get(RUN_SCOPED)))


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def _is_dask_frame_type(annotation: Any) -> bool:
    module = getattr(annotation, "__module__", "") or ""
    return module.startswith("dask") and getattr(annotation, "__name__", "") == "DataFrame"


class LakeParquetIOManager(dg.ConfigurableIOManagerFactory):
    """Parquet IO manager over the lake's ``warehouse/`` prefix, local or S3 (``Warehouse`` reads it back)."""

    storage: LakeStorage
    keep_run_outputs: int = 5
    """Files kept per run-scoped asset (e.g. training windows), newest first."""

    def create_io_manager(self, context: dg.InitResourceContext) -> PartitionedParquetIOManager:
        return PartitionedParquetIOManager(storage=self.storage, keep_run_outputs=self.keep_run_outputs)


def materialization_record(context: dg.AssetExecutionContext, asset: str) -> tuple[str, dict] | None:
    """``(run_id, metadata)`` of ``asset`` as materialized by this run (or the run it re-executes), else its latest.

    Reading "the latest" alone would let a concurrent run's model or window slip in between steps.
    """
    key = dg.AssetKey(asset)
    run_id = context.run_id
    while run_id:
        records = context.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        for record in reversed(records):
            if record.asset_key == key and record.asset_materialization is not None:
                return run_id, record.asset_materialization.metadata
        run = context.instance.get_run_by_id(run_id)
        run_id = run.parent_run_id if run is not None else None
    event = context.instance.get_latest_materialization_event(key)
    return (event.run_id, event.asset_materialization.metadata) if event and event.asset_materialization else None


def verify_run_scoped_input(context: dg.AssetExecutionContext, asset: Table, frame) -> str:
    """The fingerprint of a loaded run-scoped ``frame`` after checking it is the ``asset`` this run stands on.

    The loaded file names the run that wrote it and its fingerprint (the footer); both must match the
    materialization this run sees, else a concurrent or restored file would be used and reported under
    another one's name.
    """
    step = context.asset_key.to_user_string()
    record = materialization_record(context, asset)
    if record is None:
        raise dg.Failure(f"{step}: {asset} has never been materialized; materialize it first", allow_retries=False)
    expected_run, metadata = record
    expected = str(metadata[FINGERPRINT].value) if FINGERPRINT in metadata else None
    footer = frame.attrs.get(FOOTER_ATTR) or {}
    found_run, found = footer.get("run_id"), footer.get(FINGERPRINT)
    if (found_run, found) != (expected_run, expected):
        raise dg.Failure(
            f"{step}: the {asset} loaded (run {found_run}, fingerprint {found}) is not the {asset} materialized "
            f"by run {expected_run} (fingerprint {expected}); another run's or a restored one was in its place. "
            f"Rematerialize {asset} together with {step} (in one job) and do not copy its files between runs.",
            allow_retries=False,
        )
    return expected
