"""The OpenAPI document is what client generators and people read: check it is complete and truthful.

Generic checks run over every operation (so a new router is held to them as soon as it is included);
the stable operation ids of the existing endpoints are pinned, because renaming one breaks every client.
"""

from __future__ import annotations

import keyword
import re
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from app.config import Settings
from app.main import create_app

PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"
TAGS = {"customers", "loans", "eligibility", "servicing", "decisions", "policy", "ingestion", "operations"}
STABLE_IDS = {
    ("post", "/api/register"): "registerCustomer",
    ("post", "/api/check-eligibility"): "checkEligibility",
    ("post", "/api/create-loan"): "createLoan",
    ("get", "/api/view-loan/{loan_id}"): "getLoan",
    ("get", "/api/view-loans/{customer_id}"): "listCustomerLoans",
}
# A client method reads as "verb + thing": registerCustomer -> client.register_customer(...).
VERBS = {"get", "list", "create", "register", "check", "update", "delete", "start", "enqueue", "cancel"}
CAMEL_CASE = re.compile(r"[a-z]+(?:[A-Z][a-z0-9]+)+")
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    # With API keys configured, so the 401s and security schemes are part of what is checked.
    return create_app(Settings(api_keys="doc-key")).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def has_example(document: dict[str, Any], media: dict[str, Any]) -> bool:
    if "example" in media or "examples" in media:
        return True
    schema = resolve(document, media.get("schema", {}))
    if schema.get("type") == "array":
        schema = resolve(document, schema.get("items", {}))
    return bool(schema.get("examples") or schema.get("example"))


def snake_case(operation_id: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()


def test_document_has_title_version_and_an_overview(document: dict[str, Any]) -> None:
    info = document["info"]
    assert info["title"] == "Credit Approval Service"
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["version"])
    for section in ("Authentication", "Errors", "Request ids", "months", "% per year"):
        assert section in info["description"], section


def test_tags_are_declared_with_descriptions(document: dict[str, Any]) -> None:
    declared = {tag["name"]: tag.get("description") for tag in document["tags"]}
    assert set(declared) == TAGS
    assert all(declared.values())


def test_the_stable_operation_ids_are_kept(document: dict[str, Any]) -> None:
    ids = {(method, path): operation["operationId"] for method, path, operation in operations(document)}
    for key, expected in STABLE_IDS.items():
        assert ids.get(key) == expected, key


def test_operation_ids_make_sensible_client_method_names(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids)), "operation ids must be unique"
    for operation_id in ids:
        assert CAMEL_CASE.fullmatch(operation_id), operation_id
        method_name = snake_case(operation_id)
        assert method_name.isidentifier() and not keyword.iskeyword(method_name)
        assert method_name.split("_")[0] in VERBS, f"{operation_id} should start with a verb"
        # FastAPI's fallback ids (register_customer_api_register_post) leak the path and method.
        assert not re.search(r"_(api|get|post|put|patch|delete)(_|$)", method_name), operation_id


@pytest.mark.parametrize("field", ["summary", "operationId", "description"])
def test_every_operation_has(document: dict[str, Any], field: str) -> None:
    missing = [f"{method} {path}" for method, path, op in operations(document) if not op.get(field)]
    if field == "description":  # a summary may say it all for a plain read
        missing = [name for name in missing if not name.startswith("get ")]
    assert not missing, missing


