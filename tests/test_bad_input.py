"""Every malformed request gets a 4xx problem+json that names the field: never a 500, never HTML."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient

from app.schemas import MAX_ID

REGISTER = {
    "first_name": "Asha",
    "last_name": "Rao",
    "age": 31,
    "monthly_income": 50000,
    "phone_number": 9876543210,
}
LOAN = {"customer_id": 1, "loan_amount": 100000, "interest_rate": 10, "tenure": 12}
BIG = 2**63


def without(body: dict[str, Any], field: str) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != field}


REGISTER_CASES = [
    ("missing first_name", without(REGISTER, "first_name"), "first_name"),
    ("missing phone", without(REGISTER, "phone_number"), "phone_number"),
    ("empty name", {**REGISTER, "first_name": ""}, "first_name"),
    ("blank name", {**REGISTER, "last_name": "   "}, "last_name"),
    ("long name", {**REGISTER, "first_name": "x" * 101}, "first_name"),
    ("name not a string", {**REGISTER, "first_name": 12}, "first_name"),
    ("age too low", {**REGISTER, "age": 17}, "age"),
    ("age too high", {**REGISTER, "age": 121}, "age"),
    ("age as string", {**REGISTER, "age": "thirty"}, "age"),
    ("age as bool", {**REGISTER, "age": True}, "age"),
    ("age fractional", {**REGISTER, "age": 30.5}, "age"),
    ("zero income", {**REGISTER, "monthly_income": 0}, "monthly_income"),
    ("negative income", {**REGISTER, "monthly_income": -5}, "monthly_income"),
    ("absurd income", {**REGISTER, "monthly_income": 1e300}, "monthly_income"),
    ("income NaN string", {**REGISTER, "monthly_income": "NaN"}, "monthly_income"),
    ("income sub-cent", {**REGISTER, "monthly_income": 100.001}, "monthly_income"),
    ("phone 9 digits", {**REGISTER, "phone_number": 987654321}, "phone_number"),
    ("phone 11 digits", {**REGISTER, "phone_number": 98765432101}, "phone_number"),
    ("phone letters", {**REGISTER, "phone_number": "98765abcde"}, "phone_number"),
    ("phone leading zero", {**REGISTER, "phone_number": "0987654321"}, "phone_number"),
    ("phone negative", {**REGISTER, "phone_number": -9876543210}, "phone_number"),
    ("phone float", {**REGISTER, "phone_number": 9876543210.5}, "phone_number"),
    ("unknown field", {**REGISTER, "salary": 5}, "salary"),
]

LOAN_CASES = [
    ("missing amount", without(LOAN, "loan_amount"), "loan_amount"),
    ("missing customer", without(LOAN, "customer_id"), "customer_id"),
    ("zero amount", {**LOAN, "loan_amount": 0}, "loan_amount"),
    ("negative amount", {**LOAN, "loan_amount": -1}, "loan_amount"),
    ("absurd amount", {**LOAN, "loan_amount": 10**15}, "loan_amount"),
    ("huge float amount", {**LOAN, "loan_amount": 1.7e308}, "loan_amount"),
    ("amount as text", {**LOAN, "loan_amount": "lots"}, "loan_amount"),
    ("amount as bool", {**LOAN, "loan_amount": True}, "loan_amount"),
    ("tenure zero", {**LOAN, "tenure": 0}, "tenure"),
    ("tenure 601", {**LOAN, "tenure": 601}, "tenure"),
    ("tenure fractional", {**LOAN, "tenure": 1.5}, "tenure"),
    ("rate negative", {**LOAN, "interest_rate": -0.01}, "interest_rate"),
    ("rate over 100", {**LOAN, "interest_rate": 100.01}, "interest_rate"),
    ("rate null", {**LOAN, "interest_rate": None}, "interest_rate"),
    ("customer zero", {**LOAN, "customer_id": 0}, "customer_id"),
    ("customer 2^63", {**LOAN, "customer_id": BIG}, "customer_id"),
    ("customer huge", {**LOAN, "customer_id": 10**40}, "customer_id"),
    ("customer as string", {**LOAN, "customer_id": "1"}, "customer_id"),
]


def assert_problem(response: Any, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    if field is not None:
        assert any(error["field"].endswith(field) for error in body["errors"]), body


@pytest.mark.parametrize(("case", "body", "field"), REGISTER_CASES, ids=[case[0] for case in REGISTER_CASES])
async def test_register_rejects(client: AsyncClient, case: str, body: dict[str, Any], field: str) -> None:
    assert_problem(await client.post("/api/register", json=body), 422, field)


@pytest.mark.parametrize("path", ["/api/check-eligibility", "/api/create-loan"])
@pytest.mark.parametrize(("case", "body", "field"), LOAN_CASES, ids=[case[0] for case in LOAN_CASES])
async def test_loan_requests_reject(
    client: AsyncClient, path: str, case: str, body: dict[str, Any], field: str
) -> None:
    assert_problem(await client.post(path, json=body), 422, field)


@pytest.mark.parametrize("path", ["/api/register", "/api/check-eligibility", "/api/create-loan"])
@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b'"text"', b"42", b"null", b""],
    ids=["malformed", "array", "string", "number", "null", "empty"],
)
async def test_non_object_bodies_are_rejected(client: AsyncClient, path: str, raw: bytes) -> None:
    response = await client.post(path, content=raw, headers={"content-type": "application/json"})
    assert_problem(response, 422)


@pytest.mark.parametrize("path", ["/api/register", "/api/create-loan"])
async def test_json_nested_too_deep_to_parse_is_a_400(client: AsyncClient, path: str) -> None:
    response = await client.post(path, content=b'{"a": ' * 5000, headers={"content-type": "application/json"})
    assert_problem(response, 400)


@pytest.mark.parametrize(
    "path",
    [
        "/api/view-loan/0",
        "/api/view-loan/-1",
        f"/api/view-loan/{BIG}",
        "/api/view-loan/abc",
        "/api/view-loan/1.5",
        "/api/view-loans/0",
        f"/api/view-loans/{10**30}",
        "/api/view-loans/x",
        "/api/view-loans/1?status=open",
    ],
)
async def test_bad_path_and_query_values(client: AsyncClient, path: str) -> None:
    assert_problem(await client.get(path), 422)


async def test_largest_valid_id_is_a_clean_404(client: AsyncClient) -> None:
    # Ids are bigints: every value up to 2**63 - 1 is a valid id (absent here), one more is not.
    assert MAX_ID == 2**63 - 1
    assert_problem(await client.get(f"/api/view-loan/{MAX_ID}"), 404)
    assert_problem(await client.get(f"/api/view-loans/{MAX_ID}"), 404)
    assert_problem(await client.get(f"/api/view-loan/{MAX_ID + 1}"), 422)


async def test_unknown_route_and_method_are_problem_json(client: AsyncClient) -> None:
    assert_problem(await client.get("/api/nope"), 404)
    assert_problem(await client.get("/api/register"), 405)
