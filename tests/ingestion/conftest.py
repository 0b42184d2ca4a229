"""Ingestion commits (one transaction per file), so these tests cannot use the rolled-back connection:
each module gets its own migrated database, emptied before every test, and every test its own ARQ queue
(job ids are content hashes: the same workbook in two tests must not find the other's job).

Jobs run through a real in-process `arq.worker.Worker(burst=True)`, configured from worker.py's
WorkerSettings, against the real Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker
from openpyxl import Workbook
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.config import Settings
from app.ingestion.job_state import JobState, enqueue_ingestion, get_job_state, job_id_for, job_namespace
from app.models import Loan
from app.sample_data import CUSTOMER_HEADERS, LOAN_HEADERS  # the real export's headers
from tests.conftest import REDIS_URL, migrated_database
from worker import WorkerSettings, shutdown, startup


def _reference_data_dir() -> Path:
    """The lender's reference workbooks live beside the repository (../shared/data), never in it.
    REFERENCE_DATA_DIR overrides; a clone made elsewhere falls back to the workplace's copy."""
    candidates = [
        os.environ.get("REFERENCE_DATA_DIR", ""),
        Path(__file__).resolve().parents[3] / "shared" / "data",
        "/work/shared/data",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "customer_data.xlsx").is_file():
            return Path(candidate)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


REAL_DATA = _reference_data_dir()
REAL_CUSTOMERS = REAL_DATA / "customer_data.xlsx"
REAL_LOANS = REAL_DATA / "loan_data.xlsx"


def write_xlsx(
    path: Path,
    headers: Sequence[object],
    rows: Iterable[Sequence[object]],
    *,
    trailing_empty_rows: int = 0,
    sheet: str = "Sheet1",
) -> Path:
    """A small workbook the ordinary (not write-only) way, as a spreadsheet program would save it."""
    workbook = Workbook()
    worksheet = workbook.active
    assert worksheet is not None
    worksheet.title = sheet
    worksheet.append(list(headers))
    for row in rows:
        worksheet.append(list(row))
    last = worksheet.max_row
    for offset in range(1, trailing_empty_rows + 1):
        # Formatted but empty, like the export's trailing rows: a style makes openpyxl write the cells.
        for column in range(1, len(headers) + 1):
            worksheet.cell(row=last + offset, column=column).number_format = "0.00"
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)
    return path


def customer(customer_id: int, **overrides: object) -> list[object]:
    values: dict[str, object] = {
        "Customer ID": customer_id,
        "First Name": f"First{customer_id}",
        "Last Name": f"Last{customer_id}",
        "Age": 30 + customer_id % 40,
        "Phone Number": 9_000_000_000 + customer_id,
        "Monthly Salary": 50_000,
        "Approved Limit": 1_800_000,
    }
    values.update(overrides)
    return [values[h] for h in CUSTOMER_HEADERS]


def loan(customer_id: int, loan_id: int, **overrides: object) -> list[object]:
    values: dict[str, object] = {
        "Customer ID": customer_id,
        "Loan ID": loan_id,
        "Loan Amount": 100_000,
        "Tenure": 12,
        "Interest Rate": 12.5,
        "Monthly payment": 8_908,
        "EMIs paid on Time": 10,
        "Date of Approval": dt.datetime(2020, 1, 15),
        "End Date": dt.datetime(2021, 1, 15),
    }
    values.update(overrides)
    return [values[h] for h in LOAN_HEADERS]


@pytest.fixture(scope="module")
async def ingest_database_url() -> AsyncIterator[str]:
    async with migrated_database("credit_ingest") as url:
        yield url


