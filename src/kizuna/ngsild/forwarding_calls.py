"""One request to one context source, and what comes back: the records a forwarded request is
made of and the pure rules of what it carries (parameters, headers' @context, a source's error
as the node's). :class:`kizuna.ngsild.forwarding.Federation` makes and sends them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from kizuna import errors
from kizuna.access.subject import ANONYMOUS, Subject
from kizuna.errors import ERRORS_BASE, InternalError, NgsiLdError
from kizuna.ngsild.forwarding_plan import Target

# Parameters that concern this node's answer (paging, representation), not what a source holds.
NOT_FORWARDED = frozenset({"local", "limit", "offset", "count", "options", "format", "via"})
# Parameters of a write that only state what the operation does anyway.
DEFAULTS = frozenset({("options", "replace"), ("deleteAll", "false")})
LINK_REL = 'rel="http://www.w3.org/ns/json-ld#context"'
# RFC 7234 warn-codes of NGSILD-Warning (clause 6.3.17), by why a source's share is missing.
UNREACHED = 111  # Revalidation Failed: the source did not answer, the rest is what could be had
SOURCE_ERROR = 199  # Miscellaneous Warning: the source answered an error this time
NOT_USABLE = 299  # Miscellaneous Persistent Warning: not asked, or its answer is not NGSI-LD
WARNINGS_STATE = "source_warnings"  # request.state member: the list an Origin's warnings go to


@dataclass(frozen=True, slots=True)
class SourceWarning:
    """A context source whose share of a read is missing from the answer: the client asked
    this node, so the read still succeeds, and is told which registration failed and why."""

    code: int
    registration_id: str
    text: str

    def header(self) -> str:
        """As RFC 7234's warning-value: the registration is the warn-agent, the text a quoted
        string (latin-1 only, as header values are)."""
        text = self.text.replace("\\", "\\\\").replace('"', '\\"')
        text = text.encode("latin-1", "replace").decode("latin-1")
        return f'{self.code} {self.registration_id} "{" ".join(text.split())}"'


@dataclass(slots=True)
class Origin:
    """What a forwarded request carries over from the client's request (no HTTP objects).

    Made for every entity request, so it is a plain slotted record (a frozen dataclass costs
    a microsecond more to build)."""

    subject: Subject = ANONYMOUS  # who asks: what the node does for it, it does with its rights
    link: str | None = None  # the client's @context URL, sent on so sources answer in its terms
    via: str | None = None  # the client's Via header: the nodes the request went through
    params: tuple[tuple[str, str], ...] = ()  # the client's query parameters, in order
    local: bool = False  # local=true: this node's data only
    body: Any = None  # the body of a POST query, forwarded as is
    content_type: str = "application/json"
    # The client's headers: only those a registration names as ``urn:ngsi-ld:request`` go on.
    headers: Mapping[str, str] = field(default_factory=dict)
    # Filled by the forwarding of a read, turned into NGSILD-Warning by the edge of the API.
    warnings: list[SourceWarning] = field(default_factory=list)


@dataclass(slots=True)
class Forwarded:
    """How the context sources took a forwarded write: which registrations' sources did it
    (with the attributes they took), and which did not, with the error they answered."""

    done: list[tuple[str, frozenset[str]]] = field(default_factory=list)  # registration, attributes
    failed: list[tuple[str, frozenset[str], NgsiLdError]] = field(default_factory=list)
    local: bool = True  # the node did its own share
    # The node's share failed for its own state (attributes, error); the sources still did theirs.
    local_error: tuple[frozenset[str], NgsiLdError] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """How a source took a forwarded write: ``problem`` is ``None`` on success; a 207 batch
    answer also keeps its body, to tell which entities failed."""

    problem: dict[str, Any] | None
    multi_status: Any = None

    def refusals(self) -> dict[str, dict[str, Any]] | None:
        """Entity id -> ProblemDetails of the errors a 207 batch answer reports (``None``: not
        such an answer, so ``problem`` applies to every entity sent)."""
        if not isinstance(self.multi_status, dict) or not isinstance(self.multi_status.get("errors"), list):
            return None
        return {
            e["entityId"]: e["error"] if isinstance(e.get("error"), dict) else {}
            for e in self.multi_status["errors"]
            if isinstance(e, dict) and isinstance(e.get("entityId"), str)
        }


@dataclass(frozen=True, slots=True)
class Call:
    """One request to one context source: every forwarded read and write is made from one, so
    its address is built, and its failures logged, alike."""

    target: Target
    method: str
    path: str
    origin: Origin
    params: Sequence[tuple[str, str]] = ()
    body: Any = None

    @property
    def url(self) -> str:
        url = self.target.reg["endpoint"].rstrip("/") + self.path
        return url + "?" + urlencode(self.params, safe=":,*|;") if self.params else url


def node_name(public_url: str) -> str:
    """The name this node goes by in Via headers: the host and port clients reach it at."""
    return urlsplit(public_url).netloc or public_url


def types_of(body: Any, expand: Callable[[str], str] | None) -> list[str] | None:
    """The entity types a write's body gives, as IRIs (``None``: none, or not valid ones)."""
    if expand is None or not isinstance(body, dict):
        return None
    given = body.get("type")
    names = given if isinstance(given, list) else [given]
    if not names or not all(isinstance(name, str) and name for name in names):
        return None
    return [expand(name) for name in names]


def remote_error(problem: Mapping[str, Any], registration_id: str) -> NgsiLdError:
    """A source's ProblemDetails as the error type of :mod:`kizuna.errors` it names (else
    InternalError), with the source's status and the registration it was forwarded by. Only
    its short title is told, never its detail, which may carry whatever the
    source's host holds."""
    type_uri = problem.get("type")
    kind: type[NgsiLdError] = InternalError
    if isinstance(type_uri, str) and type_uri.startswith(ERRORS_BASE):
        kind = ERROR_TYPES.get(type_uri[len(ERRORS_BASE) :], InternalError)
    title = problem.get("title")
    detail = title[:120] if isinstance(title, str) and title else "The context source failed"
    status = problem.get("status")
    return kind(
        str(detail),
        status=status if isinstance(status, int) else None,
        registrationId=registration_id,
    )


# The ProblemDetails types of clause 5.5.2, by name: a source's error keeps its type here.
ERROR_TYPES: dict[str, type[NgsiLdError]] = {
    kind.type_name: kind
    for kind in vars(errors).values()
    if isinstance(kind, type) and issubclass(kind, NgsiLdError) and kind is not NgsiLdError
}


def write_params(origin: Origin) -> list[tuple[str, str]]:
    """A write goes on with the client's parameters that mean something (options=noOverwrite,
    datasetId, ...); one that only states the default (``options=replace`` of an upsert,
    ``deleteAll=false``) is left out, as sources (and the ETSI suite's) expect plain requests."""
    return [
        (name, value) for name, value in origin.params if name != "local" and (name, value) not in DEFAULTS
    ]


def forwarded_params(params: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """A read goes on with the client's filters, not with what shapes this node's answer."""
    return [(name, value) for name, value in params if name not in NOT_FORWARDED]


def link_of(header: str | None) -> str | None:
    """The @context URL of a source's ``Link`` header, if it sent one."""
    for part in (header or "").split(","):
        url, _, params = part.partition(";")
        url = url.strip()
        if "json-ld#context" in params and url.startswith("<") and url.endswith(">"):
            return url[1:-1]
    return None
