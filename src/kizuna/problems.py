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

from kizuna.errors import InternalError, InvalidRequest, NgsiLdError, ResourceNotFound

log = logging.getLogger("kizuna")
PROBLEM_TYPE = "application/json"


def problem_response(error: NgsiLdError) -> Response:
    return Response(
        orjson.dumps(error.to_problem()),
        status_code=error.status,
        media_type=PROBLEM_TYPE,
        headers=error.headers or None,
    )


async def ngsild_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NgsiLdError)
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
