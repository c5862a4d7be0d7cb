"""Errors as HTTP answers: every NgsiLdError becomes its ProblemDetails body, status and headers.

The exception handlers of the app and the middleware that answer before any route runs share
this one translation, so an error looks the same wherever it is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import Scope

from kizuna.errors import (
    AccessDenied,
    HiddenResource,
    InternalError,
    InvalidRequest,
    NgsiLdError,
    NotAuthenticated,
    ResourceNotFound,
)

log = logging.getLogger("kizuna")
PROBLEM_TYPE = "application/json"


def problem_response(error: NgsiLdError) -> Response:
    return Response(
        orjson.dumps(error.to_problem()),
        status_code=error.status,
        media_type=PROBLEM_TYPE,
        headers=error.headers or None,
    )


REFUSALS_STATE = "refusals"  # request state: refusals the answer's status does not show


def note_refusals(request: Request, errors: list[tuple[str | None, NgsiLdError]]) -> None:
    """Leave the refusals among ``errors`` (target, error) for the audit trail
    (:mod:`kizuna.middleware.audit`): a hidden resource answers 404 and a batch 207, so the
    status alone does not tell that something was refused."""
    noted = request.scope.setdefault("state", {}).setdefault(REFUSALS_STATE, [])
    for target, error in errors:
        if isinstance(error, HiddenResource | AccessDenied | NotAuthenticated):
            why = "hidden" if isinstance(error, HiddenResource) else error.type_name
            noted.append((target or "", f"{error.status} {why}: {error.detail}"))


async def ngsild_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NgsiLdError)
    if isinstance(exc, HiddenResource):
        note_refusals(request, [(request.url.path, exc)])
    return problem_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return problem_response(ResourceNotFound(f"No resource at {request.url.path}"))
    if exc.status_code == 405:
        error = InvalidRequest(f"Method {request.method} is not allowed on {request.url.path}", status=405)
        response = problem_response(error)
        scope = {"type": "http", "path": request.scope["path"], "root_path": "", "method": request.method}
        response.headers["Allow"] = ", ".join(sorted(allowed_methods(request.app.routes, scope)))
        return response
    return problem_response(InvalidRequest(str(exc.detail), status=exc.status_code))


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> set[str]:
    """Every method a route on the request's path takes, through Mounts. Starlette's 405 names
    the methods of the first route on the path only, and the node declares one route per
    method: ``Allow`` said ``GET, HEAD`` on ``/entities``, which also takes POST and DELETE."""
    allowed: set[str] = set()
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Mount):
            allowed |= allowed_methods(route.routes, {**scope, **child})
        elif isinstance(route, Route):
            allowed |= route.methods or set()
    return allowed


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(InternalError(f"Unexpected error: {type(exc).__name__}"))


EXCEPTION_HANDLERS = {NgsiLdError: ngsild_error, HTTPException: http_error, Exception: unexpected_error}
