"""GET /api/ingestions/{job_id}: an ingestion job's status, progress and report, for REST clients."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from app.errors import NotFound, Problem
from app.ingestion.jobs import JobState, get_job_state

router = APIRouter(prefix="/api", tags=["ingestion"])

JobId = Annotated[
    str,
    Path(
        description="The id `credit-approval ingest` printed (derived from the two files' contents).",
        pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
        examples=["ingest-3f2a9c0e5b7d41a8a1c2e3f4a5b6c7d8"],
    ),
]


@router.get(
    "/ingestions/{job_id}",
    response_model=JobState,
    summary="Status, progress and report of an ingestion job",
    responses={404: {"model": Problem, "description": "No such job (or its report has expired)."}},
)
@router.get("/ingestions/{job_id}/", response_model=JobState, include_in_schema=False)
async def get_ingestion(job_id: JobId, request: Request) -> JobState:
    """`queued`, then `in_progress` with rows read per file, then `complete` or `failed` with the report
    (rows read, inserted, updated, unchanged, skipped, re-keyed per file). Reports are kept for a day."""
    state = await get_job_state(request.app.state.redis, job_id, request.app.state.settings.arq_queue_name)
    if state is None:
        raise NotFound(f"No ingestion job {job_id!r}.")
    return state
