"""ProblemDetails errors (RFC 7807) with the NGSI-LD error types of GS CIM 009 clause 5.5.2.

Every error the node reports is raised as one of these; the HTTP edge turns them into
``application/json`` ProblemDetails bodies (DSP errors into DSP error messages). Domain code never
builds HTTP responses itself, and never picks a status: the error type carries it.

The module also holds the internal failures that never reach a client as such (an unreadable
policy, an unauthenticated DSP request, an unreachable counterparty, a failed notification
delivery): each is caught and turned into one of the errors above, or retried.
"""

from __future__ import annotations

from typing import Any

ERRORS_BASE = "https://uri.etsi.org/ngsi-ld/errors/"
KIZUNA_ERRORS_BASE = "https://w3id.org/kizuna/errors/"
DSPACE_CONTEXT = "https://w3id.org/dspace/2025/1/context.jsonld"


class NgsiLdError(Exception):
    """Base of every error that reaches a client; subclasses fix the type URI and status."""

    type_name = "InternalError"
    title = "Internal error"
    status = 500
    headers: dict[str, str] = {}  # response headers the error implies (WWW-Authenticate)

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


class HiddenResource(ResourceNotFound):
    """A resource that exists but that the subject may not see. The answer is exactly that of a
    missing one, so its existence stays secret; the audit trail still records the refusal."""


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


class TooManyStreams(ServiceUnavailable):
    """503 when a process holds as many console event streams as ``--console-max-streams``
    allows: a stream holds a connection for minutes, so the node refuses more rather than
    run out of them, and says when to try again."""

    title = "The node holds as many event streams as it allows"
    headers = {"Retry-After": "10"}


class LoopDetected(NgsiLdError):
    """508: a forwarded request came back to a node it already passed (clause 6.3.18, Via)."""

    type_name = "LoopDetected"
    title = "The request has looped through the node that received it"
    status = 508


class KizunaError(NgsiLdError):
    """An error NGSI-LD names no type for; its type URI is Kizuna's."""

    @property
    def type_uri(self) -> str:
        return KIZUNA_ERRORS_BASE + self.type_name


# -- access control ------------------------------------------------------------------------------


class NotAuthenticated(KizunaError):
    """401: no credentials where some are needed, or credentials that do not hold."""

    type_name = "NotAuthenticated"
    title = "The request needs valid credentials (a bearer token or an API key)"
    status = 401
    headers = {"WWW-Authenticate": 'Bearer realm="kizuna"'}


class InvalidCredentials(NotAuthenticated):
    headers = {"WWW-Authenticate": 'Bearer realm="kizuna", error="invalid_token"'}


class AccessDenied(KizunaError):
    """403: the subject is known, and does not hold the right it needs."""

    type_name = "AccessDenied"
    title = "The subject may not perform this operation"
    status = 403


class TooManyTenants(KizunaError):
    """403: a write would create a tenant past ``--max-tenants``."""

    type_name = "TooManyTenants"
    title = "The node holds as many tenants as it may"
    status = 403


# -- the catalog formats (CKAN, DCAT-AP) ---------------------------------------------------------


class CatalogSearchInvalid(KizunaError):
    """400: a catalog search (CKAN's ``q``, ``fq``, ``sort``) outside what the node answers;
    the CKAN edge reports it as a ``Search Query Error``, as CKAN reports what Solr refuses."""

    type_name = "CatalogSearchInvalid"
    title = "The catalog search cannot be answered"
    status = 400


class CatalogParameterInvalid(KizunaError):
    """409: a parameter of a catalog action that does not hold (a missing ``id``, a ``rows``
    that is no number); the CKAN edge reports it as a ``Validation Error`` on ``member``."""

    type_name = "CatalogParameterInvalid"
    title = "A parameter of the catalog action is invalid"
    status = 409

    def __init__(self, member: str, detail: str) -> None:
        super().__init__(detail, member=member)
        self.member = member


# -- the dataspace connector ---------------------------------------------------------------------


class Unauthorized(NgsiLdError):
    type_name = "Unauthorized"
    title = "The request is not authenticated as a trusted participant"
    status = 401


class CounterpartyFailed(NgsiLdError):
    type_name = "CounterpartyFailed"
    title = "The counterparty did not accept the message"
    status = 502


class DataPlaneError(KizunaError):
    """A data plane refusal."""


class InvalidToken(DataPlaneError):
    type_name = "InvalidToken"
    title = "The access token is missing, unknown, expired, or for another transfer"
    status = 401


class UsageDenied(DataPlaneError):
    type_name = "UsageDenied"
    title = "The agreement's usage policy does not allow this access"
    status = 403


class TransferNotActive(DataPlaneError):
    type_name = "TransferNotActive"
    title = "The transfer process is not STARTED"
    status = 403


class DspError(NgsiLdError):
    """A protocol error answered with a DSP error message body (not ProblemDetails).

    The protocol (negotiation, transfer, catalog) fixes the body's ``@type``; the status is the
    error type's (400 here, 404 for the ``...NotFound`` types). The HTTP edge alone may pass
    ``status=`` for what only it sees (a body too large).
    """

    error_type = "ContractNegotiationError"
    status = 400

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        code: str | None = None,
        provider_pid: str | None = None,
        consumer_pid: str | None = None,
    ) -> None:
        super().__init__(reason, status=status)
        self.code = code or str(self.status)
        self.provider_pid = provider_pid
        self.consumer_pid = consumer_pid

    def to_problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {"@context": [DSPACE_CONTEXT], "@type": self.error_type}
        if self.error_type != "CatalogError":
            # The error schemas require both pids; an unknown one is reported as such.
            body["providerPid"] = self.provider_pid or "urn:unknown"
            body["consumerPid"] = self.consumer_pid or "urn:unknown"
        body["code"] = self.code
        body["reason"] = [self.detail]
        return body


class NegotiationError(DspError):
    error_type = "ContractNegotiationError"


class NegotiationNotFound(NegotiationError):
    """No contract negotiation with the given pid."""

    status = 404


class TransferError(DspError):
    error_type = "TransferError"


class TransferNotFound(TransferError):
    """No transfer process with the given pid."""

    status = 404


class CatalogError(DspError):
    error_type = "CatalogError"


class DatasetNotFound(CatalogError):
    """No dataset with the given id in the catalog."""

    status = 404


class Unauthenticated(Exception):
    """The request carries no valid token from a trusted participant (the edge answers
    :class:`Unauthorized`)."""


class CounterpartyError(Exception):
    """The counterparty could not be reached or refused a message; ``status`` and ``body`` are
    what it answered, if anything (reported as :class:`CounterpartyFailed`)."""

    def __init__(self, detail: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(detail)
        self.status = status
        self.body = body


class PolicyError(ValueError):
    """A policy the evaluator cannot read (unknown operator, malformed constraint)."""


# -- notifications -------------------------------------------------------------------------------


class DeliveryError(Exception):
    """The subscriber did not take the notification; worth retrying."""
