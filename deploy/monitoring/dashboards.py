"""Grafana dashboards as code: service, pipeline and model quality, generated into ``dashboards/*.json``.

``make dashboards`` (``python deploy/monitoring/dashboards.py``) rewrites the JSON; commit it with
the change that made it. ``--check`` exits 1 when the committed JSON differs from what this generates.
Every panel reads Prometheus through a ``datasource`` variable, so the JSON imports into any Grafana.
Built with grafana-foundation-sdk (typed builders for Grafana's schema; a dev dependency: only this
generator imports it, the JSON is the product).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = "${datasource}"
PREDICT = 'endpoint="/predict"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class PanelSpec:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat", "table"
    description: str = ""
    width: int = 12
    height: int = 8
    thresholds: tuple[tuple[float, str], ...] = field(default=())


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    rows: tuple[tuple[str, tuple[PanelSpec, ...]], ...]


def _quantiles(metric: str, selector: str = "", quantiles=(0.5, 0.95, 0.99), by: str = "le") -> tuple[Query, ...]:
    return tuple(Query(f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
                       f"p{int(q * 100)}") for q in quantiles)


SERVICE = DashboardSpec(
    uid="flight-delay-service",
    title="Flight delay: service",
    description="The BentoML service: traffic, errors and rejections, latency, batching, the model served; "
                "the stream processor's events, lag, dead letters and predictions.",
    rows=(
        ("Traffic and errors", (
            PanelSpec("Requests by endpoint and code", (
                Query("sum by (endpoint, code) (rate(flight_delay_http_requests_total[$__rate_interval]))", "{{endpoint}} {{code}}"),),
                unit="reqps"),
            PanelSpec("/predict error ratio (5xx)", (
                Query(f'sum(rate(flight_delay_http_requests_total{{{PREDICT},code=~"5.."}}[$__rate_interval]))'
                      f" / sum(rate(flight_delay_http_requests_total{{{PREDICT}}}[$__rate_interval]))", "5xx share"),),
                unit="percentunit", description="FlightDelayHighErrorRatio fires over 5% for 5 minutes."),
            PanelSpec("Rejected requests by reason", (
                Query("sum by (reason) (rate(flight_delay_rejected_requests_total[$__rate_interval]))", "{{reason}}"),),
                unit="reqps", description="bad_request 400/422, unauthorized 401, payload_too_large 413, overloaded 503."),
            PanelSpec("Service up", (Query('up{job="flight-delay-service"}', "{{instance}}"),), kind="stat",
                      thresholds=((0, "red"), (1, "green"))),
        )),
        ("Latency and batching", (
            PanelSpec("/predict latency", _quantiles("flight_delay_http_request_duration_seconds", PREDICT), unit="s",
                      description="FlightDelayP99LatencyHigh fires over 0.5 s for 10 minutes."),
            PanelSpec("Flights per scored batch", (
                *_quantiles("flight_delay_batch_size_rows", quantiles=(0.5, 0.99)),
                Query("sum(rate(flight_delay_batch_size_rows_sum[$__rate_interval])) / "
                      "sum(rate(flight_delay_batch_size_rows_count[$__rate_interval]))", "mean")), unit="short"),
            PanelSpec("Prediction log rows dropped (1 h)", (
                Query("sum(increase(flight_delay_prediction_log_dropped_rows_total[1h]))", "dropped"),), kind="stat",
                thresholds=((0, "green"), (1, "red"))),
            PanelSpec("Model version served", (
                Query("max by (model_version, bento_model) (flight_delay_model_info)", "v{{model_version}} {{bento_model}}",
                      instant=True),), kind="table"),
        )),
        # The stream processor (streaming/metrics.py): predictions at each flight's cutoff, off the request path.
        ("Stream", (
            PanelSpec("Events applied by type", (
                Query("sum by (type) (rate(flight_delay_stream_events_total[$__rate_interval]))", "{{type}}"),),
                unit="ops"),
            PanelSpec("Predictions published", (
                Query("sum(rate(flight_delay_stream_predictions_total[$__rate_interval]))", "predictions"),), unit="ops"),
            PanelSpec("Consumer lag", (
                Query("max by (instance) (flight_delay_stream_consumer_lag_messages)", "{{instance}}"),), unit="short",
                description="Events in the stream not yet delivered to the processor. StreamConsumerLagging fires over "
                            "5000 for 5 minutes."),
            PanelSpec("Dead letters by reason", (
                Query("sum by (reason) (increase(flight_delay_stream_dead_letters_total[$__rate_interval]))", "{{reason}}"),),
                unit="short", description="Events sent to deadletter.airport. StreamDeadLetters fires on any in 10 minutes."),
            PanelSpec("Cutoff to publish", _quantiles("flight_delay_stream_cutoff_to_publish_seconds", quantiles=(0.5, 0.99)),
                      unit="s", description="From the processor learning a cutoff had passed to the prediction's publication."),
            PanelSpec("Time since the last state commit", (
                Query("time() - flight_delay_stream_last_commit_timestamp_seconds", "{{instance}}"),), unit="s",
                description="StreamProcessorStalled fires over 5 minutes for 5 minutes."),
        )),
    ),
)

PIPELINE = DashboardSpec(
    uid="flight-delay-pipeline",
    title="Flight delay: pipeline",
    description="The Dagster pipeline as the metrics exporter reads it: freshness, ingest, training, sensors.",
    rows=(
        ("Freshness and ingest", (
            PanelSpec("Time since each asset was last materialized", (
                Query("time() - flight_delay_asset_last_materialization_timestamp_seconds", "{{asset}}", instant=True),),
                unit="s", kind="table", description="FlightDelayNoNewData fires when raw_flights is a day old."),
            PanelSpec("Newest day materialized", (
                Query("flight_delay_asset_newest_partition_timestamp_seconds * 1000", "{{asset}}", instant=True),),
                unit="dateTimeAsIsoNoDateIfToday", kind="table"),
            PanelSpec("Rows per ingested day", (
                Query("sum by (asset, day, outcome) (flight_delay_ingest_rows)", "{{asset}} {{day}} {{outcome}}", instant=True),),
                kind="table", description="The newest 7 days of each ingested asset: rows ingested, rows held back by the contract."),
            PanelSpec("Days held back (newest 7)", (
                Query("flight_delay_ingest_held_back_days", "{{asset}}"),), kind="stat",
                thresholds=((0, "green"), (1, "orange"))),
        )),
        ("Training and automation", (
            PanelSpec("Training duration", (Query("flight_delay_training_duration_seconds", "newest training"),), unit="s"),
            PanelSpec("Training runs failed in a row", (Query("flight_delay_training_consecutive_failures", "failures"),),
                      kind="stat", thresholds=((0, "green"), (1, "orange"), (2, "red")),
                      description="FlightDelayTrainingFailing fires at 2."),
            PanelSpec("Sensor lag (time since last tick)", (
                Query("time() - flight_delay_sensor_last_tick_timestamp_seconds", "{{sensor}}"),), unit="s",
                description="FlightDelaySensorStalled fires over 15 minutes."),
            PanelSpec("Exporter up", (Query('up{job="flight-delay-pipeline"}', "{{instance}}"),), kind="stat",
                      thresholds=((0, "red"), (1, "green"))),
        )),
    ),
)

MODEL_QUALITY = DashboardSpec(
    uid="flight-delay-model-quality",
    title="Flight delay: model quality",
    description="Drift and realised performance against their gates, the champion, the served score distribution.",
    rows=(
        ("Gates", (
            PanelSpec("Drift share vs gate (newest evaluated day)", (
                Query("flight_delay_drift_share_ratio", "drift share"),
                Query("flight_delay_drift_share_gate_ratio", "gate")), unit="percentunit"),
            PanelSpec("Realised ROC AUC vs gate and champion test", (
                Query("flight_delay_realised_roc_auc", "realised (day)"),
                Query("flight_delay_realised_roc_auc_window_upper", "upper bound (window)"),
                Query("flight_delay_realised_roc_auc_gate", "gate"),
                Query("flight_delay_champion_test_roc_auc", "champion test")), unit="none"),
        )),
        ("Champion and scores", (
            PanelSpec("Champion version", (Query("flight_delay_champion_model_version", "champion"),), kind="stat", width=6),
            PanelSpec("Champion test ROC AUC", (Query("flight_delay_champion_test_roc_auc", "test ROC AUC"),), kind="stat",
                      unit="none", width=6),
            PanelSpec("Served score distribution", (
                *_quantiles("flight_delay_score", quantiles=(0.1, 0.5, 0.9)),
                Query("sum(rate(flight_delay_score_sum[$__rate_interval])) / sum(rate(flight_delay_score_count[$__rate_interval]))",
                      "mean")), unit="percentunit"),
        )),
    ),
)

DASHBOARDS = (SERVICE, PIPELINE, MODEL_QUALITY)


def queries(spec: DashboardSpec) -> list[str]:
    """Every PromQL expression of a dashboard."""
    return [q.expr for _, panels in spec.rows for p in panels for q in p.queries]


def _panel(spec: PanelSpec):
    from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
    from grafana_foundation_sdk.models.dashboard import DataSourceRef, ThresholdsMode

    builder = {"timeseries": timeseries.Panel, "stat": stat.Panel, "table": table.Panel}[spec.kind]()
    datasource = DataSourceRef(type_val="prometheus", uid=DATASOURCE)
    panel = builder.title(spec.title).datasource(datasource).unit(spec.unit).span(spec.width).height(spec.height)
    if spec.description:
        panel = panel.description(spec.description)
    if spec.thresholds:
        from grafana_foundation_sdk.models.dashboard import Threshold

        panel = panel.thresholds(dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
            [Threshold(value=None if i == 0 else value, color=color) for i, (value, color) in enumerate(spec.thresholds)]))
    for ref, query in zip("ABCDEFGH", spec.queries):
        target = prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref).datasource(datasource)
        panel = panel.with_target(target.instant() if query.instant else target.range())
    return panel


def build(spec: DashboardSpec) -> dict:
    """The dashboard's JSON model."""
    from grafana_foundation_sdk.builders import dashboard
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, VariableOption

    board = (
        dashboard.Dashboard(spec.title).uid(spec.uid).description(spec.description)
        .tags(["flight-delay"]).refresh("1m").time("now-6h", "now").timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR).editable()
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
                       .current(VariableOption(selected=True, text="Prometheus", value="prometheus")))
    )
    next_id = 1  # unique panel ids: Grafana links and alerts address panels by them
    for title, panels in spec.rows:
        board = board.with_row(dashboard.Row(title).id(next_id))
        next_id += 1
        for panel in panels:
            board = board.with_panel(_panel(panel).id(next_id))
            next_id += 1
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def render(spec: DashboardSpec) -> str:
    return json.dumps(build(spec), indent=2, sort_keys=True) + "\n"


def path_of(spec: DashboardSpec, out: Path = OUT) -> Path:
    return out / f"{spec.uid}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs from the generated")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    stale = []
    for spec in DASHBOARDS:
        path, text = path_of(spec, args.out), render(spec)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(f"out of date (run `make dashboards`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
