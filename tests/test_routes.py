"""The app's route table: flat, busiest first, and no request matched by two routes (so the order in
app.main._add_routes changes only the cost); the hot reads get app.fast_handlers' handler."""

from __future__ import annotations

import re

from fastapi import FastAPI
from starlette.routing import Match, Mount, Route

from app.fast_handlers import FAST_ROUTES
from app.main import create_app

_PARAM = re.compile(r"{[^}]+}")


def _sample_requests(app: FastAPI) -> list[tuple[str, str]]:
    requests = []
    for route in app.routes:
        if isinstance(route, Mount):
            requests.append(("GET", route.path + "/some-asset.js"))
        elif isinstance(route, Route):
            path = _PARAM.sub("1", route.path)
            requests += [(method, path) for method in sorted(route.methods or ())]
    return requests


def _full_matches(app: FastAPI, method: str, path: str) -> list[object]:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    return [route for route in app.routes if route.matches(scope)[0] is Match.FULL]


def test_every_request_is_matched_by_exactly_one_route() -> None:
    app = create_app()
    requests = _sample_requests(app)
    assert len(requests) > 30
    for method, path in requests:
        matches = _full_matches(app, method, path)
        assert len(matches) == 1, (method, path, [getattr(r, "path", r) for r in matches])


def test_routes_are_flat_and_the_busiest_come_first() -> None:
    app = create_app()
    paths = [getattr(route, "path", None) for route in app.routes]
    # No nested router groups: every route is matched directly.
    assert all(isinstance(route, Route | Mount) for route in app.routes)
    assert paths[:3] == ["/api/check-eligibility", "/api/create-loan", "/api/view-loan/{loan_id}"]
    assert paths.index("/api/view-loan/{loan_id}/") > paths.index("/redoc")


def test_the_hot_reads_get_the_fast_handler_and_writes_do_not() -> None:
    create_app()
    for read in (
        ("POST", "/api/check-eligibility"),
        ("GET", "/api/view-loan/{loan_id}"),
        ("GET", "/api/view-loans/{customer_id}"),
        ("GET", "/api/view-statement/{customer_id}/{loan_id}"),
        ("GET", "/api/customers/{customer_id}"),
    ):
        assert read in FAST_ROUTES
    for write in (
        ("POST", "/api/create-loan"),
        ("POST", "/api/make-payment/{customer_id}/{loan_id}"),
        ("POST", "/api/register"),
        ("PATCH", "/api/customers/{customer_id}"),
    ):
        assert write not in FAST_ROUTES
