"""Jobs don't share their fate: a worker killed mid-import, a stuck job beside a valid one, and a
worker's memory that does not grow with the rows a file repeats. Real `arq worker.WorkerSettings`
processes, as an operator runs them, on the test's own database and queue."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.ingestion.job_state import JobState
from app.sample_data import generate
from tests.conftest import ROOT
from tests.ingestion.conftest import (
    CUSTOMER_HEADERS,
    LOAN_HEADERS,
    Ingest,
    customer,
    dump,
    scalar,
    write_xlsx,
)
from tests.ingestion.xlsx_parts import write_rows

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@asynccontextmanager
async def worker_process(settings: Settings, **env: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`arq worker.WorkerSettings` in its own process group (its reader children die with it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "arq",
        "worker.WorkerSettings",
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "ARQ_QUEUE_NAME": settings.arq_queue_name,
            "LOG_LEVEL": "WARNING",
            "INGESTION_BATCH_ROWS": "2000",
            **env,
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


def readers_of(pid: int) -> Iterator[int]:
    """The worker's workbook reader processes."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"app.ingestion.reader" in cmdline:
            yield int(entry.name)


async def wait_for_state(
    ingest: Ingest, job_id: str, done: Any, *, within: float, poll: float = 0.1
) -> JobState:
    deadline = time.monotonic() + within
    while True:
        state = await ingest.state(job_id)
        if state is not None and done(state):
            return state
        assert time.monotonic() < deadline, f"job {job_id} never got there: {state}"
        await asyncio.sleep(poll)


def loading_loans(state: JobState) -> bool:
    if state.status != "in_progress" or state.progress is None:
        return False
    loans = next(f for f in state.progress.files if f.file == "loans")
    return loans.rows_read > 0


def reading_customers(state: JobState) -> bool:
    if state.status != "in_progress" or state.progress is None:
        return False
    customers = next(f for f in state.progress.files if f.file == "customers")
    return customers.stage == "reading" and customers.rows_read > 0


def finished(state: JobState) -> bool:
    return state.status in ("complete", "failed")


async def test_a_worker_killed_mid_import_is_taken_up_again_and_every_row_lands_once(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    files = generate(tmp_path, customers=3_000, loans=40_000, seed=31)
    job_id, _ = await ingest.enqueue(files.customers, files.loans)
    lease = 5
    async with worker_process(ingest.settings, INGESTION_LEASE_S=str(lease)) as first:
        await wait_for_state(ingest, job_id, loading_loans, within=60, poll=0.05)
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its readers, mid-file
        await first.wait()
    assert await scalar(db, "SELECT count(*) FROM loans") == 0  # the open transactions died with it
    killed_at = time.monotonic()
    async with worker_process(ingest.settings, INGESTION_LEASE_S=str(lease)):
        state = await wait_for_state(ingest, job_id, finished, within=120)
    assert state.status == "complete", state.error
    # Taken up once the dead worker's lease lapsed, not after ARQ's hour.
    assert state.report is not None and state.report.started_at.timestamp() > time.time() - 120
    assert time.monotonic() - killed_at < 120
    recovered = await dump(db)

    # Exactly once: the same rows as one uninterrupted run of the same files.
    async with db.begin() as conn:
        await conn.execute(text("TRUNCATE customers, loans RESTART IDENTITY CASCADE"))
    clean = await ingest(files.customers, files.loans, force=True)
    assert clean.status == "complete", clean.error
    assert _content(await dump(db)) == _content(recovered)


def _content(snapshot: dict[str, Any]) -> tuple[Any, ...]:
    return (
        [row[1:-1] for row in snapshot["customers"]],
        [row[1:-1] for row in snapshot["loans"]],
        snapshot["sequences"],
    )


async def test_a_stuck_job_does_not_hold_up_a_valid_one(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    big = generate(tmp_path / "big", customers=40_000, loans=10_000, seed=32)
    small_customers = write_xlsx(tmp_path / "c.xlsx", CUSTOMER_HEADERS, [customer(90_001)])
    small_loans = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS, [])
    stuck_id, _ = await ingest.enqueue(big.customers, big.loans)
    stall = 3
    async with worker_process(ingest.settings, INGESTION_STALL_TIMEOUT_S=str(stall)) as worker:
        await wait_for_state(ingest, stuck_id, reading_customers, within=60, poll=0.02)
        readers = list(readers_of(worker.pid))
        assert readers, "no reader process found"
        for pid in readers:
            os.kill(pid, signal.SIGSTOP)  # the reader hangs: its job holds its transactions, idle
        valid_id, _ = await ingest.enqueue(small_customers, small_loans)
        started = time.monotonic()
        valid = await wait_for_state(ingest, valid_id, finished, within=60)
        waited = time.monotonic() - started
        stuck = await wait_for_state(ingest, stuck_id, finished, within=30)
    assert valid.status == "complete", valid.error
    assert waited < stall + 15, f"the valid job waited {waited:.1f} s"
    assert stuck.status == "failed"
    assert stuck.error is not None and "sent nothing for 3 s" in stuck.error and "watchdog" in stuck.error
    assert await scalar(db, "SELECT count(*) FROM customers") == 1  # the stuck job wrote nothing
    assert await scalar(db, "SELECT count(*) FROM loans") == 0


def _repeated_rows(count: int) -> Iterator[tuple[object, ...]]:
    """Half the rows repeat one Customer ID (superseded), half are new Customer IDs that repeat one
    phone number (phone conflicts)."""
    for n in range(count):
        if n % 2:
            yield tuple(customer(1))
        else:
            yield tuple(customer(100 + n, **{"Phone Number": 9_000_000_777}))


async def test_worker_memory_does_not_grow_with_repeated_rows(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    loans = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS, [])
    peaks: dict[int, float] = {}
    async with worker_process(ingest.settings):
        for count in (20_000, 200_000):
            customers = tmp_path / f"c{count}.xlsx"
            write_rows(customers, [CUSTOMER_HEADERS, *_repeated_rows(count)])
            job_id, _ = await ingest.enqueue(customers, loans)
            state = await wait_for_state(ingest, job_id, finished, within=240)
            assert state.status == "complete", state.error
            assert state.report is not None and state.report.worker_peak_rss_mb is not None
            report = state.report.files[0]
            # Counted in full, listed in part (the first 100 of each, in row order).
            assert report.duplicates == count // 2 - 1 and len(report.duplicate_rows) == 100
            assert report.duplicates_not_shown == count // 2 - 1 - 100
            assert report.skipped == count // 2 - 1 and len(report.errors) == 100
            assert report.errors_not_shown == count // 2 - 1 - 100
            peaks[count] = state.report.worker_peak_rss_mb
    assert peaks[200_000] <= peaks[20_000] * 1.10, peaks
