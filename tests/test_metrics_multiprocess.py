"""Multiprocess mode: samples written by several processes (uvicorn workers, the ARQ worker) add up in a
scrape, and a process that has exited leaves the live gauges. Each step runs in its own interpreter because
prometheus-client picks its storage when app.metrics is first imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent

WORKER = """
from app import metrics
metrics.observe_request("POST", "/api/create-loan", 201, 0.012)
metrics.record_loan_created()
metrics.record_ingestion_rows("customers", "loaded", 5)
metrics.HTTP_IN_FLIGHT.inc()
if {exits}:
    metrics.mark_process_dead()
"""

SCRAPE = """
import sys
from app import metrics
body, content_type = metrics.render()
sys.stdout.write(body.decode())
"""


def run(code: str, directory: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def test_samples_from_several_processes_add_up(tmp_path: Path) -> None:
    run(WORKER.format(exits=True), tmp_path)  # a worker that has shut down
    run(WORKER.format(exits=False), tmp_path)  # one still serving (its files stay live)
    text = run(SCRAPE, tmp_path)

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    route = (("method", "POST"), ("route", "/api/create-loan"), ("status_class", "2xx"))
    assert samples[("http_requests_total", route)] == 2
    assert samples[("loans_created_total", ())] == 2
    assert samples[("ingestion_rows_total", (("file", "customers"), ("outcome", "loaded")))] == 10
    # livesum: the exited process no longer counts.
    assert samples[("http_requests_in_flight", ())] == 1
    assert ("db_pool_checked_out_connections", ()) in samples
