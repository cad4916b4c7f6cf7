"""A real Prometheus (Debian's package) scrapes a running daemon; every expression of the alert rules
and of every Grafana panel is evaluated through Prometheus' HTTP API, and every sentiloop metric they
name must exist in the scraped data — so neither a rule nor a dashboard can refer to a metric that
the daemon does not export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentiloop.consumers.broker import free_port
from tests.conftest import produce, wait_until
from tests.consumers.test_integration_ingest import metrics_port
from tests.daemon.test_integration_continual import NEW, OVERRIDES, events, metric, prepared

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\bsentiloop_[a-z_]+\b")


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str) and node["expr"]:
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        walk(json.loads(path.read_text()))
    # Grafana's variables, as a dashboard user would have them set
    return [e.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$instance", ".+").replace("$job", ".+")
            for e in found]


def query(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no prometheus binary (Debian package `prometheus`; .ci/run installs it)")
    started: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "sentiloop", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
        }))
        with open(tmp_path / "prometheus.log", "wb") as log:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen([binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                                        f"--storage.tsdb.path={tmp_path / 'tsdb'}"], stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=20)


def test_every_rule_and_panel_metric_exists_in_a_real_scrape(broker, topic, daemon_factory, tmp_path: Path, prometheus) -> None:  # type: ignore[no-untyped-def]
    data = prepared(tmp_path)  # a champion, so the learning metrics exist too
    daemon = daemon_factory(broker.bootstrap, topic, data_dir=data, **OVERRIDES)
    port = metrics_port(daemon)
    wait_until(lambda: metric(port, "sentiloop_champion_version") == 1.0, what="the champion to load")
    produce(broker.bootstrap, topic, [*events(NEW, 400, 4, "p"), b"not json"])
    wait_until(lambda: (metric(port, 'sentiloop_retrain_runs_total{status="promoted",trigger="volume"}') or 0)
               + (metric(port, 'sentiloop_retrain_runs_total{status="rejected",trigger="volume"}') or 0) >= 1,
               timeout=300, what="a retrain to finish (its metrics exist from then on)")
    base = prometheus(port)

    def scraped() -> bool:
        try:
            return query(base, "/api/v1/query", query='up{job="sentiloop"} == 1')["data"]["result"] != []
        except OSError:  # not listening yet
            return False

    wait_until(scraped, timeout=60, what="Prometheus to scrape the daemon")
    time.sleep(3)  # a few scrapes, so rate() and increase() have two points

    exported = set(query(base, "/api/v1/label/__name__/values")["data"])
    expressions = rule_expressions() + dashboard_expressions()
    assert len(expressions) > 40
    missing: dict[str, list[str]] = {}
    for expression in expressions:
        answer = query(base, "/api/v1/query", query=expression)
        assert answer["status"] == "success", (expression, answer)
        for name in METRIC.findall(expression):
            if name not in exported:
                missing.setdefault(name, []).append(expression.splitlines()[0][:80])
    assert not missing, f"metrics referenced but not exported: {missing}"
