from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.customers import service
from app.customers.schemas import (
    CustomerDetailOut,
    CustomerListItemOut,
    CustomerOut,
    CustomerPatch,
    CustomerUpdateOut,
    RegisterRequest,
)
from app.deps import PolicyDep, ReaderDep, SessionDep, TodayDep
from app.idempotency.service import REPLAYED_HEADER_DOC, IdempotencyDep
from app.loans.router import PathCustomerId
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


@router.get(
    "/customers/{customer_id}",
    operation_id="getCustomer",
    summary="View a customer",
    description="The customer's details and where their credit stands today: score and components, current "
    "debt and the limit it leaves, installments and the room the EMI rule leaves, active loans and arrears. "
    "One database round trip.",
    response_description="The customer and their credit summary.",
    responses=problem_responses(404, 422, 503),
)
async def get_customer(
    customer_id: PathCustomerId, db: ReaderDep, today: TodayDep, policy: PolicyDep
) -> CustomerDetailOut:
    return await service.get_customer(db, customer_id, today, policy)


@router.get(
    "/customers",
    operation_id="listCustomersByPhone",
    summary="Find a customer by phone number",
    description="A list with the one customer holding this phone number, or `[]`.",
    response_description="The customers found (at most one: phone numbers are unique).",
    responses=problem_responses(422, 503),
)
async def find_customers(
    db: ReaderDep,
    phone_number: Annotated[
        int,
        Query(
            ge=1_000_000_000, le=9_999_999_999, description="10-digit phone number.", examples=[9876543210]
        ),
    ],
) -> list[CustomerListItemOut]:
    return await service.find_by_phone(db, phone_number)


@router.patch(
    "/customers/{customer_id}",
    operation_id="updateCustomer",
    summary="Correct a customer's details",
    response_model=CustomerUpdateOut,
    description="Changes any of first_name, last_name, age, phone_number and monthly_income, each validated "
    "as register validates it. A new income recomputes the approved limit by the policy's rule, and the "
    "response says so. An empty body or an unknown field gives 422; a phone number another customer holds, "
    "409. A customer created by an import is updated too; a later import of a workbook that still has "
    "the old values writes those back (the workbook is the lender's record for the customers it brings).",
    response_description="The customer as they are now.",
    responses={200: {"headers": REPLAYED_HEADER_DOC}, **problem_responses(404, 409, 422, 503)},
)
@router.patch("/customers/{customer_id}/", response_model=CustomerUpdateOut, include_in_schema=False)
async def update_customer(
    customer_id: PathCustomerId,
    data: CustomerPatch,
    session: SessionDep,
    policy: PolicyDep,
    idempotency: IdempotencyDep,
    response: Response,
) -> CustomerUpdateOut | Response:
    return await idempotency.run(response, lambda: service.update(session, customer_id, data, policy))
