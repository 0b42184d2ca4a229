"""Request handlers for the hot reads, built once per route from what FastAPI already worked out about it.

Why: FastAPI's generic handler re-derives, on every request, what the route's signature fixed at startup:
it walks the dependency tree, looks up overrides and caches, parses the content type with the email
package, and validates the endpoint's return value again before serialising it. For a read that is about
a third of the request's CPU (bench/PROFILING.md). A route of a shape listed below gets a handler that
does the same work directly:

- path parameters, each validated by the very validator FastAPI built for it (same rules, same result);
- query parameters only when the request has no query string (each takes its default);
- one JSON body model, when the request says `Content-Type: application/json`, parsed with `json.loads`
  and validated by FastAPI's own validator for it, as FastAPI does;
- dependencies that are plain async functions of the Request alone (the reader, the clock, the policy);
- a return value of exactly the declared model (or a list of it) is serialised without validating it
  again; a Response is sent as it is.

Anything else about a request (a parameter or body that does not validate, another content type, a
query string, dependency overrides) goes to FastAPI's own handler, unchanged, which answers exactly as it
always did: the fast path only takes requests whose result it computes identically.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, get_args, get_origin

from fastapi import Request, Response
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import ResponseValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

_JSON = "application/json"
# (method, path) of each route that got one: tests hold the hot reads to it.
FAST_ROUTES: set[tuple[str, str]] = set()


def _plain_request_dependency(dependant: Dependant) -> bool:
    """An async function whose only parameter is the Request, with nothing to clean up."""
    return (
        dependant.call is not None
        and inspect.iscoroutinefunction(dependant.call)
        and dependant.request_param_name is not None
        and not (
            dependant.path_params
            or dependant.query_params
            or dependant.header_params
            or dependant.cookie_params
            or dependant.body_params
            or dependant.dependencies
            or dependant.response_param_name
            or dependant.background_tasks_param_name
            or dependant.security_scopes_param_name
            or dependant.websocket_param_name
            or dependant.http_connection_param_name
        )
    )


def _exact_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model, is_list) when the route returns a model or a list of one; (None, False) otherwise."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation, False
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        if inspect.isclass(item) and issubclass(item, BaseModel):
            return item, True
    return None, False


def _is_exactly(result: Any, model: type[BaseModel], is_list: bool) -> bool:
    if is_list:
        return type(result) is list and all(type(item) is model for item in result)
    return type(result) is model


def fast_handler(route: APIRoute, standard: Handler) -> Handler | None:
    """A handler for `route` equivalent to FastAPI's `standard` one, or None when its shape is not one of
    those listed in the module's docstring."""
    dependant = route.dependant
    endpoint = dependant.call
    if (
        endpoint is None
        or not inspect.iscoroutinefunction(endpoint)
        or dependant.header_params
        or dependant.cookie_params
        or len(dependant.body_params) > 1
        or route._embed_body_fields
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
        or dependant.request_param_name
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or not all(_plain_request_dependency(sub) for sub in dependant.dependencies)
        or not isinstance(route.response_class, DefaultPlaceholder)
        or route.response_model_include
        or route.response_model_exclude
        or route.response_model_exclude_unset
        or route.response_model_exclude_defaults
        or route.response_model_exclude_none
        or not route.response_model_by_alias
    ):
        return None
    response_field = route.response_field
    model, is_list = _exact_model(route.response_model)
    if response_field is not None and model is None:
        return None
    if response_field is None and inspect.signature(endpoint).return_annotation not in (Response, "Response"):
        return None
    path_params = [(field.name, field.alias, field) for field in dependant.path_params]
    query_params = dependant.query_params
    if any(field.get_default() is PydanticUndefined for field in query_params):
        return None  # a required query parameter: always FastAPI's
    body = dependant.body_params[0] if dependant.body_params else None
    dependencies: list[tuple[str, Callable[[Request], Awaitable[Any]]]] = [
        (sub.name, sub.call) for sub in dependant.dependencies if sub.name and sub.call
    ]
    status_code = route.status_code or 200

    async def handler(request: Request) -> Response:
        scope = request.scope
        if scope["query_string"] or request.app.dependency_overrides:
            return await standard(request)
        values: dict[str, Any] = {}
        raw_path = scope["path_params"]
        for name, alias, field in path_params:
            value, errors = field.validate(raw_path.get(alias), values, loc=("path", alias))
            if errors:
                return await standard(request)
            values[name] = value
        for field in query_params:
            values[field.name] = field.get_default()  # per request, as FastAPI does (default factories)
        if body is not None:
            if request.headers.get("content-type") != _JSON:
                return await standard(request)
            raw = await request.body()  # kept by the Request: the standard handler reads it again
            try:
                document = json.loads(raw)
            except ValueError:
                return await standard(request)
            value, errors = body.validate(document, values, loc=("body",))
            if errors:
                return await standard(request)
            values[body.name] = value
        for name, call in dependencies:
            values[name] = await call(request)
        result = await endpoint(**values)
        if isinstance(result, Response) or response_field is None:
            return result  # without a response field the endpoint returns a Response
        if model is None or not _is_exactly(result, model, is_list):
            # Not exactly what the route declares: validated first, as FastAPI does.
            validated, errors = response_field.validate(result, {}, loc=("response",))
            if errors:
                raise ResponseValidationError(errors=errors, body=result)
            result = validated
        return Response(response_field.serialize_json(result), status_code=status_code, media_type=_JSON)

    FAST_ROUTES.update((method, route.path) for method in route.methods or ())
    return handler
