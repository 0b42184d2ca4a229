"""OpenAPI declarations of the problem+json error responses, so the document tells the truth."""

from __future__ import annotations

from typing import Any

from app.errors import PROBLEM_JSON

DESCRIPTIONS = {
    401: "Missing or invalid API key.",
    404: "The customer or loan does not exist.",
    409: "Conflicts with the current state (for example a phone number already registered).",
    413: "The request body is larger than 64 KiB.",
    422: "The request is malformed; `errors` names each invalid field.",
    503: "The database is unavailable; retry later.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {
            "description": DESCRIPTIONS[code],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for code in statuses
    }
