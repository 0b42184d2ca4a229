from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.customers import service
from app.customers.schemas import CustomerOut, RegisterRequest
from app.deps import PolicyDep, SessionDep
from app.idempotency.service import REPLAYED_HEADER_DOC, IdempotencyDep
from app.responses import problem_responses
from app.retry import TransactionRetryRoute

router = APIRouter(prefix="/api", tags=["customers"], route_class=TransactionRetryRoute)


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    operation_id="registerCustomer",
    summary="Register a customer",
    description="Creates a customer and sets their approved limit to 36 x monthly income, "
    "rounded half-up to the nearest 100,000.",
    response_model=CustomerOut,
    response_description="The registered customer, with their approved limit.",
    responses={201: {"headers": REPLAYED_HEADER_DOC}, **problem_responses(409, 422, 503)},
)
@router.post(
    "/register/", status_code=status.HTTP_201_CREATED, response_model=CustomerOut, include_in_schema=False
)
async def register_customer(
    data: RegisterRequest,
    session: SessionDep,
    policy: PolicyDep,
    idempotency: IdempotencyDep,
    response: Response,
) -> CustomerOut | Response:
    return await idempotency.run(response, lambda: service.register(session, data, policy))
