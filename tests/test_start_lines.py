"""Under LOG_FORMAT=json every line a process writes is JSON, its servers' own start lines included: the
image runs `credit-approval serve`, the compose worker `arq worker.WorkerSettings --custom-log-dict
worker.LOG_CONFIG`. Each runs for real in a child process against a migrated database and the test Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.devstack import free_port
from tests.conftest import REDIS_URL, ROOT, migrated_database

BIN = Path(sys.executable).parent


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    async with migrated_database("credit_start_lines") as url:
        yield url


def environment(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        ARQ_QUEUE_NAME=f"credit-approval:start-lines:{os.getpid()}",  # nobody else's jobs
        WORKER_METRICS_PORT="0",
        **extra,
    )
    return env


def lines_until(process: subprocess.Popen[str], marker: str, timeout_s: float = 60) -> list[str]:
    """stderr lines up to and including the first that contains `marker`."""
    assert process.stderr is not None
    deadline = time.monotonic() + timeout_s
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break  # exited
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} never came; the process wrote: {lines}")


def assert_all_json(lines: list[str]) -> list[dict[str, object]]:
    records = []
    for line in lines:
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"a plain-text line under LOG_FORMAT=json: {line!r}") from None
    return records


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_serve_writes_uvicorn_start_lines_as_json(database_url: str) -> None:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "credit-approval"), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=ROOT, env=environment(database_url), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        lines = lines_until(process, "Uvicorn running on")
    finally:
        stop(process)
    records = assert_all_json(lines)
    messages = [str(r.get("message", "")) for r in records]
    assert any("Started server process" in m for m in messages), messages
    assert any("Uvicorn running on" in m for m in messages), messages


def test_the_compose_worker_command_writes_arq_start_lines_as_json(database_url: str) -> None:
    process = subprocess.Popen(
        [str(BIN / "arq"), "worker.WorkerSettings", "--custom-log-dict", "worker.LOG_CONFIG"],
        cwd=ROOT, env=environment(database_url), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        lines = lines_until(process, "Starting worker for")
    finally:
        stop(process)
    records = assert_all_json(lines)
    assert any("Starting worker for" in str(r.get("message", "")) for r in records), records
