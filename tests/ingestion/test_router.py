"""GET /api/ingestions/{job_id}: status, progress and report over REST."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.sample_data import generate
from tests.ingestion.conftest import LOAN_HEADERS, Ingest, loan, write_xlsx

ROUTE = "/api/ingestions/{job_id}"

# ARQ's Worker.close() still calls redis-py's deprecated close(); not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@pytest.fixture
def api(client: AsyncClient) -> AsyncClient:
    """The application as app.main builds it (which includes the ingestion router)."""
    return client


@pytest.fixture
async def app_ingest(
    settings: Settings, ingest_settings: Settings, redis: ArqRedis, db: AsyncEngine
) -> AsyncIterator[Ingest]:
    """Jobs on the API's queue (the database they load is the ingestion tests' own)."""
    runner = Ingest(ingest_settings.model_copy(update={"arq_queue_name": settings.arq_queue_name}), redis)
    yield runner
    await runner.forget()


async def test_an_unknown_job_is_a_404_problem(api: AsyncClient) -> None:
    for path in ("/api/ingestions/ingest-0123456789abcdef", "/api/ingestions/ingest-0123456789abcdef/"):
        response = await api.get(path)
        assert response.status_code == 404, path  # no redirect for the trailing slash
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert body["status"] == 404 and "ingest-0123456789abcdef" in body["detail"]


async def test_a_malformed_id_is_rejected(api: AsyncClient) -> None:
    response = await api.get("/api/ingestions/" + "x" * 200)
    assert response.status_code == 422


async def test_a_finished_job_has_its_report(api: AsyncClient, app_ingest: Ingest, tmp_path: Path) -> None:
    files = generate(tmp_path, customers=25, loans=120, seed=4)
    state = await app_ingest(files.customers, files.loans)
    assert state.status == "complete"
    response = await api.get(f"/api/ingestions/{state.job_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["job_id"] == state.job_id and body["status"] == "complete" and body["error"] is None
    assert [(f["file"], f["rows_read"], f["inserted"]) for f in body["report"]["files"]] == [
        ("customers", 25, 25),
        ("loans", 120, 120),
    ]
    assert [p["stage"] for p in body["progress"]["files"]] == ["done", "done"]
    assert (await api.get(f"/api/ingestions/{state.job_id}/")).json() == body


async def test_a_failed_job_says_why(api: AsyncClient, app_ingest: Ingest, tmp_path: Path) -> None:
    customers = write_xlsx(tmp_path / "c.xlsx", ["Customer ID"], [[1]])
    loans = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS, [loan(1, 1)])
    state = await app_ingest(customers, loans)
    body = (await api.get(f"/api/ingestions/{state.job_id}")).json()
    assert body["status"] == "failed"
    assert "missing the required column(s) 'First Name'" in body["error"]
    assert body["report"]["files"] == []


async def test_a_queued_job(api: AsyncClient, app_ingest: Ingest, tmp_path: Path) -> None:
    files = generate(tmp_path, customers=5, loans=5, seed=1)
    job_id, created = await app_ingest.enqueue(files.customers, files.loans)
    assert created
    body = (await api.get(f"/api/ingestions/{job_id}")).json()
    assert (body["status"], body["report"], body["progress"]) == ("queued", None, None)
    await app_ingest.redis.delete(app_ingest.settings.arq_queue_name)  # never run it


async def test_the_route_is_documented_once(api: AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    operation = schema["paths"][ROUTE]["get"]
    assert operation["tags"] == ["ingestion"]
    assert set(operation["responses"]) >= {"200", "404"}
    assert ROUTE + "/" not in schema["paths"]
    assert "JobState" in schema["components"]["schemas"]
