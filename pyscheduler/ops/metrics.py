"""Prometheus metrics of every known queue, read on each scrape.

The collector reads what the library keeps (psq_counts and psq_metrics for every queue, all
in one pipeline after the list of queues): a scrape costs two round trips however many jobs
there are. `metrics_app` is the ASGI app the dashboard mounts at /metrics; `serve` runs the
endpoint alone (`pyscheduler metrics --port P`). Needs the `metrics` extra
(prometheus_client).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import make_asgi_app, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from ..client.metrics import Histogram, QueueMetrics, queue_metrics
from ..client.queue import Queue
from ..store import calls
from ..store.connection import Client, pipeline
from ..store.keys import QueueKeys
from ..store.library import ensure_loaded

log = logging.getLogger("pyscheduler.metrics")

# Counter name (a field of the queue's stats hash) -> (metric name without _total, help).
COUNTERS: dict[str, tuple[str, str]] = {
    "enqueued": ("pyscheduler_jobs_enqueued", "Jobs added to the queue."),
    "started": ("pyscheduler_jobs_started", "Runs whose handler started."),
    "completed": ("pyscheduler_jobs_completed", "Jobs that completed."),
    "failed": ("pyscheduler_jobs_failed", "Jobs that failed for good."),
    "retried": ("pyscheduler_jobs_retried", "Failed runs retried, and failed jobs re-queued."),
    "lost_leases": ("pyscheduler_leases_lost", "Leases that expired and were reclaimed."),
    "paused": ("pyscheduler_jobs_paused", "Runs paused at a checkpoint (time slice used up)."),
    "cancelled": ("pyscheduler_jobs_cancelled", "Jobs cancelled."),
    "expired": ("pyscheduler_jobs_expired", "Jobs not started before their expiry time."),
}
HISTOGRAMS: dict[str, tuple[str, str]] = {
    "wait": ("pyscheduler_job_wait_seconds", "Time from queued (or due) to the run's start."),
    "run": ("pyscheduler_job_run_seconds", "Time from a run's start to its end."),
}
# Gauge name -> help; the values come from psq_counts and psq_metrics.
GAUGES: dict[str, str] = {
    "pyscheduler_queue_ready": "Jobs ready to run.",
    "pyscheduler_queue_delayed": "Jobs waiting for their due time or a retry.",
    "pyscheduler_queue_active": "Jobs leased to a worker.",
    "pyscheduler_queue_waiting": "Jobs waiting for their subtasks.",
    "pyscheduler_queue_failed": "Jobs failed for good, kept for inspection.",
    "pyscheduler_queue_paused": "1 when the queue is paused, else 0.",
    "pyscheduler_queue_oldest_ready_age_seconds": (
        "Seconds the longest-waiting of the next ready jobs has waited (0 when none is ready)."
    ),
    "pyscheduler_workers": "Live workers taking the queue (heartbeat not expired).",
}
METRIC_NAMES: tuple[str, ...] = (
    *(f"{name}_total" for name, _ in COUNTERS.values()),
    *(name for name, _ in HISTOGRAMS.values()),
    *GAUGES,
)


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [
        ("+Inf" if bound == float("inf") else repr(bound), float(n))
        for bound, n in histogram.cumulative()
    ]


class QueueCollector(Collector):
    """Reads every known queue (or the `queues` given) on each collect."""

    def __init__(self, connection: Client, queues: Sequence[str] | None = None) -> None:
        self.connection = connection
        self.queues = None if queues is None else list(queues)

    def read(self) -> list[tuple[calls.Counts, calls.MetricsReply, QueueMetrics]]:
        """Each queue's counts, raw metrics and metrics, in two round trips."""
        names = self.queues if self.queues is not None else Queue.known(self.connection)
        if not names:
            return []
        ensure_loaded(self.connection)
        pipe = pipeline(self.connection)
        for name in names:
            keys = QueueKeys(name)
            calls.pipe_counts(pipe, keys)
            calls.pipe_metrics(pipe, keys, 1)
        try:
            replies = pipe.execute()
        except redis.ResponseError as exc:
            calls.raise_mapped(exc)
        out = []
        for n, name in enumerate(names):
            raw = calls.parse_metrics(replies[2 * n + 1])
            out.append((calls.parse_counts(replies[2 * n]), raw, queue_metrics(name, raw)))
        return out

    def collect(self) -> Iterator[Metric]:
        counters = {
            field: CounterMetricFamily(name, doc, labels=["queue"])
            for field, (name, doc) in COUNTERS.items()
        }
        histograms = {
            kind: HistogramMetricFamily(name, doc, labels=["queue"])
            for kind, (name, doc) in HISTOGRAMS.items()
        }
        gauges = {
            name: GaugeMetricFamily(name, doc, labels=["queue"]) for name, doc in GAUGES.items()
        }
        for counts, raw, metrics in self.read():
            label = [metrics.queue]
            for field, family in counters.items():
                family.add_metric(label, metrics.counters.get(field, 0))
            for kind, histogram in (("wait", metrics.wait), ("run", metrics.run)):
                histograms[kind].add_metric(
                    label, _buckets(histogram), sum_value=histogram.sum_seconds
                )
            age_ms = counts.oldest_ready_age_ms
            values = {
                "pyscheduler_queue_ready": counts.queued,
                "pyscheduler_queue_delayed": counts.delayed,
                "pyscheduler_queue_active": counts.active,
                "pyscheduler_queue_waiting": counts.waiting,
                "pyscheduler_queue_failed": counts.failed,
                "pyscheduler_queue_paused": int((counts.settings or {}).get("paused") == "1"),
                "pyscheduler_queue_oldest_ready_age_seconds": (age_ms or 0) / 1000,
                "pyscheduler_workers": raw.live_workers,
            }
            for name, value in values.items():
                gauges[name].add_metric(label, value)
        yield from counters.values()
        yield from histograms.values()
        yield from gauges.values()


def registry_for(connection: Client, queues: Sequence[str] | None = None) -> CollectorRegistry:
    """A registry holding only the queue collector (no process metrics of this server)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(connection, queues))
    return registry


def metrics_app(client: Client, queues: Sequence[str] | None = None) -> Any:
    """The Prometheus endpoint as an ASGI app (mount it at /metrics)."""
    return make_asgi_app(registry=registry_for(client, queues))


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


def metrics_server(client: Client, host: str = "127.0.0.1", port: int = 9711) -> WSGIServer:
    """An HTTP server of the metrics (any path answers), bound but not yet serving: call its
    serve_forever(); port 0 binds a free port (`server_port` tells which)."""
    app = make_wsgi_app(registry=registry_for(client))
    return make_server(host, port, app, handler_class=_QuietHandler)


def serve(
    client: Client,
    host: str = "127.0.0.1",
    port: int = 9711,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve the metrics at http://host:port/metrics until interrupted; `ready` is called
    with the port bound."""
    with metrics_server(client, host, port) as server:
        if ready:
            ready(server.server_port)
        server.serve_forever()
