"""Value types shared by the request and response models."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field, PlainSerializer, Strict

MAX_ID = 2**63 - 1
MAX_MONEY = Decimal("999999999999.99")  # NUMERIC(14,2)

# Money travels as a JSON number (never a string) and is a Decimal inside the service.
# Values are at most 14 significant digits, which a JSON/float number renders exactly.
Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
Rate = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]

DatabaseId = Annotated[int, Strict(), Field(ge=1, le=MAX_ID)]
CustomerId = Annotated[
    int, Strict(), Field(ge=1, le=MAX_ID, description="Customer identifier.", examples=[42])
]
LoanId = Annotated[int, Strict(), Field(ge=1, le=MAX_ID, description="Loan identifier.", examples=[1001])]
