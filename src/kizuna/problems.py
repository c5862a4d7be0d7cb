"""Errors as HTTP answers: every NgsiLdError becomes its ProblemDetails body, status and headers.

The exception handlers of the app and the middleware that answer before any route runs share
this one translation, so an error looks the same wherever it is raised.
"""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

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
        if exc.headers:
            response.headers.update(exc.headers)
        return response
    return problem_response(InvalidRequest(str(exc.detail), status=exc.status_code))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(InternalError(f"Unexpected error: {type(exc).__name__}"))


EXCEPTION_HANDLERS = {NgsiLdError: ngsild_error, HTTPException: http_error, Exception: unexpected_error}