@pytest.fixture
async def db(ingest_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the module's database, emptied (ids restarted) before the test."""
    engine = create_async_engine(ingest_database_url)
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE customers, loans RESTART IDENTITY CASCADE"))
    yield engine
    await engine.dispose()


@pytest.fixture
def ingest_settings(ingest_database_url: str) -> Settings:
    return Settings(
        database_url=ingest_database_url,
        redis_url=REDIS_URL,
        arq_queue_name=f"credit-ingest-test:{uuid.uuid4().hex[:12]}",
        log_level="WARNING",
        ingestion_batch_rows=50,  # several batches even for small files: cross-batch paths get exercised
    )


@pytest.fixture
async def redis(ingest_settings: Settings) -> AsyncIterator[ArqRedis]:
    queue = ingest_settings.arq_queue_name
    pool = await create_pool(RedisSettings.from_dsn(REDIS_URL), default_queue_name=queue)
    yield pool
    await pool.delete(queue, queue + ":health-check")
    await pool.aclose()


def make_worker(settings: Settings, **overrides: Any) -> Worker:
    """An in-process worker as `arq worker.WorkerSettings` would build it, on the test's queue."""
    options: dict[str, Any] = {
        "functions": WorkerSettings.functions,
        "queue_name": settings.arq_queue_name,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "ctx": {"settings": settings},
        "job_timeout": WorkerSettings.job_timeout,
        "keep_result": WorkerSettings.keep_result,
        "health_check_interval": WorkerSettings.health_check_interval,
        "burst": True,
        "poll_delay": 0.05,
        "handle_signals": False,
        "max_tries": 1,
    }
    options.update(overrides)
    return Worker(**options)


WORKER_BOUND_S = 300
"""A burst worker that has not emptied its queue by then is hung: fail the test instead of the CI run."""


async def run_worker(settings: Settings, **overrides: Any) -> Worker:
    worker = make_worker(settings, **overrides)
    try:
        async with asyncio.timeout(WORKER_BOUND_S):
            await worker.main()
    finally:
        await worker.close()
    return worker


@dataclass
class Ingest:
    settings: Settings
    redis: ArqRedis
    job_ids: list[str] = field(default_factory=list)

    def job_id(self, customers: Path, loans: Path) -> str:
        job_id = job_id_for(customers, loans, job_namespace(self.settings))
        self.job_ids.append(job_id)
        return job_id

    async def forget(self) -> None:
        """Remove what the test's jobs left in Redis: ARQ's keys and ours."""
        for job_id in self.job_ids:
            keys = [key async for key in self.redis.scan_iter(match=f"*{job_id}*")]
            if keys:
                await self.redis.delete(*keys)

    async def enqueue(self, customers: Path, loans: Path, *, force: bool = False) -> tuple[str, bool]:
        job_id = self.job_id(customers, loans)
        queue = self.settings.arq_queue_name
        enqueued = await enqueue_ingestion(
            self.redis, job_id, customers, loans, queue_name=queue, force=force
        )
        if enqueued.job_id != job_id:
            self.job_ids.append(enqueued.job_id)
        return enqueued.job_id, enqueued.created

    async def drop_cron_jobs(self) -> None:
        """A real worker (`arq worker.WorkerSettings`, started by some tests) puts its cron job on this queue
        at start. One it was killed or stopped in the middle of stays marked in progress, so no worker runs
        it, and a burst worker, which waits for an empty queue, would wait for it until its bound."""
        queue = self.settings.arq_queue_name
        cron = [job for job in await self.redis.zrange(queue, 0, -1) if job.startswith(b"cron:")]
        if cron:
            await self.redis.zrem(queue, *cron)

    async def state(self, job_id: str) -> JobState | None:
        return await get_job_state(self.redis, job_id, self.settings.arq_queue_name)

    async def __call__(self, customers: Path, loans: Path, *, force: bool = False) -> JobState:
        """Enqueue, run a burst worker until the queue is empty, return the job's final state."""
        job_id, _ = await self.enqueue(customers, loans, force=force)
        await self.drop_cron_jobs()
        await run_worker(self.settings)
        state = await self.state(job_id)
        assert state is not None
        return state


@pytest.fixture
async def ingest(ingest_settings: Settings, redis: ArqRedis, db: AsyncEngine) -> AsyncIterator[Ingest]:
    runner = Ingest(ingest_settings, redis)
    yield runner
    await runner.forget()


def require_real_workbooks() -> None:
    if not (REAL_CUSTOMERS.exists() and REAL_LOANS.exists()):
        pytest.skip(f"the reference workbooks are not at {REAL_DATA} (they live outside this repository)")


async def dump(engine: AsyncEngine) -> dict[str, Any]:
    """Every row of both tables with its physical identity (xmin changes if a row is rewritten, even to
    the same values), and where both identity sequences stand."""
    sequence = "pg_sequence_last_value(pg_get_serial_sequence('{}', '{}')::regclass)"
    async with engine.connect() as conn:
        # created_at last, whatever the column order migrations left: callers may drop (xmin, created_at).
        customers = await conn.execute(
            text(
                "SELECT xmin::text, customer_id, source_customer_id, origin_unknown, first_name, last_name,"
                " age, phone_number, monthly_salary, approved_limit, created_at"
                " FROM customers ORDER BY customer_id"
            )
        )
        loan_columns = [
            c.name
            for c in Loan.__table__.columns
            if c.name != "created_at"  # type: ignore[attr-defined]
        ]
        loans = await conn.execute(
            text(f"SELECT xmin::text, {', '.join(loan_columns)}, created_at FROM loans ORDER BY loan_id")
        )
        sequences = await conn.execute(
            text(
                f"SELECT {sequence.format('customers', 'customer_id')}, {sequence.format('loans', 'loan_id')}"
            )
        )
        return {
            "customers": [tuple(r) for r in customers],
            "loans": [tuple(r) for r in loans],
            "sequences": tuple(sequences.one()),
        }


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())
