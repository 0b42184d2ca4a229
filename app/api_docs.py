"""The OpenAPI document's prose: the overview shown at /docs and /redoc, and one description per tag."""

from __future__ import annotations

TITLE = "Credit Approval Service"

DESCRIPTION = """
Registers customers, scores their credit from their loan history, decides loan applications,
records approved loans and services them: payments, statements and arrears. Lenders' historical
workbooks are loaded by background ingestion jobs.

## Conventions
* **Money** is a JSON number in the lender's currency with at most 2 decimals (e.g. `200000.5`).
* **Interest rates** are in % per year (`10.5` means 10.5 % per year).
* **Tenures** and other durations are whole months.
* **Identifiers** are positive 64-bit integers.

## Authentication
When the service is configured with API keys, every `/api` request must send one as
`Authorization: Bearer <key>` (or `X-API-Key: <key>`); a missing or wrong key answers `401`.

## Errors
Every error is an [RFC 9457](https://www.rfc-editor.org/rfc/rfc9457) problem document,
`application/problem+json`, with `type`, `title`, `status`, `detail`, `instance` and the `request_id`
of the request. Validation errors (`422`) list each invalid field in `errors`. `503` means a
dependency (the database) is unavailable: retry after the `Retry-After` seconds.

## Request ids
Send `X-Request-ID` (printable ASCII, at most 128 characters) to correlate your logs with ours;
otherwise one is generated. Either way it is echoed in the `X-Request-ID` response header, in problem
documents and in every log line the request produces.

## Operations
`GET /health` (liveness), `GET /ready` (readiness of the database, Redis and the ingestion worker) and
`GET /metrics` (Prometheus) are served outside `/api` and are not listed below.
""".strip()

TAGS = [
    {
        "name": "customers",
        "description": "Register customers; their approved limit follows from their income.",
    },
    {
        "name": "eligibility",
        "description": "Score a customer and decide a loan application without storing anything.",
    },
    {"name": "loans", "description": "Create loans (decided as eligibility is) and view them."},
    {
        "name": "servicing",
        "description": "Repayments: pay a loan's next installment, and its statement (schedule, payments, "
        "arrears and payoff).",
    },
    {
        "name": "decisions",
        "description": "Every create-loan decision on record (append-only), explained with its figures.",
    },
    {
        "name": "policy",
        "description": "The credit policy in force and every version decisions were made under.",
    },
    {
        "name": "ingestion",
        "description": "Background loading of lenders' customer and loan workbooks, and the jobs' reports.",
    },
    {
        "name": "operations",
        "description": "Health (`/health`), readiness (`/ready`) and Prometheus metrics (`/metrics`), "
        "for orchestrators and monitoring; outside `/api` and not listed as operations.",
    },
]
