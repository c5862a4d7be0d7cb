"""What every NGSI-LD route needs from HTTP: tenant, @context, media types, bodies, options.

Routes stay thin: they call these helpers to turn a request into service arguments, and
:func:`respond` to turn a result into a response with the right Content-Type and Link header.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kizuna.access.subject import Subject
from kizuna.errors import (
    BadRequestData,
    InvalidRequest,
    NgsiLdError,
    NotAcceptable,
    UnsupportedMediaType,
)
from kizuna.jsonld.contexts import ContextRegistry, ContextValue
from kizuna.jsonld.terms import TermMap
from kizuna.limits import InputLimits, PageLimits
from kizuna.media import negotiate
from kizuna.ngsild.selection import Page, Params, parse_page
from kizuna.request_headers import header as request_header

Endpoint = Callable[[Request], Awaitable[Response]]

JSON = "application/json"
JSON_LD = "application/ld+json"
GEO_JSON = "application/geo+json"
MERGE_PATCH = "application/merge-patch+json"
CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"
CORE_LINK_URL = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
TENANT_HEADER = "ngsild-tenant"


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def tenant_of(request: Request, header: str = TENANT_HEADER, param: str | None = None) -> str:
    """The tenant a request names in ``header`` (NGSI-LD's, or another API's: NGSI v2's
    ``Fiware-Service``), or else in the query parameter ``param`` (for a browser's EventSource,
    which cannot set headers), checked alike whichever carries it."""
    tenant = request_header(request.scope, header, "") or (
        request.query_params.get(param, "") if param else ""
    )
    if tenant and (len(tenant) > 256 or any(c in tenant for c in "<>\"'=;()\\ ")):
        raise BadRequestData(f"Invalid tenant name {tenant!r}")
    return tenant


def subject_of(request: Request) -> Subject:
    """Who asks: set by the authentication middleware in front of every API (a request that
    did not pass it has no subject, and fails rather than act for nobody in particular). Read
    off the scope's state: ``request.state`` wraps it in a new object on each request."""
    return request.scope["state"]["subject"]


def link_context(request: Request) -> str | None:
    """The @context URL of a ``Link`` header with the JSON-LD context relation, if any."""
    header = request_header(request.scope, "link")
    if not header:
        return None
    for part in header.split(","):
        url, _, params = part.partition(";")
        url = url.strip()
        if CONTEXT_REL in params and url.startswith("<") and url.endswith(">"):
            return url[1:-1]
    raise BadRequestData("The Link header does not name a JSON-LD @context")


def accepted_type(request: Request, *, geo: bool = False) -> str:
    """Content negotiation of clause 6.3.4: JSON, JSON-LD and (for entities) GeoJSON."""
    header = request_header(request.scope, "accept")
    if not header:
        return JSON
    chosen = negotiate(header, [JSON, JSON_LD, *([GEO_JSON] if geo else [])])
    if chosen is None:
        raise NotAcceptable(f"Cannot produce any of: {header}")
    return chosen


@dataclass(slots=True)
class Payload:
    """A request body with the @context it came with (from the Link header or from the body)."""

    body: Any
    context: ContextValue


async def read_json(request: Request, *, merge_patch: bool = False) -> Any:
    """The JSON body of a request: 415 for other media types, 400 if malformed or past the
    input limits (its size was bounded before the route ran: kizuna.middleware.body_limit)."""
    media = _media_type(request_header(request.scope, "content-type"))
    allowed = (JSON, JSON_LD, MERGE_PATCH) if merge_patch else (JSON, JSON_LD)
    if media not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'} is not supported; use {' or '.join(allowed)}"
        )
    raw = await request.body()
    if not raw:
        raise InvalidRequest("The request has no body")
    return input_limits(request).parse(raw)


def page_of(request: Request, params: Params | None = None) -> Page:
    """``limit``, ``offset`` and ``count`` of a request (or of ``params``, a batch query's
    members merged in), within the node's ``--default-limit`` and ``--max-limit``."""
    limits: PageLimits = request.app.state.page_limits
    given: Params = request.query_params if params is None else params
    if "count" in option_names(request):
        given = {**given, "count": "true"}
    return parse_page(given, limits.default, limits.maximum)


def input_limits(request: Request) -> InputLimits:
    """The node's input limits (set on the app by :func:`kizuna.app.create_app`)."""
    limits: InputLimits = request.app.state.limits
    return limits


