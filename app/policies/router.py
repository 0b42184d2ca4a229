from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path

from app.credit.policy import POLICY
from app.deps import PolicyDep, ReaderDep
from app.errors import NotFound
from app.policies import queries
from app.policies.schemas import PolicyOut, PolicyValuesOut
from app.responses import problem_responses

router = APIRouter(prefix="/api", tags=["policy"])

Version = Annotated[
    str,
    Path(
        pattern="^[0-9a-f]{12}$", description="A policy version (12 hex digits).", examples=[POLICY.version]
    ),
]


@router.get(
    "/policy",
    operation_id="getPolicy",
    summary="The credit policy in force",
    description="Every number the decisions use (weights, caps, rate slabs, the EMI share of salary, the "
    "limit rule) and the policy's version. Set by the file CREDIT_POLICY_FILE names, or built in.",
    response_description="The policy in force and its version.",
    responses=problem_responses(422, 503),
)
async def get_policy(policy: PolicyDep, db: ReaderDep) -> PolicyOut:
    stored = await queries.by_version(db, policy.version)
    return PolicyOut(
        version=policy.version,
        values=PolicyValuesOut.of(policy.values()),
        first_used=stored["first_used"] if stored else None,
    )


@router.get(
    "/policies/{version}",
    operation_id="getPolicyVersion",
    summary="A credit policy by version",
    description="A policy the service has run with, as recorded: the version a decision names explains it.",
    response_description="The policy of that version, as recorded.",
    responses=problem_responses(404, 422, 503),
)
async def get_policy_version(version: Version, db: ReaderDep) -> PolicyOut:
    stored = await queries.by_version(db, version)
    if stored is None:
        raise NotFound(f"No policy has version {version}.", field="version")
    return PolicyOut(
        version=stored["version"],
        values=PolicyValuesOut.of(json.loads(stored["policy_values"])),
        first_used=stored["first_used"],
    )
