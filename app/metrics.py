"""Prometheus metrics, defined once: incremented by the middleware, services and jobs; served at /metrics.

Multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` is set *before this module is imported*, every
process (each uvicorn worker, the ARQ worker) writes its samples to files in that directory and a scrape
of any one web worker aggregates them all. The directory must be emptied before the processes start
(stale files from a previous run would be summed in). Without the variable, metrics live in this process.

Incrementing is cheap but not free (a lock, or a write to an mmap'd file); the helpers below cache the
labelled children so the hot path skips the label lookup.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.credit.policy import Decision

# The *_created series double the scrape for a timestamp no dashboard here uses.
disable_created_metrics()

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
if MULTIPROCESS:
    # Every process of the image (api workers, worker, migrate) inherits the variable; the first to
    # start creates the directory rather than failing on its first sample.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
UNMATCHED_ROUTE = "<unmatched>"

# Latency buckets for an API whose requests are one or two queries: 5 ms .. 10 s.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
# Jobs ingest whole workbooks: 0.1 s .. 1 h.
JOB_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by method, route template and status class (2xx, 4xx...).",
    ["method", "route", "status_class"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from receiving a request to sending the end of its response, in seconds.",
    ["method", "route", "status_class"],
    buckets=HTTP_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "http_requests_in_flight",
    "HTTP requests being served right now.",
    multiprocess_mode="livesum",
)
ELIGIBILITY_DECISIONS = Counter(
    "eligibility_decisions",
    "Credit decisions, by operation (check_eligibility, create_loan), outcome (approved, rejected) and "
    "primary reason (the first reason of the decision, in policy order).",
    ["operation", "outcome", "reason"],
)
LOANS_CREATED = Counter("loans_created", "Loans stored by create-loan.")
PAYMENTS = Counter(
    "payments",
    "Payments recorded by make-payment, by timing (on_time, late) and whether they paid the loan off.",
    ["timing", "paid_off"],
)
INGESTION_ROWS = Counter(
    "ingestion_rows",
    "Workbook rows processed by ingestion, by file (customers, loans) and outcome (loaded, rejected...).",
    ["file", "outcome"],
)
JOB_DURATION = Histogram(
    "job_duration_seconds",
    "Wall time of background jobs, by job name and outcome (success, failure).",
    ["job", "outcome"],
    buckets=JOB_BUCKETS,
)

# --- hot-path helpers: labelled children cached by their label values ---------------------------------

_http_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
_decision_children: dict[tuple[str, bool, str], Counter] = {}


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    key = (method, route, status_class(status))
    children = _http_children.get(key)
    if children is None:
        children = (HTTP_REQUESTS.labels(*key), HTTP_DURATION.labels(*key))
        _http_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def record_decision(operation: str, decision: Decision) -> None:
    """Count one credit decision; `operation` is the endpoint that made it."""
    reason = str(decision.reasons[0]) if decision.reasons else "none"
    key = (operation, decision.approved, reason)
    child = _decision_children.get(key)
    if child is None:
        child = ELIGIBILITY_DECISIONS.labels(
            operation, "approved" if decision.approved else "rejected", reason
        )
        _decision_children[key] = child
    child.inc()


def record_loan_created() -> None:
    LOANS_CREATED.inc()


def record_payment(*, on_time: bool, paid_off: bool) -> None:
    # Counted at insert, as loans are: a later failure to commit overcounts by that payment.
    PAYMENTS.labels("on_time" if on_time else "late", "true" if paid_off else "false").inc()


def record_ingestion_rows(file: str, outcome: str, count: int) -> None:
    """Count `count` rows of `file` (e.g. "customers") that ended as `outcome` (e.g. "loaded", "rejected")."""
    if count:
        INGESTION_ROWS.labels(file, outcome).inc(count)


@contextmanager
def time_job(job: str) -> Iterator[None]:
    """Observe the wall time of the block in job_duration_seconds, labelled success or failure."""
    started = time.perf_counter()
    outcome = "failure"
    try:
        yield
        outcome = "success"
    finally:
        JOB_DURATION.labels(job, outcome).observe(time.perf_counter() - started)


# --- the database pool gauge ---------------------------------------------------------------------------

# Engines whose pools are reported; the lifespan registers its engine and removes it at shutdown.
_engines: weakref.WeakSet[AsyncEngine] = weakref.WeakSet()
_POOL_NAME = "db_pool_checked_out_connections"
_POOL_HELP = "Database connections checked out of this service's pools."


def _checked_out() -> int:
    total = 0
    for engine in list(_engines):
        checkedout = getattr(engine.pool, "checkedout", None)
        if checkedout is not None:
            total += checkedout()
    return total


class _PoolCollector(Collector):
    """Reads the pools at scrape time: exact, and costs nothing between scrapes."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(_POOL_NAME, _POOL_HELP, value=_checked_out())


