from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.decisions import service
from app.decisions.schemas import DecisionOut, DecisionPageOut
from app.deps import ReaderDep
from app.loans.router import PathCustomerId
from app.responses import problem_responses
from app.schemas import MAX_ID

router = APIRouter(prefix="/api", tags=["decisions"])

PathDecisionId = Annotated[int, Path(ge=1, le=MAX_ID, description="Decision identifier.", examples=[5002])]


@router.get(
    "/decisions/{decision_id}",
    operation_id="getDecision",
    summary="A recorded credit decision, explained",
    description=(
        "What create-loan decided, from what: the application, the profile that was scored, the score, "
        + "the outcome and reasons, the policy version, the loan created; and `explanation`, the "
        + "principal reasons in plain words with their figures. Decisions are append-only records."
    ),
    response_description="The decision, as recorded, and its explanation.",
    responses=problem_responses(404, 422, 503),
)
async def get_decision(decision_id: PathDecisionId, db: ReaderDep) -> DecisionOut:
    return await service.get_decision(db, decision_id)


@router.get(
    "/customers/{customer_id}/decisions",
    operation_id="listCustomerDecisions",
    summary="A customer's recorded decisions",
    description="Newest first, a page at a time: pass the response's `next_before` as `before` for the next "
    "page. Pages are stable while new decisions arrive (they only ever come before the first page).",
    response_description="A page of the customer's decisions, newest first.",
    responses=problem_responses(404, 422, 503),
)
async def list_customer_decisions(
    customer_id: PathCustomerId,
    db: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=200, description="Decisions per page (1-200).", examples=[50])] = 50,
    before: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_ID,
            description="Only decisions older than this one (the previous page's `next_before`).",
            examples=[5002],
        ),
    ] = None,
) -> DecisionPageOut:
    return await service.list_decisions(db, customer_id, before, limit)
