"""docs/monitoring.md and its Grafana dashboard name only metrics a real scrape shows, and a
real Prometheus accepts the dashboard's queries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from helpers import wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_prometheus import busy_queue, query, running_prometheus, scrape, serving

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "monitoring.md"
DASHBOARD = ROOT / "docs" / "grafana" / "pyscheduler.json"
METRIC = re.compile(r"\bpyscheduler_[a-z_]+\b")


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def keda_queries() -> list[str]:
    text = DOC.read_text()
    block = text.split("kind: ScaledObject", 1)[1].split("```", 1)[0]
    return re.findall(r"^\s*query: (.+)$", block, re.MULTILINE)


def scraped_names(conn: redis.Redis) -> set[str]:
    """Every sample and family name of a scrape of a queue that ran jobs."""
    busy_queue(conn)
    with serving(conn) as url:
        text = scrape(url)
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_the_doc_has_a_keda_scaled_object_on_the_prometheus_scaler() -> None:
    text = DOC.read_text()
    assert "apiVersion: keda.sh/v1alpha1" in text and "type: prometheus" in text
    queries = keda_queries()
    assert any("pyscheduler_queue_oldest_ready_age_seconds" in q for q in queries)


def test_every_metric_the_dashboard_queries_appears_in_a_scrape(conn: redis.Redis) -> None:
    named = set()
    for text in strings_in(json.loads(DASHBOARD.read_text())):
        named.update(METRIC.findall(text))
    assert named, "the dashboard names no metric"
    assert named <= scraped_names(conn)


def test_every_metric_the_doc_names_appears_in_a_scrape(conn: redis.Redis) -> None:
    named = set(METRIC.findall(DOC.read_text()))
    assert {m for q in keda_queries() for m in METRIC.findall(q)} <= named
    assert named <= scraped_names(conn)


def test_a_real_prometheus_accepts_every_dashboard_and_keda_query(
    conn: redis.Redis, tmp_path: Path
) -> None:
    busy_queue(conn)
    with serving(conn) as url, running_prometheus(tmp_path, url) as prometheus:
        wait_until(
            lambda: query(prometheus, "pyscheduler_queue_ready"),
            timeout=60,
            interval=0.5,
            what="a scrape",
        )
        for expression in [*dashboard_expressions(), *keda_queries()]:
            concrete = expression.replace("$__rate_interval", "1m").replace("$queue", ".*")
            query(prometheus, concrete)  # asserts the query was accepted