if MULTIPROCESS:
    # A scrape reaches one worker only, which cannot read the others' pools: each process publishes its
    # own count (at each of its scrapes and request ends, see refresh_pool_gauge) and the scrape sums the
    # live processes.
    _POOL_GAUGE: Gauge | None = Gauge(_POOL_NAME, _POOL_HELP, multiprocess_mode="livesum")
else:
    _POOL_GAUGE = None
    REGISTRY.register(_PoolCollector())


def track_engine(engine: AsyncEngine) -> None:
    _engines.add(engine)


def untrack_engine(engine: AsyncEngine) -> None:
    _engines.discard(engine)


def refresh_pool_gauge() -> None:
    """Multiprocess mode only: publish this process's checked-out count (a no-op otherwise)."""
    if _POOL_GAUGE is not None:
        _POOL_GAUGE.set(_checked_out())


# --- replicas -----------------------------------------------------------------------------------------

# Each API process checks the replicas itself; across processes a scrape shows the worst view.
REPLICA_UP = Gauge(
    "db_replica_up",
    "1 while a replica serves reads (reachable, in recovery, within REPLICA_MAX_LAG_MS), else 0.",
    ["replica"],
    multiprocess_mode="livemin",
)
REPLICA_LAG = Gauge(
    "db_replica_lag_seconds",
    "How far a replica's replay is behind the primary, in seconds (NaN while it cannot be checked).",
    ["replica"],
    multiprocess_mode="livemax",
)
REPLICA_READ_FAILURES = Counter(
    "db_replica_read_failures",
    "Reads a replica failed (unreachable, lost, or cancelled for a recovery conflict) that the primary "
    "answered instead.",
    ["replica"],
)


def replica_state(replica: str, serving: bool, lag_ms: float | None) -> None:
    REPLICA_UP.labels(replica).set(1 if serving else 0)
    REPLICA_LAG.labels(replica).set(float("nan") if lag_ms is None else lag_ms / 1000)


def replica_read_failed(replica: str) -> None:
    REPLICA_READ_FAILURES.labels(replica).inc()


# --- exposition ----------------------------------------------------------------------------------------


def _forget_dead_processes() -> None:
    """Drop the live gauges of processes that died without saying so (a killed uvicorn worker): their
    files would keep, say, http_requests_in_flight up for good. Counters and histograms stay summed."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    for name in os.listdir(directory):
        if not name.startswith("gauge_live"):
            continue
        try:
            pid = int(name.rsplit("_", 1)[1].removesuffix(".db"))
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except (ValueError, IndexError, PermissionError):
            continue  # not a pid file of ours, or another user's live process


def render() -> tuple[bytes, str]:
    """The scrape body and its content type."""
    if MULTIPROCESS:
        _forget_dead_processes()
        refresh_pool_gauge()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead() -> None:
    """Multiprocess mode: drop this process's live gauges (in-flight, pool) when it exits."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())


def start_metrics_server(port: int) -> None:
    """Serve this process's metrics on `port` (for the ARQ worker when it does not share a multiprocess
    directory with the web workers). In multiprocess mode the server aggregates the directory instead."""
    from prometheus_client import start_http_server

    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(port, registry=registry)
    else:
        start_http_server(port)
