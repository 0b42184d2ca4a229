from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.deps import ReaderDep, SessionDep, TodayDep
from app.idempotency.service import REPLAYED_HEADER_DOC, IdempotencyDep
from app.loans.router import PathCustomerId, PathLoanId
from app.responses import import_aware_503, payment_problems, problem_responses
from app.retry import TransactionRetryRoute
from app.servicing import service
from app.servicing.schemas import PaymentIn, PaymentOut, StatementOut

router = APIRouter(prefix="/api", route_class=TransactionRetryRoute, tags=["servicing"])


@router.post(
    "/make-payment/{customer_id}/{loan_id}",
    operation_id="createPayment",
    summary="Pay an installment",
    status_code=status.HTTP_201_CREATED,
    response_model=PaymentOut,
    description="Settles the loan's next unpaid installment: the amount pays that installment's interest "
    "first and repays principal with the rest. Paying the EMI in force keeps it; any other amount re-prices "
    "the EMI over the installments left (same formula and rate as create-loan), so paying more lowers it "
    "and paying less raises it. The tenure and the due dates never move. An amount below the installment's "
    "interest, or above the payoff, is refused with that figure (`minimum_amount`, `payoff_amount`); the "
    "last installment takes exactly the payoff. Payments on one loan apply one after another.",
    response_description="The payment was recorded.",
    responses={
        201: {"headers": REPLAYED_HEADER_DOC},
        **problem_responses(404),
        **payment_problems(),
        **import_aware_503(),
    },
)
@router.post(
    "/make-payment/{customer_id}/{loan_id}/",
    status_code=status.HTTP_201_CREATED,
    response_model=PaymentOut,
    include_in_schema=False,
)
async def make_payment(
    customer_id: PathCustomerId,
    loan_id: PathLoanId,
    data: PaymentIn,
    session: SessionDep,
    today: TodayDep,
    response: Response,
    idempotency: IdempotencyDep,
) -> PaymentOut | Response:
    async def pay() -> PaymentOut:
        return await service.make_payment(session, customer_id, loan_id, data, today)

    return await idempotency.run(response, pay)


@router.get(
    "/view-statement/{customer_id}/{loan_id}",
    operation_id="getStatement",
    summary="View a loan's statement",
    description="The loan's whole schedule (paid rows as paid, the rest projected from the outstanding "
    "principal with the EMI in force), its payments, and where it stands today: arrears (days past due and "
    "delinquency class), the next installment and the payoff amount.",
    response_model=StatementOut,
    response_description="The statement.",
    responses=problem_responses(404, 422, 503),
)
@router.get("/view-statement/{customer_id}/{loan_id}/", include_in_schema=False)
async def view_statement(
    customer_id: PathCustomerId, loan_id: PathLoanId, db: ReaderDep, today: TodayDep
) -> Response:
    return Response(
        await service.view_statement(db, customer_id, loan_id, today), media_type="application/json"
    )
