"""What the schemathesis run (tests/test_fuzz_openapi.py) found, pinned as fast, deterministic tests.

Each was a place where the app and its OpenAPI document disagreed, or a 500.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
from httpx import AsyncClient
from pydantic import TypeAdapter, ValidationError

from app.customers.schemas import NAME_PATTERN, Name
from app.schemas import MAX_ID
from tests.live import register_body

LOAN = {"loan_amount": 10_000, "interest_rate": 14, "tenure": 12}


async def _document(client: AsyncClient) -> dict[str, Any]:
    return dict((await client.get("/openapi.json")).json())


# A 500: PostgreSQL text cannot hold NUL. Now refused, and the documented pattern excludes it.
@pytest.mark.parametrize("name", ["A\x00", "\x00", "As\x00ha"])
async def test_nul_in_a_name_is_a_422_not_a_500(client: AsyncClient, name: str) -> None:
    response = await client.post("/api/register", json=register_body(first_name=name))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "body.first_name"


async def test_a_lone_surrogate_in_a_name_is_a_422(client: AsyncClient) -> None:
    body = register_body()
    raw = (
        '{"first_name": "\\ud800", "last_name": "Rao", "age": 30, "monthly_income": 1000, '
        f'"phone_number": {body["phone_number"]}}}'
    )
    response = await client.post("/api/register", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text


# The document said any string was a valid amount; "" and "1e3" were then refused. Strings now have a
# documented pattern, and the app enforces exactly that pattern.
@pytest.mark.parametrize(
    "income", ["", " 5000", "5e3", "+5000", "05000", "5000.", ".5", "0", "0.00", "5000.001"]
)
async def test_amount_strings_outside_the_documented_pattern_are_refused(
    client: AsyncClient, income: str
) -> None:
    response = await client.post("/api/register", json=register_body(monthly_income=income))
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("income", ["5000", "5000.5", "5000.50", "0.01", "10000000000"])
async def test_amount_strings_inside_the_pattern_are_accepted(client: AsyncClient, income: str) -> None:
    response = await client.post("/api/register", json=register_body(monthly_income=income))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("field", "good", "bad"), [("loan_amount", "0.5", "0"), ("interest_rate", "100.00", "100.01")]
)
async def test_loan_decimal_strings_follow_their_patterns(
    client: AsyncClient, make_customer: Any, field: str, good: str, bad: str
) -> None:
    customer = await make_customer()
    body = {"customer_id": customer["customer_id"], **LOAN}
    assert (await client.post("/api/check-eligibility", json={**body, field: good})).status_code == 200
    assert (await client.post("/api/check-eligibility", json={**body, field: bad})).status_code == 422


async def test_decimal_fields_document_their_string_pattern_and_cent_steps(client: AsyncClient) -> None:
    schemas = (await _document(client))["components"]["schemas"]
    for model, field in [("RegisterRequest", "monthly_income"), ("LoanRequestIn", "loan_amount")]:
        number, text = schemas[model]["properties"][field]["anyOf"]
        assert number["type"] == "number" and number["multipleOf"] == 0.01 and number["exclusiveMinimum"] == 0
        assert text["type"] == "string" and text["pattern"].startswith("^")


# JSON has one number type: 30.0 is the integer 30, and JSON Schema's "integer" accepts it.
async def test_integral_numbers_are_integers(client: AsyncClient) -> None:
    body = register_body(age=30.0)
    body["phone_number"] = float(body["phone_number"])
    registered = await client.post("/api/register", json=body)
    assert registered.status_code == 201, registered.text
    customer_id = float(registered.json()["customer_id"])
    loan = await client.post("/api/create-loan", json={"customer_id": customer_id, **LOAN, "tenure": 12.0})
    assert loan.status_code == 201, loan.text


@pytest.mark.parametrize("value", [30.5, "30", True])
async def test_non_integers_are_still_refused(client: AsyncClient, value: Any) -> None:
    response = await client.post("/api/register", json=register_body(age=value))
    assert response.status_code == 422, response.text


# Names are trimmed (Unicode White_Space, which includes U+0085 and U+3000); the documented pattern spells
# out that same set (ECMA-262's \s differs), so a name of only those is a 422 both ways.
@pytest.mark.parametrize("name", [" \x85\t\x0b\r\n", "\u3000\u2028"])
async def test_a_name_of_only_whitespace_is_refused(client: AsyncClient, name: str) -> None:
    response = await client.post("/api/register", json=register_body(last_name=name))
    assert response.status_code == 422, response.text


def test_the_name_pattern_is_exactly_what_validation_accepts() -> None:
    """Random strings over the interesting characters: the pattern and the validator never disagree."""
    adapter = TypeAdapter(Name)
    alphabet = " \t\n\x0b\x0c\r\x1c\x1f\x85\xa0\u1680\u2000\u200b\u2028\u3000\ufeff\x00ab"
    generator = random.Random(5)
    for _ in range(20_000):
        text = "".join(generator.choice(alphabet) for _ in range(generator.randint(0, 6)))
        text += "x" * generator.choice([0, 0, 95, 99, 100])
        try:
            adapter.validate_python(text)
            valid = True
        except ValidationError:
            valid = False
        assert valid == bool(re.search(NAME_PATTERN, text)), repr(text)


async def test_a_name_is_measured_after_trimming(client: AsyncClient) -> None:
    padded = "  " + "x" * 100 + "  "
    assert (await client.post("/api/register", json=register_body(first_name=padded))).status_code == 201
    too_long = "x" * 101
    assert (await client.post("/api/register", json=register_body(first_name=too_long))).status_code == 422


# Pydantic writes integer bounds as floats: 2**63 - 1 read back as 2**63. The id schema states it exactly.
async def test_the_documented_id_bound_is_exact(client: AsyncClient) -> None:
    document = await _document(client)
    customer_id = document["components"]["schemas"]["LoanRequestIn"]["properties"]["customer_id"]
    assert customer_id["maximum"] == MAX_ID == 2**63 - 1
    assert isinstance(customer_id["maximum"], int)
    body = {"customer_id": MAX_ID + 1, **LOAN}
    assert (await client.post("/api/check-eligibility", json=body)).status_code == 422
    assert (
        await client.post("/api/check-eligibility", json={**body, "customer_id": MAX_ID})
    ).status_code == 404


# A body that is not UTF-8 is a 400 (FastAPI's), now documented on every operation that takes a body.
async def test_a_body_that_is_not_utf8_is_a_documented_400(client: AsyncClient) -> None:
    response = await client.post(
        "/api/register", content=b"\xff\xfe\x03", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    operations = [op for item in (await _document(client))["paths"].values() for op in item.values()]
    assert all("400" in op["responses"] for op in operations if "requestBody" in op)


# An Idempotency-Key reused with another body is a 422 by the draft; it has its own problem type, so the
# fuzz run can tell it from a schema-valid body refused by validation (which would be a bug).
async def test_key_reuse_has_its_own_problem_type(client: AsyncClient) -> None:
    headers = {"Idempotency-Key": "fuzz-finding-1"}
    assert (await client.post("/api/register", json=register_body(), headers=headers)).status_code == 201
    reused = await client.post("/api/register", json=register_body(), headers=headers)
    assert reused.status_code == 422
    assert reused.json()["type"] == "https://credit-approval.dev/problems/idempotency-key-reused"
