from __future__ import annotations

from fastapi import APIRouter, status

from app.customers import service
from app.customers.schemas import CustomerOut, RegisterRequest
from app.deps import SessionDep
from app.responses import problem_responses

router = APIRouter(prefix="/api", tags=["customers"])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    operation_id="registerCustomer",
    summary="Register a customer",
    description="Creates a customer and sets their approved limit to 36 x monthly income, "
    "rounded half-up to the nearest 100,000.",
    responses=problem_responses(409, 422),
)
@router.post("/register/", status_code=status.HTTP_201_CREATED, include_in_schema=False)
async def register_customer(data: RegisterRequest, session: SessionDep) -> CustomerOut:
    return await service.register(session, data)