async def read_payload(request: Request, *, merge_patch: bool = False) -> Payload:
    """A JSON or JSON-LD body with its @context, per clause 6.3.5."""
    body = await read_json(request, merge_patch=merge_patch)
    link = link_context(request)
    if is_json_ld(request):
        if link is not None:
            raise BadRequestData("A JSON-LD body carries its @context inside; a Link header is not allowed")
        context = _body_context(body, required=True)
    else:
        if isinstance(body, dict) and "@context" in body:
            raise BadRequestData("A body with @context must be sent as application/ld+json")
        context = link
    return Payload(body, context)


async def read_payload_terms(
    request: Request, registry: ContextRegistry, *, merge_patch: bool = False
) -> tuple[Payload, TermMap]:
    """A body with the compiled term map of its @context: what every write route starts with."""
    payload = await read_payload(request, merge_patch=merge_patch)
    return payload, await registry.term_map(payload.context)


async def link_terms(request: Request, registry: ContextRegistry) -> tuple[TermMap, str | None]:
    """The term map of the Link header's @context (the core context without one), and that URL."""
    context = link_context(request)
    return await registry.term_map(context), context


class Reading(NamedTuple):
    """Where a GET of NGSI-LD resources (not entities) starts: the media type the answer takes,
    the terms of the Link header's @context, and that URL (given back in the answer's Link)."""

    media: str
    terms: TermMap
    context: str | None


async def reading(request: Request, registry: ContextRegistry, allowed: frozenset[str]) -> Reading:
    """Checks the query parameters against ``allowed``, then negotiates the media type, then
    reads the Link header's @context: the order in which their errors are reported."""
    check_params(request, allowed)
    media = accepted_type(request)
    terms, context = await link_terms(request, registry)
    return Reading(media, terms, context)


def _body_context(body: Any, *, required: bool) -> ContextValue:
    if isinstance(body, dict):
        if "@context" not in body:
            if required:
                raise BadRequestData("An application/ld+json body must contain an @context")
            return None
        return body["@context"]
    if isinstance(body, list):
        return None  # batch: every element carries its own @context
    raise BadRequestData("The body must be a JSON object or array")


async def terms_for_items(
    registry: ContextRegistry, payload: Payload, media_is_ld: bool
) -> list[tuple[Any, TermMap | NgsiLdError]]:
    """For batch bodies: each entity with the term map of its own (or the Link header's) @context.

    A context problem of one entity (unreachable, missing, or sent with the wrong media type)
    is that entity's error in the batch result, not the whole request's."""
    if not isinstance(payload.body, list) or not payload.body:
        raise BadRequestData("A batch operation takes a non-empty JSON array")
    shared = None if media_is_ld else await registry.term_map(payload.context)
    items: list[tuple[Any, TermMap | NgsiLdError]] = []
    for item in payload.body:
        try:
            if shared is not None:
                if isinstance(item, dict) and "@context" in item:
                    raise BadRequestData("An entity with @context must be sent as application/ld+json")
                items.append((item, shared))
            elif not isinstance(item, dict) or "@context" not in item:
                raise BadRequestData("Every entity of an application/ld+json batch must contain an @context")
            else:
                items.append((item, await registry.term_map(item["@context"])))
        except NgsiLdError as error:
            items.append((item, error))
    return items


def is_json_ld(request: Request) -> bool:
    return _media_type(request_header(request.scope, "content-type")) == JSON_LD


def respond(
    data: Any,
    *,
    media: str = JSON,
    context: ContextValue = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    links: list[str] | None = None,
) -> Response:
    """A JSON(-LD) response; the @context goes into the Link header or into the body.

    GeoJSON has no JSON-LD processing of its own, so its @context is a top-level member of the
    Feature / FeatureCollection (clause 4.5.16), as for JSON-LD. ``links`` (e.g. from
    :func:`page_links`) join the Link header after the @context link."""
    out_headers = dict(headers or {})
    if media == GEO_JSON and isinstance(data, dict):
        data = {**data, "@context": context if context is not None else CORE_LINK_URL}
    elif media == JSON_LD:
        ctx_value = context if context is not None else CORE_LINK_URL
        if isinstance(data, list):
            data = [{"@context": ctx_value, **item} if isinstance(item, dict) else item for item in data]
        elif isinstance(data, dict):
            data = {"@context": ctx_value, **data}
    else:
        out_headers["Link"] = link_header(context)
    if links:
        existing = out_headers.get("Link")
        out_headers["Link"] = ",".join([existing, *links] if existing else links)
    return Response(orjson.dumps(data), status_code=status, media_type=media, headers=out_headers)


