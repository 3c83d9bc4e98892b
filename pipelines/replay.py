"""Replay real 2013 days into the landing zone, as if upstream producers delivered them live.

    python -m pipelines.replay --from 2013-01-01 --to 2013-01-31

Writes ``landing/flights/date=…csv`` and ``landing/weather/date=…csv`` (and the reference tables)
to whichever lake the environment configures: the local folder by default, S3 with ``LAKE_URL``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass, field

from ml.landing import landing_key, reference_key
from ml.reference_data import DAILY_DATASETS, REFERENCE_DATASETS, daily_csvs, reference_csv


@dataclass
class ReplaySummary:
    written: dict[str, int] = field(default_factory=dict)
    skipped_existing: int = 0
    bytes_written: int = 0


def replay(
    storage,
    start: dt.date,
    end: dt.date,
    datasets: tuple[str, ...] = DAILY_DATASETS,
    with_reference: bool = True,
    overwrite: bool = False,
    on_day=None,
) -> ReplaySummary:
    """Drop each day of ``datasets`` in [start, end] into ``storage``'s landing zone.

    ``on_day()`` is called once per day and dataset handled (written or already there): a progress bar's step.
    """
    summary = ReplaySummary()
    existing = set() if overwrite else {o.key for d in datasets for o in storage.list(f"landing/{d}/")}
    for dataset in datasets:
        count = 0
        for day, data in daily_csvs(dataset, start, end):
            key = landing_key(dataset, day.isoformat())
            if on_day is not None:
                on_day()
            if key in existing:
                summary.skipped_existing += 1
                continue
            storage.write_bytes(key, data)
            summary.bytes_written += len(data)
            count += 1
        summary.written[dataset] = count
    if with_reference:
        for dataset in REFERENCE_DATASETS:
            key = reference_key(dataset)
            if overwrite or not storage.exists(key):
                data = reference_csv(dataset)
                storage.write_bytes(key, data)
                summary.bytes_written += len(data)
                summary.written[dataset] = 1
    return summary


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def main(argv: list[str] | None = None) -> int:
    from resources import lake_storage_from_env

    parser = argparse.ArgumentParser(prog="flightdelay replay", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="start", type=_date, default=dt.date(2013, 1, 1))
    parser.add_argument("--to", dest="end", type=_date, default=dt.date(2013, 1, 31))
    parser.add_argument("--dataset", action="append", choices=DAILY_DATASETS, help="default: all")
    parser.add_argument("--no-reference", action="store_true", help="skip planes and airports")
    parser.add_argument("--overwrite", action="store_true", help="rewrite days already in the landing zone")
    args = parser.parse_args(argv)
    if args.end < args.start:
        parser.error(f"--to {args.end} is before --from {args.start}")
    import click

    storage = lake_storage_from_env()
    datasets = tuple(args.dataset or DAILY_DATASETS)
    days = ((args.end - args.start).days + 1) * len(datasets)
    with click.progressbar(length=days, label="replaying", file=sys.stderr, hidden=not sys.stderr.isatty()) as bar:
        summary = replay(
            storage, args.start, args.end, datasets,
            with_reference=not args.no_reference, overwrite=args.overwrite, on_day=lambda: bar.update(1),
        )
    print(
        f"replayed {args.start}..{args.end} into {storage.uri('landing')}: "
        + ", ".join(f"{k}={v}" for k, v in summary.written.items())
        + f"; {summary.skipped_existing} already there; {summary.bytes_written / 1e6:.1f} MB written"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
