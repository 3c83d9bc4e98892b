"""A drift report a person opens in a browser: one self-contained HTML page, no script, no network.

Evidently's report costs ~1.3 s of rendering per day and ~3.6 s of import per process (bench/
drift_bench.py); this page shows what the check decided on (per column: test, score, threshold,
verdict) and the reference and current distributions behind each score as inline SVG bars, in a few
milliseconds. The Evidently report stays one call away (``ml.drift.evidently_drift``) for a deeper look.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

import numpy as np
import pandas as pd

VERSION = "1"
"""Bump when the page changes: stored reports become stale (assets/versions.py)."""

_TOP_CATEGORIES = 12
_BINS = 20
_CHART_W, _CHART_H = 240, 60
_REFERENCE_COLOUR, _CURRENT_COLOUR = "#4c78a8", "#e45756"

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse}td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle}
th{background:#f4f4f4}.drift{color:#b00020;font-weight:600}.ok{color:#2e7d32}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem;vertical-align:middle}
"""


def distribution(reference: pd.Series, current: pd.Series, numeric: bool) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Labels and shares per bin of both sides: shared equal-width bins for numbers, the top categories otherwise."""
    if numeric:
        both = np.concatenate([reference.to_numpy(dtype=float), current.to_numpy(dtype=float)])
        edges = np.histogram_bin_edges(both, bins=_BINS)
        ref = np.histogram(reference, edges)[0] / max(len(reference), 1)
        cur = np.histogram(current, edges)[0] / max(len(current), 1)
        return [f"{lo:.4g} – {hi:.4g}" for lo, hi in zip(edges[:-1], edges[1:])], ref, cur
    ref_shares = reference.astype(str).value_counts(normalize=True)
    cur_shares = current.astype(str).value_counts(normalize=True)
    keys = ref_shares.add(cur_shares, fill_value=0).sort_values(ascending=False).index[:_TOP_CATEGORIES]
    return list(keys), ref_shares.reindex(keys, fill_value=0).to_numpy(), cur_shares.reindex(keys, fill_value=0).to_numpy()


def _bars(labels: list[str], ref: np.ndarray, cur: np.ndarray) -> str:
    """Reference and current shares side by side per bin, each bin's label as its tooltip."""
    top = max(float(ref.max(initial=0)), float(cur.max(initial=0)), 1e-12)
    step = _CHART_W / max(len(labels), 1)
    bar = step / 2 - 0.5
    rects = []
    for i, label in enumerate(labels):
        x = i * step
        for offset, share, colour in ((0.0, ref[i], _REFERENCE_COLOUR), (bar, cur[i], _CURRENT_COLOUR)):
            height = share / top * _CHART_H
            rects.append(
                f'<rect x="{x + offset:.1f}" y="{_CHART_H - height:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                f'fill="{colour}"><title>{escape(label)}: {share:.1%}</title></rect>'
            )
    return f'<svg width="{_CHART_W}" height="{_CHART_H}" role="img">{"".join(rects)}</svg>'


def render(
    *,
    scores: Mapping[str, float],
    tests: Mapping[str, str],
    drifted: list[str],
    thresholds: Mapping[str, float],
    skipped: Mapping[str, str],
    distributions: Mapping[str, tuple[list[str], np.ndarray, np.ndarray]],
    rows_current: int,
    rows_reference: int,
    title: str = "Data drift",
) -> str:
    """The page: a summary line, one row per evaluated column (drifted first), then the skipped columns."""
    order = sorted(scores, key=lambda c: (c not in drifted, c))
    rows = []
    for column in order:
        is_drift = column in drifted
        verdict = '<span class="drift">drift</span>' if is_drift else '<span class="ok">no drift</span>'
        kind = "p-value" if tests[column] in {"ks", "chisquare", "z"} else "distance"
        rows.append(
            f"<tr><td>{escape(column)}</td><td>{escape(tests[column])}</td><td>{scores[column]:.4g}</td>"
            f"<td>{kind} {'&lt;' if kind == 'p-value' else '&ge;'} {thresholds[column]:g}</td><td>{verdict}</td>"
            f"<td>{_bars(*distributions[column])}</td></tr>"
        )
    share = len(drifted) / len(scores) if scores else 0.0
    skipped_items = "".join(f"<li>{escape(c)}: {escape(r)}</li>" for c, r in skipped.items())
    return (
        f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>"
        f"<p>Drift in {len(drifted)} of {len(scores)} columns (share {share:.2f}); "
        f"{rows_current:,} current rows against {rows_reference:,} reference rows. "
        "Tests and thresholds as Evidently's DataDriftPreset picks them.</p>"
        f'<p class="legend">Distributions:<span style="background:{_REFERENCE_COLOUR}"></span>reference'
        f'<span style="background:{_CURRENT_COLOUR}"></span>current (share of rows per bin; hover a bar for its range)</p>'
        "<table><thead><tr><th>column</th><th>test</th><th>score</th><th>drift when</th><th>verdict</th>"
        f"<th>distribution</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        + (f"<h2>Not compared</h2><ul>{skipped_items}</ul>" if skipped else "")
        + "</body></html>"
    )
