"""deploy/monitoring: the rules and the scrape config are valid, and each alert fires and resolves (`promtool test rules`)."""

import re
import shutil
import subprocess
from pathlib import Path

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
REQUIRED_ALERTS = {
    "FlightDelayServiceDown", "FlightDelayHighErrorRatio", "FlightDelayP99LatencyHigh", "FlightDelayDriftOverGate",
    "FlightDelayRealisedAucBelowGate", "FlightDelayNoNewData", "FlightDelayTrainingFailing",
    "StreamConsumerLagging", "StreamDeadLetters", "StreamProcessorStalled",
}


def _promtool(promtool, *args, cwd=MONITORING) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _alerts() -> set[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def test_every_alert_fires_and_resolves_in_the_rule_unit_tests(promtool):
    done = _promtool(promtool, "test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout

    assert REQUIRED_ALERTS <= _alerts()
    cases = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
    fired = {c["alertname"] for t in cases for c in t["alert_rule_test"] if c["exp_alerts"]}
    resolved = {c["alertname"] for t in cases for c in t["alert_rule_test"] if not c["exp_alerts"]}
    assert fired == _alerts() and resolved == _alerts(), "each alert is shown both firing and not firing"


def test_rule_unit_tests_fail_on_a_broken_rule(promtool, tmp_path):
    """The unit tests can fail: with the error ratio's threshold raised tenfold, they do."""
    for name in ("alerts.yml", "alerts_test.yml"):
        shutil.copy(MONITORING / name, tmp_path / name)
    rules = tmp_path / "alerts.yml"
    rules.write_text(rules.read_text().replace("> 0.05", "> 0.5"))
    done = _promtool(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert done.returncode != 0 and "FlightDelayHighErrorRatio" in done.stdout + done.stderr


def test_scrape_config_is_valid_and_scrapes_both_targets(promtool, tmp_path):
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert {j["job_name"] for j in config["scrape_configs"]} == {"flight-delay-service", "flight-delay-pipeline",
                                                                 "flight-delay-stream"}
    token_file = tmp_path / "token"
    token_file.write_text("not-a-real-token")
    text = (MONITORING / "prometheus.yml").read_text().replace("/run/secrets/service_api_token", str(token_file))
    (tmp_path / "prometheus.yml").write_text(text)
    shutil.copy(MONITORING / "alerts.yml", tmp_path / "alerts.yml")
    done = _promtool(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"SUCCESS: \d+ rules found", done.stdout)


COMPOSE = MONITORING.parent / "compose"


def _alert_jobs() -> set[str]:
    """The scrape jobs the alert rules select by name (``job="..."``)."""
    return set(re.findall(r'job="([^"]+)"', (MONITORING / "alerts.yml").read_text()))


def test_compose_prometheus_evaluates_the_shipped_rules_against_the_jobs_they_name(promtool, tmp_path):
    """compose's Prometheus (plain and TLS) loads alerts.yml from its mount and scrapes every job a rule names,
    the exporter among them; `promtool check config` accepts each with the rules in place."""
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]
    mounts = {target: source for source, target, _ in (v.split(":") for v in compose["prometheus"]["volumes"] if v.startswith("."))}
    exporter = compose["metrics-exporter"]["command"]
    exporter_target = f"metrics-exporter:{exporter[exporter.index('--port') + 1]}"
    assert exporter[:3] == ["python", "-m", "pipelines.metrics_exporter"]
    stream = compose["stream-processor"]["command"]
    stream_target = f"stream-processor:{stream[stream.index('--metrics-port') + 1]}"
    assert stream[:3] == ["python", "-m", "streaming.processor"]
    for name in ("prometheus.yml", "prometheus.tls.yml"):
        config = yaml.safe_load((COMPOSE / name).read_text())
        jobs = {j["job_name"]: j for j in config["scrape_configs"]}
        assert _alert_jobs() <= set(jobs), f"{name}: the alert rules select jobs {_alert_jobs() - set(jobs)} it lacks"
        assert jobs["flight-delay-pipeline"]["static_configs"][0]["targets"] == [exporter_target]
        assert jobs["flight-delay-stream"]["static_configs"][0]["targets"] == [stream_target]
        (rules_path,) = config["rule_files"]
        assert (COMPOSE / mounts[rules_path]).resolve() == (MONITORING / "alerts.yml").resolve(), name

        local = tmp_path / name.replace(".yml", "")
        local.mkdir()
        for secret in ("/run/secrets/service_api_token", "/run/tls/ca.crt"):
            (local / Path(secret).name).write_text("not a real secret")
        text = (COMPOSE / name).read_text().replace(rules_path, str(local / "alerts.yml"))
        for secret in ("/run/secrets/service_api_token", "/run/tls/ca.crt"):
            text = text.replace(secret, str(local / Path(secret).name))
        (local / "prometheus.yml").write_text(text)
        shutil.copy(MONITORING / "alerts.yml", local / "alerts.yml")
        done = _promtool(promtool, "check", "config", "prometheus.yml", cwd=local)
        assert done.returncode == 0, (name, done.stdout + done.stderr)
        assert re.search(r"SUCCESS: [1-9]\d* rules found", done.stdout), name
