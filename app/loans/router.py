from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app.deps import NowDep, PolicyDep, ReaderDep, RequestIdDep, SessionDep, TodayDep
from app.idempotency.service import REPLAYED_HEADER_DOC, IdempotencyDep
from app.loans import service
from app.loans.schemas import (
    REJECTED_LOAN_EXAMPLE,
    CreateLoanOut,
    EligibilityOut,
    LoanDetailOut,
    LoanRequestIn,
    LoanStatus,
    LoanSummaryOut,
)
from app.responses import import_aware_503, problem_responses
from app.retry import TransactionRetryRoute
from app.schemas import MAX_ID

router = APIRouter(prefix="/api", route_class=TransactionRetryRoute)

PathLoanId = Annotated[int, Path(ge=1, le=MAX_ID, description="Loan identifier.", examples=[1001])]
PathCustomerId = Annotated[int, Path(ge=1, le=MAX_ID, description="Customer identifier.", examples=[42])]


@router.post(
    "/check-eligibility",
    tags=["eligibility"],
    operation_id="checkEligibility",
    summary="Check loan eligibility",
    description="Scores the customer from their loan history and decides whether a loan on these terms "
    "would be approved, at which corrected rate and installment. An inquiry, not an application: nothing "
    "is stored, and no decision is recorded (create-loan's are).",
    response_description="The decision, the credit score and its components.",
    responses=problem_responses(404, 422, 503),
)
@router.post("/check-eligibility/", include_in_schema=False)
async def check_eligibility(
    data: LoanRequestIn, db: ReaderDep, today: TodayDep, policy: PolicyDep
) -> EligibilityOut:
    return await service.check_eligibility(db, data, today, policy)


@router.post(
    "/create-loan",
    tags=["loans"],
    operation_id="createLoan",
    summary="Create a loan",
    status_code=status.HTTP_201_CREATED,
    description="Decides exactly as check-eligibility does and, when approved, stores the loan at the "
    "corrected rate starting today (201). A rejection answers 200 with the reasons and stores no loan. "
    "Either way the decision is recorded (`decision_id`; GET /api/decisions/{decision_id} explains it). "
    "While a workbook import runs, a customer the import can change (one it created) gets 503 "
    "`import-in-progress` with `Retry-After`: the decision waits for the imported history.",
    response_model=CreateLoanOut,
    response_description="Approved: the loan was stored.",
    responses={
        201: {"headers": REPLAYED_HEADER_DOC},
        200: {
            "model": CreateLoanOut,
            "description": "Not approved: nothing was stored.",
            "content": {"application/json": {"example": REJECTED_LOAN_EXAMPLE}},
            "headers": REPLAYED_HEADER_DOC,
        },
        **problem_responses(404, 409, 422),
        **import_aware_503(),
    },
)
@router.post(
    "/create-loan/",
    status_code=status.HTTP_201_CREATED,
    response_model=CreateLoanOut,
    include_in_schema=False,
)
async def create_loan(
    data: LoanRequestIn,
    session: SessionDep,
    now: NowDep,
    policy: PolicyDep,
    request_id: RequestIdDep,
    response: Response,
    idempotency: IdempotencyDep,
) -> CreateLoanOut | Response:
    async def create() -> CreateLoanOut:
        result = await service.create_loan(session, data, now, policy, request_id)
        if not result.loan_approved:
            response.status_code = status.HTTP_200_OK
        return result

    return await idempotency.run(response, create)


@router.get(
    "/view-loan/{loan_id}",
    tags=["loans"],
    operation_id="getLoan",
    summary="View a loan",
    response_description="The loan and its borrower.",
    responses=problem_responses(404, 422, 503),
)
@router.get("/view-loan/{loan_id}/", include_in_schema=False)
async def view_loan(loan_id: PathLoanId, db: ReaderDep, today: TodayDep) -> LoanDetailOut:
    return await service.get_loan(db, loan_id, today)


@router.get(
    "/view-loans/{customer_id}",
    tags=["loans"],
    operation_id="listCustomerLoans",
    summary="List a customer's loans",
    description="The customer's current loans (end date today or later, and not paid off) by default; "
    "`status=closed` or `status=all` for the others. An existing customer with no loans gives [].",
    response_description="The customer's loans, by loan id.",
    responses=problem_responses(404, 422, 503),
)
@router.get("/view-loans/{customer_id}/", include_in_schema=False)
async def view_loans(
    customer_id: PathCustomerId,
    db: ReaderDep,
    today: TodayDep,
    status: Annotated[
        LoanStatus, Query(description="Which loans to list.", examples=["all"])
    ] = LoanStatus.current,
) -> list[LoanSummaryOut]:
    return await service.list_loans(db, customer_id, status, today)
