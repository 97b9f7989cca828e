"""The proxy's Prometheus metrics (`GET /metrics`): requests, decisions, fallbacks, provider
errors and latencies, the routing log's queue, and the router's own counters, on a registry of
the app's own (so several apps in one process never share one). Under `--workers N` every
worker writes its values to files in one folder and each /metrics adds up all of them."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections import Counter as CounterDict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.counters import Counters
from router.decision import RoutingDecision
from router.store.log_writer import LogWriter

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROUTING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Shown from the start, at 0, so a dashboard has a series before the first failure.
KNOWN_COUNTERS = (
    "fallbacks",
    "categorizer_errors",
    "local_errors",
    "upstream_errors",
    "db_errors",
    "log_write_errors",
    "log_rows_dropped",
    "models_refused",
    "proxy_failures",
    "clients_gone",
    "stream_usage_refused",
    "db_file_lost",
    "db_writes_refused",
    "headers_too_large",
    "header_timeouts",
    "connections_refused",
)
REASON_CHARS = 60
# prometheus-client's multiprocess mode: set (by `crabbot proxy --workers N`, for its workers)
# before prometheus_client is first imported, it makes every metric value live in a file there.
SHARED_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The variable parts of a reason (a quoted category, a number with decimals) would make every
# reason a new series: they are cut out of the label.
_VARIABLE = re.compile(r"'[^']*'|\"[^\"]*\"|-?\d+\.\d+(?:e-?\d+)?")


def reason_label(error: str | None) -> str:
    """'categorizer: unknown category …' from "categorizer: unknown category 'x'; provider: …"."""
    first = (error or "unknown").split("; ", 1)[0]
    return _VARIABLE.sub("…", first)[:REASON_CHARS]


def shared_dir() -> str | None:
    """The folder a worker of `crabbot proxy --workers N` writes its metrics to; None when the
    proxy is one process."""
    return os.environ.get(SHARED_DIR_ENV) or None


def leave_shared_dir(folder: str) -> None:
    """A worker whose parent is gone (killed: it cleans nothing up) leaves the shared metrics
    folder: its own files and those of workers no longer running go, and the last worker out
    removes the folder."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        pid = name.rsplit("_", 1)[-1].removesuffix(".db")
        if not pid.isdigit():
            continue
        if int(pid) != os.getpid() and _running(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name))
    with contextlib.suppress(OSError):  # another worker's files are still there: it will
        os.rmdir(folder)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _router_metric(name: str) -> tuple[str, str]:
    """The Prometheus name (less _total) and help of router.counters[name]."""
    metric = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return f"crabbot_router_{metric}", f"router.counters[{name!r}] since the proxy started"


class RouterCounters(Collector):
    """router.counters as Prometheus counters, by name: crabbot_router_<name>_total."""

    def __init__(self, counters: CounterDict[str]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        for name in sorted(set(KNOWN_COUNTERS) | set(self.counters)):
            metric, documentation = _router_metric(name)
            yield CounterMetricFamily(metric, documentation, value=self.counters[name])


class SharedRouterCounters:
    """The same counters for a worker: each increase of router.counters is written to the shared
    files as it happens (a collector of this process alone would show only the worker that
    answered the scrape)."""

    def __init__(self, counters: Counters) -> None:
        self._metrics: dict[str, Counter] = {}
        self._lock = threading.Lock()  # a counter may first be increased off the event loop
        for name in KNOWN_COUNTERS:
            self._metric(name)
        for name, value in list(counters.items()):  # counted while the router opened
            self.increase(name, value)
        counters.watchers.append(self.increase)

    def increase(self, name: str, amount: int) -> None:
        if amount > 0:
            self._metric(name).inc(amount)

    def _metric(self, name: str) -> Counter:
        with self._lock:
            if name not in self._metrics:
                metric, documentation = _router_metric(name)
                self._metrics[name] = Counter(metric, documentation, registry=None)
            return self._metrics[name]


class ProxyMetrics:
    """Every metric of one app; `registry` is what /metrics shows, or under --workers N the
    files of every worker, added up (and the requests each live worker answered, by pid)."""

    def __init__(self, counters: Counters, writer: LogWriter) -> None:
        self.shared = shared_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "crabbot_proxy_requests",
            "HTTP requests answered, by endpoint (route path) and status",
            ["endpoint", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "crabbot_proxy_request_seconds",
            "Whole request time, to the last byte of the answer (streams included), by endpoint",
            ["endpoint"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.decisions = Counter(
            "crabbot_routing_decisions",
            "Requests given a model, by decision source and tier (tier 'none': a passthrough"
            " model outside the tiers)",
            ["source", "tier"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "crabbot_routing_fallbacks",
            "Routing decisions a failed signal handed to the next one, by reason",
            ["reason"],
            registry=registry,
        )
        self.routing_seconds = Histogram(
            "crabbot_routing_seconds",
            "Time to route a model='auto' request",
            buckets=ROUTING_BUCKETS,
            registry=registry,
        )
        self.provider_errors = Counter(
            "crabbot_provider_errors",
            "Failed provider calls, by the status the client was answered with",
            ["status"],
            registry=registry,
        )
        self.provider_seconds = Histogram(
            "crabbot_provider_seconds",
            "Provider call time, to the whole answer (the stream's end when streamed)",
            ["stream"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        queue = Gauge(
            "crabbot_routing_log_queue_depth",
            "Routing-log rows finished and not yet committed to the database",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.worker_requests: Gauge | None = None
        if self.shared is None:
            queue.set_function(lambda: writer.depth)
            registry.register(RouterCounters(counters))
            return
        # A function gauge or a collector would show only this worker: values are written.
        queue.set(writer.depth)
        writer.on_depth = queue.set
        SharedRouterCounters(counters)
        self.worker_requests = Gauge(
            "crabbot_proxy_worker_requests",
            "HTTP requests answered by each live worker process since it started, by pid",
            registry=registry,
            multiprocess_mode="liveall",
        )

    def decided(self, decision: RoutingDecision) -> None:
        self.decisions.labels(decision.source, decision.tier or "none").inc()
        if decision.source == "fallback":
            self.fallbacks.labels(reason_label(decision.error)).inc()
        if decision.source not in ("alias", "passthrough"):
            self.routing_seconds.observe(decision.latency_ms / 1000)

    def provider_done(self, started: float, stream: bool, failed_status: int | None) -> None:
        self.provider_seconds.labels("true" if stream else "false").observe(
            time.perf_counter() - started
        )
        if failed_status is not None:
            self.provider_errors.labels(str(failed_status)).inc()

    def exposition(self) -> bytes:
        if self.shared is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, self.shared)
        return generate_latest(registry)


class RequestMetrics:
    """ASGI middleware: counts every answer by endpoint and status and times it to its last
    byte. The endpoint is the matched route's path, so unknown paths share one series."""

    def __init__(self, app: ASGIApp, metrics: ProxyMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the answer began becomes a 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            if scope["method"] == "OPTIONS" and status < 400:
                endpoint = "preflight"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            if self.metrics.worker_requests is not None:
                self.metrics.worker_requests.inc()
            self.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)
