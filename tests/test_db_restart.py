"""A PostgreSQL restart costs at most one failed request, and the next import works.

A throw-away cluster of our own, on a spare port, started as the embedded dev stack starts one
(app.devstack, pgserver's binaries), stopped ("fast": clients disconnected) and started again on the
same port while the app keeps running with a warm pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

from app.devstack import Stack, ensure_database, free_port
from app.ingestion.jobs import ingest_workbooks
from app.sample_data import generate
from tests.conftest import REDIS_URL, run_migrations
from tests.live import live_client, live_settings, register
from worker import shutdown, startup

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]


class Cluster:
    def __init__(self, data_dir: Path) -> None:
        self.stack = Stack(data_dir)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/credit"

    def start(self) -> None:
        assert self.stack._start_postgres(self.port) == self.port

    def restart(self) -> None:
        self.stack.stop()
        self.start()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    pytest.importorskip("pgserver")
    running = Cluster(tmp_path / "stack")
    running.start()
    try:
        ensure_database(running.url)
        run_migrations(running.url)
        yield running
    finally:
        running.stack.stop()


async def test_a_restart_costs_no_request(cluster: Cluster) -> None:
    settings = live_settings(cluster.url, db_pool_size=8)
    async with live_client(settings) as (_, client):
        customer = await register(client)
        path = f"/api/view-loans/{customer['customer_id']}"
        # Warm the whole pool: every connection in it predates the restart.
        warm = await asyncio.gather(*(client.get(path) for _ in range(16)))
        assert {r.status_code for r in warm} == {200}

        await asyncio.to_thread(cluster.restart)

        statuses = [(await client.get(path)).status_code for _ in range(30)]
        write = await client.post(
            "/api/create-loan",
            json={
                "customer_id": customer["customer_id"],
                "loan_amount": 10_000,
                "interest_rate": 14,
                "tenure": 12,
            },
        )
    # Reads whose pooled connection died are sent again on a new one (app.db), writes start on a new one.
    assert statuses == [200] * 30, statuses
    assert write.status_code == 201, write.text


async def test_the_first_import_after_a_restart_succeeds(cluster: Cluster, tmp_path: Path) -> None:
    from redis.asyncio import Redis

    files = generate(tmp_path / "files", customers=20, loans=60, seed=3)
    ctx: dict[str, Any] = {"settings": live_settings(cluster.url), "redis": Redis.from_url(REDIS_URL)}
    await startup(ctx)
    try:
        ctx["job_id"] = "before-restart"
        before = await ingest_workbooks(ctx, str(files.customers), str(files.loans))
        assert before["status"] == "complete", before
        await asyncio.to_thread(cluster.restart)
        ctx["job_id"] = "after-restart"
        after = await ingest_workbooks(ctx, str(files.customers), str(files.loans))
    finally:
        await shutdown(ctx)
        await ctx["redis"].delete(*[
            f"credit-approval:ingestion:{job}:{part}"
            for job in ("before-restart", "after-restart") for part in ("progress", "report")
        ])  # fmt: skip
        await ctx["redis"].aclose()
    assert after["status"] == "complete", after


def test_the_cluster_url_is_ours(cluster: Cluster) -> None:
    assert make_url(cluster.url).port == cluster.port != 5432
