"""The credit policy as configuration: a TOML file, validated at startup, versioned, on record."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from app.config import Settings
from app.credit.policy import POLICY
from app.main import create_app
from app.policy_file import PolicyFileError, load_policy
from tests.conftest import FIXED_NOW
from worker import startup


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(body)
    return path


def test_no_file_is_the_built_in_policy_and_a_full_file_of_the_same_values_is_the_same_version(
    tmp_path: Path,
) -> None:
    assert load_policy("") is POLICY
    same = write(
        tmp_path,
        """
        payment_history_weight = 35
        utilisation_weight = 30
        track_record_weight = 15
        recent_activity_weight = 20
        track_record_cap = 5
        recent_activity_cap = 4
        max_emi_share_of_salary = 0.50
        limit_income_multiplier = 36
        limit_rounding_unit = 100000.0
        [[slabs]]
        above = 50
        min_rate = 0
        [[slabs]]
        above = 30
        min_rate = 12.0
        [[slabs]]
        above = 10
        min_rate = "16"
        """,
    )
    assert load_policy(same) == POLICY and load_policy(same).version == POLICY.version
    assert len(POLICY.version) == 12 and int(POLICY.version, 16) >= 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("payment_history_weight = 40", "the four weights must sum to 100, not 105"),
        ("payment_history_weight = 0\nutilisation_weight = 65", "payment_history_weight"),
        ("max_emi_share_of_salary = 0", "max_emi_share_of_salary"),
        ("max_emi_share_of_salary = 1.5", "max_emi_share_of_salary"),
        ("limit_income_multiplier = -36", "limit_income_multiplier"),
        ("limit_rounding_unit = 0", "limit_rounding_unit"),
        ("track_record_cap = 0", "track_record_cap"),
        ("[[slabs]]\nabove = 30\nmin_rate = 12\n[[slabs]]\nabove = 50\nmin_rate = 16", "strictly descending"),
        ("[[slabs]]\nabove = 50\nmin_rate = 12\n[[slabs]]\nabove = 30\nmin_rate = 10", "floors"),
        ("slabs = []", "slabs"),
        ("max_emi_share = 0.4", "max_emi_share: Extra inputs are not permitted"),
        ("payment_history_weight = ", "not valid TOML"),
    ],
)
def test_each_class_of_invalid_file_is_refused_naming_the_field(
    tmp_path: Path, body: str, field: str
) -> None:
    with pytest.raises(PolicyFileError, match="CREDIT_POLICY_FILE") as refused:
        load_policy(write(tmp_path, body))
    assert field in str(refused.value)


async def test_an_invalid_file_stops_the_api_and_the_worker(tmp_path: Path, settings: Settings) -> None:
    bad = write(tmp_path, "max_emi_share_of_salary = 2")
    broken = settings.model_copy(update={"credit_policy_file": str(bad)})
    app = create_app(broken)
    with pytest.raises(PolicyFileError, match="max_emi_share_of_salary"):
        async with app.router.lifespan_context(app):
            pass
    with pytest.raises(PolicyFileError, match="max_emi_share_of_salary"):
        await startup({"settings": broken})
    missing = settings.model_copy(update={"credit_policy_file": str(tmp_path / "nope.toml")})
    with pytest.raises(PolicyFileError, match="cannot be read"):
        await startup({"settings": missing})


async def test_an_emi_share_of_0_4_turns_an_approval_into_a_rejection(
    tmp_path: Path,
    settings: Settings,
    sessionmaker: Any,
    make_customer: Callable[..., Any],
    client: AsyncClient,
) -> None:
    # 50,000 a month: the built-in 50% leaves 25,000 for installments, 0.4 leaves 20,000.
    customer = await make_customer(monthly_income=50_000)
    body = {"customer_id": customer["customer_id"], "loan_amount": 500_000, "interest_rate": 12, "tenure": 24}
    built_in = await client.post("/api/check-eligibility", json=body)
    assert built_in.json()["approval"] is True and built_in.json()["monthly_installment"] == 23536.74

    strict = write(tmp_path, "max_emi_share_of_salary = 0.4")
    app = create_app(settings.model_copy(update={"credit_policy_file": str(strict)}))
    async with app.router.lifespan_context(app):
        app.state.sessionmaker = sessionmaker  # the test's rolled-back transaction
        app.state.clock = lambda: FIXED_NOW
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as other:
            made = (await other.post("/api/create-loan", json=body)).json()
            decision = (await other.get(f"/api/decisions/{made['decision_id']}")).json()
            in_force = (await other.get("/api/policy")).json()
            recorded = (await other.get(f"/api/policies/{decision['policy_version']}")).json()
    assert made["loan_approved"] is False and made["reasons"] == ["emi_over_half_salary"]
    assert decision["policy_version"] == in_force["version"] != POLICY.version
    assert recorded["values"]["max_emi_share_of_salary"] == 0.4 and recorded["first_used"]
    assert "above 40% of the monthly salary of 50,000 (20,000)" in decision["explanation"][0]
    # The built-in policy's record is still there, unchanged.
    built = (await client.get(f"/api/policies/{POLICY.version}")).json()
    assert built["values"]["max_emi_share_of_salary"] == 0.5


async def test_the_policy_in_force_and_unknown_versions(client: AsyncClient, app: FastAPI) -> None:
    policy = (await client.get("/api/policy")).json()
    assert policy["version"] == POLICY.version
    assert policy["values"]["slabs"] == [
        {"above": 50, "min_rate": 0.0},
        {"above": 30, "min_rate": 12.0},
        {"above": 10, "min_rate": 16.0},
    ]
    assert (await client.get("/api/policies/000000000000")).status_code == 404
    assert (await client.get("/api/policies/nothex")).status_code == 422
