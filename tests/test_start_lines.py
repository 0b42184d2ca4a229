"""Under LOG_FORMAT=json every line a process writes is JSON, its servers' own start lines included: the
image runs `credit-approval serve`, the compose worker `arq worker.WorkerSettings --custom-log-dict
worker.LOG_CONFIG`. Each runs for real in a child process against a migrated database and the test Redis."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator

import pytest

from app.devstack import free_port
from tests.conftest import ROOT, migrated_database
from tests.processes import BIN, environment, lines_until, serve, stop


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    async with migrated_database("credit_start_lines") as url:
        yield url


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


def test_serve_writes_uvicorn_start_lines_as_json(database_url: str) -> None:
    process = serve(database_url, free_port())
    try:
        lines = lines_until(process, "Uvicorn running on")
    finally:
        stop(process)
    records = assert_all_json(lines)
    messages = [str(r.get("message", "")) for r in records]
    assert any("Started server process" in m for m in messages), messages
    assert any("Uvicorn running on" in m for m in messages), messages
    assert not any("color_message" in r for r in records), records  # uvicorn's copy with colour codes


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