def page_links(request: Request, path: str, limit: int, offset: int, total: int) -> list[str]:
    """Clause 6.3.13 pagination: ``Link`` relations prev/next keeping the other query parameters,
    when there is such a page (``total``: the number of results, or at least ``offset + limit + 1``
    when a next page is known to exist)."""
    if limit == 0:
        return []
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in ("limit", "offset")]

    def link(page_offset: int, rel: str) -> str:
        query = urlencode([*kept, ("limit", limit), ("offset", page_offset)], safe=";:()|*$^.=!~\"'/[]")
        return f'<{path}?{query}>;rel="{rel}";type="application/ld+json"'

    links = []
    if offset > 0:
        links.append(link(max(offset - limit, 0), "prev"))
    if offset + limit < total:
        links.append(link(offset + limit, "next"))
    return links


def link_header(context: ContextValue) -> str:
    url = context if isinstance(context, str) else CORE_LINK_URL
    return f'<{url}>; rel="{CONTEXT_REL}"; type="application/ld+json"'


def respond_page(
    request: Request,
    body: list[Any],
    page: Page,
    total: int,
    path: str,
    *,
    media: str = JSON,
    context: ContextValue = None,
) -> Response:
    """One page of a listing whose size is known: ``NGSILD-Results-Count`` when the request
    counts (clause 6.3.13), and the prev/next links of ``path``."""
    headers = {"NGSILD-Results-Count": str(total)} if page.count else {}
    links = page_links(request, path, page.limit, page.offset, total)
    return respond(body, media=media, context=context, headers=headers, links=links)


Remove = Callable[[str, Subject, str], Awaitable[None]]


def collection_routes(
    path: str,
    param: str,
    *,
    query: Endpoint,
    create: Endpoint,
    retrieve: Endpoint,
    update: Endpoint,
    delete: Remove,
) -> list[Route]:
    """The routes of a collection of resources, as NGSI-LD lays each one out (subscriptions,
    registrations, permissions): GET and POST on ``path``, GET, PATCH and DELETE on one member,
    named by the path parameter ``param``. ``delete`` is the service call itself: removing a
    member takes nothing from the request but its name and who asks."""

    async def remove(request: Request) -> Response:
        check_params(request, frozenset())
        await delete(*member(request, param))
        return no_content()

    one = f"{path}/{{{param}}}"
    return [
        Route(path, query, methods=["GET"]),
        Route(path, create, methods=["POST"]),
        Route(one, retrieve, methods=["GET"]),
        Route(one, update, methods=["PATCH"]),
        Route(one, remove, methods=["DELETE"]),
    ]


def member(request: Request, param: str) -> tuple[str, Subject, str]:
    """Tenant, subject and the member a request on one resource of a collection names, in the
    order every service method on one member takes them."""
    return tenant_of(request), subject_of(request), request.path_params[param]


def created(collection: str, resource_id: str) -> Response:
    """201 with the ``Location`` of a new resource of ``collection`` (its id percent-encoded,
    ``:`` kept, as every NGSI-LD id is a URI)."""
    return Response(status_code=201, headers={"Location": f"{collection}/{quote(resource_id, safe=':')}"})


def no_content(headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=204, headers=headers)


# -- query parameters ------------------------------------------------------------------------------


def check_params(request: Request, allowed: frozenset[str] | set[str]) -> None:
    """Unknown query parameters are refused first (clause 6.3.x), before the body is read."""
    unknown = [name for name in request.query_params if name not in allowed]
    if unknown:
        raise InvalidRequest(f"Unknown query parameter(s): {', '.join(sorted(set(unknown)))}")


OPTIONS = frozenset(
    {"sysAttrs", "keyValues", "simplified", "concise", "normalized", "noOverwrite", "replace", "update"}
    | {"count"}  # count=true as an option, as Orion-LD takes it (FiLiP sends both): see page_of
)


def option_names(request: Request) -> set[str]:
    """The ``options`` values, of every ``options`` parameter given, unchecked."""
    raw = request.query_params.getlist("options")
    return {item.strip() for value in raw for item in value.split(",") if item.strip()}


def options_of(request: Request) -> set[str]:
    """The ``options`` values; an unknown one makes the request syntactically invalid (InvalidRequest,
    as ETSI 018_16 and 021_20 expect), like an unknown parameter."""
    found = option_names(request)
    unknown = found - OPTIONS
    if unknown:
        raise InvalidRequest(f"Unknown options: {', '.join(sorted(unknown))}")
    return found
