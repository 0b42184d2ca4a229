"""OpenAPI declarations of the problem+json error responses, so the document tells the truth."""

from __future__ import annotations

from typing import Any

from app.errors import PROBLEM_BASE, PROBLEM_JSON

DESCRIPTIONS = {
    400: "The body cannot be read as JSON text (not UTF-8, or nested too deeply to parse).",
    401: "Missing or invalid API key.",
    404: "The customer or loan does not exist.",
    409: "Conflicts with the current state: a phone number already registered, or a request with the same "
    "Idempotency-Key still in progress.",
    413: "The request body is larger than 64 KiB.",
    422: "The request is malformed; `errors` names each invalid field.",
    503: "The database is unavailable; retry later.",
}


_REQUEST_ID = "5f0c6d3e9b1a4e0f8a7d2c4b6e8f0a1c"


def _example(code: str, title: str, status: int, detail: str, **extensions: Any) -> dict[str, Any]:
    return {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": "/api/create-loan",
        "request_id": _REQUEST_ID,
        **extensions,
    }


# One realistic problem document per status, shown by the docs and picked up by client generators.
EXAMPLES = {
    400: _example(
        "http-error", "There was an error parsing the body", 400, "There was an error parsing the body"
    ),
    401: _example(
        "unauthorized",
        "Missing or invalid API key",
        401,
        "Send an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
    ),
    404: _example("not-found", "Resource not found", 404, "Customer 42 does not exist.", field="customer_id"),
    409: _example(
        "conflict", "Conflict", 409, "This Idempotency-Key is in use; retry later.", field="Idempotency-Key"
    ),
    413: _example(
        "payload-too-large",
        "Request body too large",
        413,
        "The request body is larger than the limit of 65536 bytes.",
    ),
    422: _example(
        "validation-error",
        "Request validation failed",
        422,
        "Invalid value for: body.tenure",
        errors=[
            {
                "field": "body.tenure",
                "message": "Input should be less than or equal to 600",
                "type": "less_than_equal",
            }
        ],
    ),
    503: _example(
        "service-unavailable", "Service unavailable", 503, "The database is unavailable; retry later."
    ),
}


IMPORT_IN_PROGRESS_EXAMPLE = _example(
    "import-in-progress",
    "Import in progress",
    503,
    "An import that may change customer 42's credit history is running; retry once it has finished.",
)


def import_aware_503() -> dict[int | str, dict[str, Any]]:
    """503 for a decision that may wait for a running import: both reasons, and the Retry-After header."""
    return {
        503: {
            "description": DESCRIPTIONS[503] + " Also while a workbook import that can change this "
            "customer's history runs (`import-in-progress`): the decision waits for the imported history.",
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer"},
                }
            },
            "content": {
                PROBLEM_JSON: {
                    "schema": {"$ref": "#/components/schemas/Problem"},
                    "examples": {
                        "database-unavailable": {"value": EXAMPLES[503]},
                        "import-in-progress": {"value": IMPORT_IN_PROGRESS_EXAMPLE},
                    },
                }
            },
        }
    }


PAYMENT_NOT_ACCEPTED_EXAMPLE = {
    **_example(
        "payment-not-accepted",
        "Payment amount not accepted",
        422,
        "Installment 3 takes at least its interest, 1850.25.",
        field="amount",
        minimum_amount=1850.25,
    ),
    "instance": "/api/make-payment/42/1001",
}
LOAN_PAID_OFF_EXAMPLE = {
    **_example(
        "loan-paid-off",
        "Loan already paid off",
        409,
        "Loan 1001 is paid off: nothing is owed.",
        field="loan_id",
    ),
    "instance": "/api/make-payment/42/1001",
}


def payment_problems() -> dict[int | str, dict[str, Any]]:
    """make-payment's 409 and 422: the documented reasons besides the generic ones."""
    return {
        409: {
            "description": "The loan is paid off (`loan-paid-off`), or a request with the same "
            "Idempotency-Key is still in progress.",
            "content": {
                PROBLEM_JSON: {
                    "schema": {"$ref": "#/components/schemas/Problem"},
                    "examples": {
                        "loan-paid-off": {"value": LOAN_PAID_OFF_EXAMPLE},
                        "idempotency-key-in-use": {"value": EXAMPLES[409]},
                    },
                }
            },
        },
        422: {
            "description": DESCRIPTIONS[422]
            + " `payment-not-accepted`: the amount is below the installment's "
            "interest (`minimum_amount`), above the payoff, or not the exact payoff the last installment "
            "takes (`payoff_amount`). `invalid-request` on `paid_on`: in the future, before the loan's "
            "start or before its latest payment.",
            "content": {
                PROBLEM_JSON: {
                    "schema": {"$ref": "#/components/schemas/Problem"},
                    "examples": {
                        "payment-not-accepted": {"value": PAYMENT_NOT_ACCEPTED_EXAMPLE},
                        "validation-error": {"value": EXAMPLES[422]},
                    },
                }
            },
        },
    }


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {
            "description": DESCRIPTIONS[code],
            "content": {
                PROBLEM_JSON: {
                    "schema": {"$ref": "#/components/schemas/Problem"},
                    "example": EXAMPLES[code],
                }
            },
        }
        for code in statuses
    }
