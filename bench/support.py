"""What both benchmark scripts (run.py, ingest_bench.py) need: the cached sample workbooks and the
environment of an ingestion worker subprocess."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


def workbooks(
    customers: int, loans: int, seed: int = 0, *, say: Callable[[str], None] = print
) -> tuple[Path, Path]:
    """The sample workbooks for one size, generated once and cached under bench/out/."""
    from app.sample_data import generate

    directory = OUT / f"c{customers}_l{loans}_s{seed}"
    files = (directory / "customer_data.xlsx", directory / "loan_data.xlsx")
    if not all(path.exists() for path in files):
        say(f"generating {customers:,} customers / {loans:,} loans into {directory.relative_to(ROOT)}")
        generate(directory, customers=customers, loans=loans, seed=seed)
    return files


def worker_env(database_url: str, redis_url: str, queue: str) -> dict[str, str]:
    """`arq worker.WorkerSettings` on the bench's database and its own queue, quiet while measured."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ARQ_QUEUE_NAME": queue,
        "LOG_LEVEL": "WARNING",
    }
