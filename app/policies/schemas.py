from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.credit.policy import POLICY
from app.schemas import Money, Rate


class SlabOut(BaseModel):
    above: int = Field(description="A credit score strictly above this falls in the slab.")
    min_rate: Rate = Field(description="The slab's minimum interest rate, % per year.")


class PolicyValuesOut(BaseModel):
    payment_history_weight: int = Field(description="Points for EMIs paid on time.")
    utilisation_weight: int = Field(description="Points for unused approved limit.")
    track_record_weight: int = Field(description="Points for closed loans.")
    recent_activity_weight: int = Field(description="Points for few loans started this year.")
    track_record_cap: int = Field(description="Closed loans beyond this earn no more points.")
    recent_activity_cap: int = Field(description="Loans started this year beyond this cost no more points.")
    slabs: list[SlabOut] = Field(
        description="Rate floors by score, highest score first; below the last: rejected."
    )
    max_emi_share_of_salary: Rate = Field(
        description="Most of the monthly salary all installments together may take (0.5 = 50%)."
    )
    limit_income_multiplier: int = Field(description="Approved limit = this x monthly income...")
    limit_rounding_unit: Money = Field(
        description="...rounded half-up to a multiple of this, a currency amount."
    )

    @classmethod
    def of(cls, values: dict[str, Any]) -> PolicyValuesOut:
        return cls(
            **{
                **values,
                "slabs": [SlabOut(above=above, min_rate=Decimal(rate)) for above, rate in values["slabs"]],
            }
        )


_EXAMPLE_VALUES = PolicyValuesOut.of(POLICY.values()).model_dump(mode="json")


class PolicyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"version": POLICY.version, "values": _EXAMPLE_VALUES, "first_used": "2026-12-02T19:50:00Z"}
            ]
        }
    )

    version: str = Field(
        description="First 12 hex digits of the SHA-256 of the values in canonical JSON; decisions name it.",
        examples=[POLICY.version],
    )
    values: PolicyValuesOut = Field(description="Every number of the policy.")
    first_used: dt.datetime | None = Field(
        description="When the service first ran with this policy (null if it has not been stored yet)."
    )
