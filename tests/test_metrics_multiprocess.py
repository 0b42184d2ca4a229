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
if {stays}:
    print("ready", flush=True)
    import time
    time.sleep(60)
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
    run(WORKER.format(exits=True, stays=False), tmp_path)  # a worker that has shut down
    run(WORKER.format(exits=False, stays=False), tmp_path)  # one killed: it never said it was going
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    serving = subprocess.Popen(  # one still serving: its live gauges count
        [sys.executable, "-c", WORKER.format(exits=False, stays=True)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert serving.stdout is not None and serving.stdout.readline().strip() == "ready"
        text = run(SCRAPE, tmp_path)
    finally:
        serving.kill()
        serving.wait()

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    route = (("method", "POST"), ("route", "/api/create-loan"), ("status_class", "2xx"))
    assert samples[("http_requests_total", route)] == 3
    assert samples[("loans_created_total", ())] == 3
    assert samples[("ingestion_rows_total", (("file", "customers"), ("outcome", "loaded")))] == 15
    # livesum: only the process still serving counts; the one that exited and the one killed do not.
    assert samples[("http_requests_in_flight", ())] == 1
    assert ("db_pool_checked_out_connections", ()) in samples


def test_the_worker_serves_its_metrics_on_its_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = f"""
import asyncio, urllib.request
from app.config import Settings
from app import metrics
from worker import startup, shutdown
async def main():
    ctx = {{"settings": Settings(worker_metrics_port={port})}}
    await startup(ctx)
    metrics.record_ingestion_rows("loans", "loaded", 7)
    print(urllib.request.urlopen("http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
    await shutdown(ctx)
asyncio.run(main())
"""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    text = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert 'ingestion_rows_total{file="loans",outcome="loaded"} 7.0' in text


def test_the_compose_health_probe_passes_on_a_live_worker_and_writes_no_files(tmp_path: Path) -> None:
    """The worker's healthcheck exactly as docker-compose.yml runs it, with the image's
    PROMETHEUS_MULTIPROC_DIR set: it must pass while a worker is alive and leave no metrics file anywhere
    (`env PROMETHEUS_MULTIPROC_DIR=` did not: prometheus-client took the empty value as multiprocess mode
    in the working directory, which the image's user cannot write, and the worker never became healthy)."""
    import asyncio
    import time

    import yaml

    from tests.conftest import create_migrated_database, drop_database
    from tests.processes import environment, lines_until, stop

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    probe = compose["services"]["worker"]["healthcheck"]["test"]
    assert probe[0] == "CMD"
    metrics_dir, cwd = tmp_path / "metrics", tmp_path / "cwd"
    metrics_dir.mkdir()
    cwd.mkdir()
    name, url = asyncio.run(create_migrated_database("credit_probe"))
    try:
        env = {**environment(url), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(ROOT)}
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"

        def check() -> subprocess.CompletedProcess[str]:
            return subprocess.run(probe[1:], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)

        no_worker = check()
        assert no_worker.returncode == 1 and "Traceback" not in no_worker.stderr, no_worker.stderr
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "arq"), "worker.WorkerSettings"],
            cwd=ROOT, env=environment(url), stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            lines_until(worker, "Starting worker for")
            time.sleep(1)  # its first health record
            alive = check()
        finally:
            stop(worker)
    finally:
        asyncio.run(drop_database(name))
    assert alive.returncode == 0, alive.stdout + alive.stderr
    assert list(metrics_dir.iterdir()) == [] and list(cwd.iterdir()) == []


def test_serve_empties_the_metrics_directory_before_its_workers_start(tmp_path: Path) -> None:
    import asyncio

    from app.devstack import free_port
    from tests.conftest import create_migrated_database, drop_database
    from tests.processes import lines_until, serve, stop

    stale = tmp_path / "counter_4242.db"  # a process of an earlier start
    stale.write_bytes(b"x" * 16)
    name, url = asyncio.run(create_migrated_database("credit_serve_metrics"))
    try:
        process = serve(url, free_port(), PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
        try:
            lines_until(process, "Uvicorn running on")
        finally:
            stop(process)
    finally:
        asyncio.run(drop_database(name))
    assert not stale.exists()
