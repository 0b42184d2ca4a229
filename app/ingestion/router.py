"""GET /api/ingestions/{job_id}: an ingestion job's status, progress and report, for REST clients."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from app.errors import PROBLEM_JSON, NotFound
from app.ingestion.job_state import JobState, get_job_state
from app.responses import problem_responses

router = APIRouter(prefix="/api", tags=["ingestion"])

_EXAMPLE_ID = "ingest-3f2a9c0e5b7d41a8a1c2e3f4a5b6c7d8"


def _problem(status: int, description: str, **example: Any) -> dict[str, Any]:
    """The shared problem+json declaration, told in this route's words."""
    media = problem_responses(status)[status]["content"][PROBLEM_JSON]
    shown = {**media["example"], "instance": f"/api/ingestions/{_EXAMPLE_ID}", **example}
    shown.pop("field", None)
    return {"description": description, "content": {PROBLEM_JSON: {**media, "example": shown}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    404: _problem(
        404, "No such job (or its report has expired).", detail=f"No ingestion job '{_EXAMPLE_ID}'."
    ),
    422: _problem(
        422,
        "The job id is malformed.",
        detail="Invalid value for: path.job_id",
        errors=[
            {
                "field": "path.job_id",
                "message": "String should match pattern '^[A-Za-z0-9_.:-]{1,128}$'",
                "type": "string_pattern_mismatch",
            }
        ],
    ),
    503: _problem(
        503,
        "The job store (Redis) is unavailable; retry later.",
        detail="The job store (Redis) is unavailable; retry later.",
    ),
}

JobId = Annotated[
    str,
    Path(
        description="The id `credit-approval ingest` printed (derived from the two files' contents).",
        pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
        examples=[_EXAMPLE_ID],
    ),
]


@router.get(
    "/ingestions/{job_id}",
    response_model=JobState,
    operation_id="getIngestion",
    summary="Get an ingestion job's status, progress and report",
    response_description="The job's state; `report` once it has finished.",
    responses=_ERRORS,
)
@router.get("/ingestions/{job_id}/", response_model=JobState, include_in_schema=False)
async def get_ingestion(job_id: JobId, request: Request) -> JobState:
    """`queued`, then `in_progress` with rows read per file, then `complete` or `failed` with the report
    (rows read, inserted, updated, unchanged, skipped, re-keyed per file). Reports are kept for a day."""
    state = await get_job_state(request.app.state.redis, job_id, request.app.state.settings.arq_queue_name)
    if state is None:
        raise NotFound(f"No ingestion job {job_id!r}.")
    return state