def test_every_operation_has_exactly_one_declared_tag(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        assert len(operation.get("tags", [])) == 1 and operation["tags"][0] in TAGS, f"{method} {path}"


def test_request_bodies_are_json_with_examples(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        body = operation.get("requestBody")
        if body is None:
            continue
        media = body["content"]["application/json"]
        assert has_example(document, media), f"{method} {path}"


def test_success_responses_have_descriptions_schemas_and_examples(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        successes = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
        assert successes, f"{method} {path}"
        for code, response in successes.items():
            where = f"{method} {path} {code}"
            assert response["description"] != "Successful Response", where
            media = response["content"]["application/json"]
            assert has_example(document, media), where


def test_parameters_have_descriptions_and_examples(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            where = f"{method} {path} {parameter['name']}"
            assert parameter.get("description"), where
            schema = parameter.get("schema", {})
            assert "example" in parameter or "examples" in parameter or "examples" in schema, where


def expected_errors(method: str, path: str, operation: dict[str, Any]) -> set[str]:
    """What can go wrong: 422 with any input, 503 on every database-backed /api route, 404 whenever an
    identifier is looked up, 413 with a body and 401 (keys configured) on /api."""
    expected = {"401", "422", "503"} if path.startswith("/api/") else set()
    if "requestBody" in operation:
        expected.add("413")
    takes_customer = "customer_id" in str(operation.get("requestBody", "")) or "{" in path
    if path != "/api/register" and takes_customer:
        expected.add("404")
    return expected


def test_every_operation_declares_its_error_responses(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        declared = set(operation["responses"])
        assert expected_errors(method, path, operation) <= declared, f"{method} {path}: {sorted(declared)}"
    register = document["paths"]["/api/register"]["post"]["responses"]
    assert "409" in register  # the phone number is taken
    create = document["paths"]["/api/create-loan"]["post"]["responses"]
    assert "409" in create  # an Idempotency-Key in flight


def test_error_responses_are_problem_documents_with_examples(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for code, response in operation["responses"].items():
            if code.startswith("2"):
                continue
            where = f"{method} {path} {code}"
            assert response.get("description"), where
            assert set(response["content"]) == {PROBLEM_JSON}, where
            media = response["content"][PROBLEM_JSON]
            assert media["schema"] == {"$ref": PROBLEM_REF}, where
            examples = [media["example"]] if "example" in media else [
                named["value"] for named in media["examples"].values()
            ]  # fmt: skip
            assert examples, where
            for example in examples:
                assert example["status"] == int(code), where
                assert example["type"].startswith("https://"), where


def test_create_loan_documents_the_import_in_progress_503(document: dict[str, Any]) -> None:
    unavailable = document["paths"]["/api/create-loan"]["post"]["responses"]["503"]
    examples = unavailable["content"][PROBLEM_JSON]["examples"]
    assert examples["import-in-progress"]["value"]["type"].endswith("/import-in-progress")
    assert "Retry-After" in unavailable["headers"]


def test_every_schema_property_has_a_description(document: dict[str, Any]) -> None:
    missing = [
        f"{name}.{prop}"
        for name, schema in document["components"]["schemas"].items()
        for prop, definition in schema.get("properties", {}).items()
        if not definition.get("description")
    ]
    assert not missing, missing


@pytest.mark.parametrize(
    ("needle", "unit"),
    [
        (re.compile(r"(amount|installment|income|limit)$"), "currency"),
        (re.compile(r"interest_rate$"), "% per year"),
        (re.compile(r"^tenure$"), "months"),
    ],
    ids=["money", "rates", "tenures"],
)
def test_quantities_state_their_units(document: dict[str, Any], needle: re.Pattern[str], unit: str) -> None:
    checked = 0
    for name, schema in document["components"]["schemas"].items():
        for prop, definition in schema.get("properties", {}).items():
            if needle.search(prop):
                checked += 1
                assert unit in definition["description"], f"{name}.{prop}: {definition['description']}"
    assert checked


def test_problem_schema_is_declared(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    expected = {"type", "title", "status", "detail", "instance", "request_id", "errors"}
    assert expected <= set(problem["properties"])
    assert problem["required"] == ["type", "title", "status", "detail"]


async def test_docs_redoc_and_the_document_are_served(app: FastAPI, client: AsyncClient) -> None:
    for path in ("/docs", "/redoc"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert "/openapi.json" in response.text
    served = (await client.get("/openapi.json")).json()
    assert served["info"]["title"] == app.title
