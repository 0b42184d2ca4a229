"""The `credit-approval` CLI: argument checks in-process, and ingestion end to end against a real
`arq worker.WorkerSettings` subprocess, real PostgreSQL and real Redis."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from app.cli import app as cli
from app.sample_data import generate
from tests.conftest import REDIS_URL, ROOT, create_migrated_database, drop_database
from tests.ingestion.conftest import (
    LOAN_HEADERS,
    REAL_CUSTOMERS,
    REAL_LOANS,
    loan,
    require_real_workbooks,
    write_xlsx,
)

runner = CliRunner()
JOB_ID = re.compile(r"^ingest-[0-9a-f]{32}$", re.MULTILINE)


@pytest.mark.parametrize("command", ["ingest", "job", "sample-data", "serve", "worker", "migrate"])
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output.splitlines()) > 4


def test_no_command_prints_usage() -> None:
    result = runner.invoke(cli, [])
    assert "ingest" in result.output and "sample-data" in result.output


def test_ingest_rejects_a_missing_file_with_exit_2(tmp_path: Path) -> None:
    good = generate(tmp_path, customers=2, loans=2)
    result = runner.invoke(
        cli, ["ingest", "--customers", str(good.customers), "--loans", str(tmp_path / "no.xlsx")]
    )
    assert result.exit_code == 2
    assert "loans file" in result.stderr and "does not exist" in result.stderr


def test_ingest_rejects_a_file_that_is_not_a_workbook_with_exit_2(tmp_path: Path) -> None:
    good = generate(tmp_path, customers=2, loans=2)
    text_file = tmp_path / "notes.xlsx"
    text_file.write_text("customer,loan\n")
    result = runner.invoke(cli, ["ingest", "--customers", str(text_file), "--loans", str(good.loans)])
    assert result.exit_code == 2
    assert "not a readable .xlsx workbook" in result.stderr
    result = runner.invoke(cli, ["ingest", "--customers", str(tmp_path), "--loans", str(good.loans)])
    assert result.exit_code == 2 and "is not a file" in result.stderr


def test_a_bad_option_is_a_usage_error() -> None:
    assert runner.invoke(cli, ["sample-data", "x", "--customers", "zero"]).exit_code == 2


def test_sample_data_writes_two_deterministic_workbooks(tmp_path: Path) -> None:
    result = runner.invoke(
        cli, ["sample-data", str(tmp_path / "a"), "--customers", "7", "--loans", "20", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "customer_data.xlsx").exists() and (tmp_path / "a" / "loan_data.xlsx").exists()
    runner.invoke(
        cli, ["sample-data", str(tmp_path / "b"), "--customers", "7", "--loans", "20", "--seed", "3"]
    )
    from tests.test_sample_data import read

    for name in ("customer_data.xlsx", "loan_data.xlsx"):
        assert read(tmp_path / "a" / name) == read(tmp_path / "b" / name)
    assert len(read(tmp_path / "a" / "loan_data.xlsx")[1]) == 20


# --------------------------------------------------------------------------------------------------
# End to end: the CLI and the worker as separate processes, as an operator runs them.


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[dict[str, str]]:
    """A migrated database, a queue of its own, and a real worker process serving it."""
    name, url = await create_migrated_database("credit_cli")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": REDIS_URL,
        "ARQ_QUEUE_NAME": f"credit-cli-test:{uuid.uuid4().hex[:12]}",
        "LOG_LEVEL": "WARNING",
        "INGESTION_BATCH_ROWS": "100",
    }
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "arq",
        "worker.WorkerSettings",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield env
    finally:
        worker.terminate()
        try:
            _, errors = await asyncio.wait_for(worker.communicate(), timeout=30)
        except TimeoutError:
            worker.kill()
            _, errors = await worker.communicate()
        await drop_database(name)
        assert b"Traceback" not in errors or b"IngestionFailed" in errors, errors.decode()[-3000:]


def credit_approval(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(credit_approval, env, *args)


async def count(env: dict[str, str], table: str) -> int:
    engine = create_async_engine(env["DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())
    finally:
        await engine.dispose()


@pytest.fixture
def real_files() -> Iterator[tuple[str, str]]:
    require_real_workbooks()
    yield str(REAL_CUSTOMERS), str(REAL_LOANS)


async def test_ingest_wait_loads_the_real_workbooks_and_prints_the_report(
    stack: dict[str, str], real_files: tuple[str, str]
) -> None:
    customers, loans = real_files
    result = await run(stack, "ingest", "--customers", customers, "--loans", loans, "--wait")
    assert result.returncode == 0, result.stderr
    job_id = JOB_ID.search(result.stdout)
    assert job_id is not None, result.stdout
    assert "complete" in result.stdout
    table = re.search(r"rows read\s+│\s+300 │\s+782 │\n.*inserted\s+│\s+300 │\s+782 │", result.stdout)
    assert table is not None, result.stdout
    assert "29 loans re-keyed" in result.stdout
    assert "customers" in result.stderr  # the progress display
    assert (await count(stack, "customers"), await count(stack, "loans")) == (300, 782)

    # The same files again: the job exists, nothing is queued twice, the report is shown again.
    again = await run(stack, "ingest", "--customers", customers, "--loans", loans, "--wait")
    assert again.returncode == 0, again.stderr
    assert job_id.group(0) in again.stdout and "already exists" in again.stderr
    assert "29 loans re-keyed" in again.stdout

    shown = await run(stack, "job", job_id.group(0))
    assert shown.returncode == 0 and "complete" in shown.stdout and "782" in shown.stdout
    as_json = await run(stack, "job", job_id.group(0), "--json")
    assert as_json.returncode == 0 and '"rekeyed": 29' in as_json.stdout


async def test_ingest_without_wait_returns_the_id_at_once_and_job_follows_it(
    stack: dict[str, str], tmp_path: Path
) -> None:
    files = generate(tmp_path, customers=40, loans=300, seed=21)
    result = await run(stack, "ingest", "--customers", str(files.customers), "--loans", str(files.loans))
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert JOB_ID.fullmatch(job_id)
    for _ in range(120):  # the worker picks it up; `job` reports where it is meanwhile
        shown = await run(stack, "job", job_id)
        assert shown.returncode == 0, shown.stderr
        if "complete" in shown.stdout:
            break
        await asyncio.sleep(0.5)
    assert "Ingestion report" in shown.stdout


async def test_a_failing_job_exits_1_with_the_reason(stack: dict[str, str], tmp_path: Path) -> None:
    customers = generate(tmp_path, customers=3, loans=1).customers
    loans = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS[:-1], [loan(1, 1)[:-1]])
    result = await run(stack, "ingest", "--customers", str(customers), "--loans", str(loans), "--wait")
    assert result.returncode == 1
    assert "missing the required column(s) 'End Date'" in result.stderr
    assert "failed" in result.stdout


async def test_job_exits_1_for_an_unknown_id(stack: dict[str, str]) -> None:
    result = await run(stack, "job", "ingest-00000000000000000000000000000000")
    assert result.returncode == 1
    assert "no such job" in result.stderr


async def test_an_unreachable_redis_is_a_clear_error(stack: dict[str, str], tmp_path: Path) -> None:
    files = generate(tmp_path, customers=2, loans=2)
    env = {**stack, "REDIS_URL": "redis://127.0.0.1:1/0"}
    result = await run(env, "ingest", "--customers", str(files.customers), "--loans", str(files.loans))
    assert result.returncode == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in result.stderr
