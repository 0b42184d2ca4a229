"""The credit policy as configuration: a lender's TOML file (CREDIT_POLICY_FILE), validated at startup.

Every number of app.credit.policy.Policy can be set; a key the file leaves out keeps its built-in value.
The API's lifespan and the worker's on_startup load it once and hand the result to the services, so an
invalid file stops either before it serves anything, with one message naming the field.

    payment_history_weight = 35      # the four weights are positive and sum to 100
    utilisation_weight = 30
    track_record_weight = 15
    recent_activity_weight = 20
    track_record_cap = 5
    recent_activity_cap = 4
    max_emi_share_of_salary = 0.5    # in (0, 1]
    limit_income_multiplier = 36     # approved limit = multiplier x income, rounded half-up to the unit
    limit_rounding_unit = 100000

    [[slabs]]                        # thresholds strictly descending, floors rising
    above = 50
    min_rate = 0
    [[slabs]]
    above = 30
    min_rate = 12
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from app.credit.policy import POLICY, Policy


class PolicyFileError(RuntimeError):
    """The policy file cannot be used; the message names the file and the field."""


def _exact_decimal(value: Any) -> Any:
    # TOML has floats: 0.5 must be the Decimal 0.5, not 0.5000000000000000277...
    if isinstance(value, float):
        return Decimal(str(value))
    return value


Number = Annotated[Decimal, BeforeValidator(_exact_decimal)]
Weight = Annotated[int, Field(gt=0, le=100, strict=True)]


class Slab(BaseModel):
    model_config = ConfigDict(extra="forbid")

    above: int = Field(ge=0, le=100, strict=True, description="A score strictly above this gets the slab.")
    min_rate: Number = Field(ge=0, le=100, description="The slab's floor rate, % per year.")


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_history_weight: Weight = POLICY.payment_history_weight
    utilisation_weight: Weight = POLICY.utilisation_weight
    track_record_weight: Weight = POLICY.track_record_weight
    recent_activity_weight: Weight = POLICY.recent_activity_weight
    track_record_cap: int = Field(default=POLICY.track_record_cap, gt=0, strict=True)
    recent_activity_cap: int = Field(default=POLICY.recent_activity_cap, gt=0, strict=True)
    slabs: list[Slab] = Field(
        default_factory=lambda: [Slab(above=above, min_rate=rate) for above, rate in POLICY.slabs],
        min_length=1,
    )
    max_emi_share_of_salary: Number = Field(default=POLICY.max_emi_share_of_salary, gt=0, le=1)
    limit_income_multiplier: int = Field(default=POLICY.limit_income_multiplier, gt=0, strict=True)
    limit_rounding_unit: Number = Field(default=POLICY.limit_rounding_unit, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> PolicyFile:
        weights = (
            self.payment_history_weight
            + self.utilisation_weight
            + self.track_record_weight
            + self.recent_activity_weight
        )
        if weights != 100:
            raise ValueError(f"the four weights must sum to 100, not {weights}")
        for higher, lower in zip(self.slabs, self.slabs[1:], strict=False):
            if lower.above >= higher.above:
                raise ValueError("slabs: thresholds (`above`) must be strictly descending")
            if lower.min_rate <= higher.min_rate:
                raise ValueError("slabs: floors (`min_rate`) must rise as the thresholds fall")
        return self

    def to_policy(self) -> Policy:
        return Policy(
            payment_history_weight=self.payment_history_weight,
            utilisation_weight=self.utilisation_weight,
            track_record_weight=self.track_record_weight,
            recent_activity_weight=self.recent_activity_weight,
            track_record_cap=self.track_record_cap,
            recent_activity_cap=self.recent_activity_cap,
            slabs=tuple((slab.above, slab.min_rate) for slab in self.slabs),
            max_emi_share_of_salary=self.max_emi_share_of_salary,
            limit_income_multiplier=self.limit_income_multiplier,
            limit_rounding_unit=self.limit_rounding_unit,
        )


def _field(error: Any) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(the file)"


def load_policy(path: str | Path | None) -> Policy:
    """The policy `path` sets (the built-in one when None or empty); PolicyFileError when unusable."""
    if not path:
        return POLICY
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise PolicyFileError(f"CREDIT_POLICY_FILE {path}: cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyFileError(f"CREDIT_POLICY_FILE {path}: not valid TOML ({exc})") from None
    try:
        return PolicyFile.model_validate(document).to_policy()
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        raise PolicyFileError(f"CREDIT_POLICY_FILE {path}: {_field(error)}: {message}") from None
