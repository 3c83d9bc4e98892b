"""deploy/monitoring/dashboards.py: the committed JSON is the generator's output; queries name their metrics.

That every query's metrics are really scraped: tests/monitoring/test_prometheus_scrape.py.
"""

import importlib.util
import json
import re
import sys
from pathlib import Path

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "bool", "rate", "irate", "increase", "histogram_quantile", "time", "absent", "changes", "offset",
}


def load_dashboards():
    """The generator module (deploy/ is no package: loaded from its file)."""
    name = "monitoring_dashboards"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, MONITORING / "dashboards.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers outside label matchers, ``by (...)`` lists,
    strings and ranges that are no function, keyword or aggregation."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\b\d+(\.\d+)?\b", "", expr)
    return {name for name in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr) if name not in PROMQL_WORDS}


def test_metric_names_reads_only_the_metrics_of_an_expression():
    expr = ('histogram_quantile(0.99, sum by (le) (rate(flight_delay_http_request_duration_seconds_bucket'
            '{endpoint="/predict",code=~"5.."}[$__rate_interval]))) / on (job) time() - up{job="x"} * 1000')
    assert metric_names(expr) == {"flight_delay_http_request_duration_seconds_bucket", "up"}


def test_committed_dashboards_are_what_the_generator_makes():
    dashboards = load_dashboards()
    assert len(dashboards.DASHBOARDS) == 3
    for spec in dashboards.DASHBOARDS:
        path = dashboards.path_of(spec)
        assert path.read_text() == dashboards.render(spec), f"{path.name} is out of date: run `make dashboards`"


def test_every_panel_has_a_prometheus_query_and_a_unique_id():
    dashboards = load_dashboards()
    for spec in dashboards.DASHBOARDS:
        model = json.loads(dashboards.path_of(spec).read_text())
        panels = [p for p in model["panels"] if p["type"] != "row"]
        assert len({p["id"] for p in model["panels"]}) == len(model["panels"])
        for panel in panels:
            assert panel["targets"] and all(t["expr"] and t["datasource"]["type"] == "prometheus" for t in panel["targets"]), panel["title"]
            assert all(metric_names(t["expr"]) for t in panel["targets"]), panel["title"]


def _registered_stream_series() -> set[str]:
    """The series names the stream processor's registry exposes (a counter's ``_total``, a histogram's
    ``_bucket``/``_sum``/``_count``), labelled children or not."""
    from streaming.metrics import REGISTRY

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + suffix for family in REGISTRY.collect() for suffix in suffixes[family.type]}


def test_the_stream_row_reads_only_what_the_processor_exposes():
    """The processor is not scraped by test_prometheus_scrape (it needs NATS and Redis): its queries are held
    to streaming/metrics.py's registry here instead."""
    dashboards = load_dashboards()
    (panels,) = [panels for title, panels in dashboards.SERVICE.rows if title == "Stream"]
    exposed = _registered_stream_series()
    read = {name for panel in panels for query in panel.queries for name in metric_names(query.expr)}
    assert read and read <= exposed, f"not exposed by streaming/metrics.py: {sorted(read - exposed)}"
    assert {"flight_delay_stream_events_total", "flight_delay_stream_consumer_lag_messages",
            "flight_delay_stream_dead_letters_total", "flight_delay_stream_cutoff_to_publish_seconds_bucket",
            "flight_delay_stream_predictions_total"} <= read
