"""ProblemDetails errors (RFC 7807) with the NGSI-LD error types of GS CIM 009 clause 5.5.2.

Every error the node reports is raised as one of these; the HTTP edge turns them into
``application/json`` ProblemDetails bodies. Domain code never builds HTTP responses itself.
"""

from __future__ import annotations

from typing import Any

ERRORS_BASE = "https://uri.etsi.org/ngsi-ld/errors/"


class NgsiLdError(Exception):
    """Base of every error that reaches a client; subclasses fix the type URI and status."""

    type_name = "InternalError"
    title = "Internal error"
    status = 500

    def __init__(self, detail: str, *, status: int | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return ERRORS_BASE + self.type_name

    def to_problem(self) -> dict[str, Any]:
        problem: dict[str, Any] = {"type": self.type_uri, "title": self.title, "status": self.status}
        if self.detail:
            problem["detail"] = self.detail
        problem.update(self.extra)
        return problem


class InvalidRequest(NgsiLdError):
    type_name = "InvalidRequest"
    title = "The request associated to the operation is syntactically invalid or includes wrong content"
    status = 400


class BadRequestData(NgsiLdError):
    type_name = "BadRequestData"
    title = "The request includes input data which does not meet the requirements of the operation"
    status = 400


class AlreadyExists(NgsiLdError):
    type_name = "AlreadyExists"
    title = "The referred element already exists"
    status = 409


class OperationNotSupported(NgsiLdError):
    type_name = "OperationNotSupported"
    title = "The operation is not supported"
    status = 422


class ResourceNotFound(NgsiLdError):
    type_name = "ResourceNotFound"
    title = "The referred resource has not been found"
    status = 404


class NonExistingTenant(NgsiLdError):
    type_name = "NonExistingTenant"
    title = "The addressed tenant does not exist"
    status = 404


class InternalError(NgsiLdError):
    pass


class TooComplexQuery(NgsiLdError):
    type_name = "TooComplexQuery"
    title = "The query is too complex to be served"
    status = 403


class TooManyResults(NgsiLdError):
    type_name = "TooManyResults"
    title = "The query produces too many results"
    status = 403


class LdContextNotAvailable(NgsiLdError):
    type_name = "LdContextNotAvailable"
    title = "A remote JSON-LD @context cannot be retrieved"
    status = 503


class NotAcceptable(NgsiLdError):
    """406: no representation the client accepts (the spec names no type; we use InvalidRequest)."""

    type_name = "NotAcceptable"
    title = "None of the requested media types can be produced"
    status = 406


class UnsupportedMediaType(NgsiLdError):
    type_name = "UnsupportedMediaType"
    title = "The request body's media type is not supported"
    status = 415


class PayloadTooLarge(NgsiLdError):
    type_name = "PayloadTooLarge"
    title = "The request body exceeds the configured limit"
    status = 413


class Conflict(NgsiLdError):
    """409 for conflicts other than existence, e.g. deleting a context still in use."""

    type_name = "Conflict"
    title = "The request conflicts with the current state of the resource"
    status = 409


class ServiceUnavailable(NgsiLdError):
    type_name = "ServiceUnavailable"
    title = "The service is temporarily unavailable"
    status = 503


class LoopDetected(NgsiLdError):
    """508: a forwarded request came back to a node it already passed (clause 6.3.18, Via)."""

    type_name = "LoopDetected"
    title = "The request has looped through the node that received it"
    status = 508
