"""What each route of the node is: a summary, its query parameters, its body, its answers.

One entry per operation, keyed ``"METHOD /path/{param}"`` as the app routes it (path converters
such as ``:path`` left out). The document adds what the API root implies: the path parameters,
the headers, the error statuses every operation of the root can answer and their bodies. To
describe a new route, add one entry here (``tests/test_openapi.py`` names the routes without
one), and a schema to :mod:`~kizuna.openapi.schemas` if its bodies have a shape of their own.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from kizuna import paths
from kizuna.dataspace.routes import TEMPORAL_PARAMS
from kizuna.ngsild import csource_routes, discovery, permission_routes, subscription_routes, temporal_routes
from kizuna.ngsild import routes as entity_routes
from kizuna.ngsiv2.reads import QUERY_PARAMS as V2_QUERY
from kizuna.ngsiv2.reads import RETRIEVE_PARAMS as V2_RETRIEVE
from kizuna.openapi.schemas import dsp

JSON = "application/json"
JSON_LD = "application/ld+json"
GEO_JSON = "application/geo+json"
MERGE_PATCH = "application/merge-patch+json"

Content = Mapping[str, str]  # media type -> component schema name


def json(schema: str) -> Content:
    return {JSON: schema}


def ld(schema: str) -> Content:
    """JSON or JSON-LD, as the request's Accept (or Content-Type) chooses."""
    return {JSON: schema, JSON_LD: schema}


def patch(schema: str) -> Content:
    return {**ld(schema), MERGE_PATCH: schema}


ENTITIES: Content = {**ld("EntityList"), GEO_JSON: "GeoJsonFeatureCollection"}
ENTITY: Content = {**ld("Entity"), GEO_JSON: "GeoJsonFeature"}


@dataclass(frozen=True, slots=True)
class Operation:
    """``answers``: each success status and its body (None: none); ``errors``: the error statuses
    beyond those of the API root; ``body``: the request body's media types and schema."""

    summary: str
    answers: Mapping[int, Content | None]
    errors: Collection[int] = ()
    query: Collection[str] = ()
    body: Content | None = None
    body_required: bool = True
    headers: tuple[str, ...] = ()  # header parameters beyond the API root's


@dataclass(frozen=True, slots=True)
class Api:
    """An API root: the operations under ``prefix`` share its tag, error body, error statuses,
    header parameters and security."""

    prefix: str
    tag: str
    error: Content
    errors: frozenset[int]
    body_errors: frozenset[int] = frozenset({413, 415})
    headers: tuple[str, ...] = ()
    secured: bool = True


def _read(summary: str, answers: Content, query: Collection[str], *errors: int) -> Operation:
    return Operation(summary, {200: answers}, errors, query)


def _write(summary: str, body: Content, query: Collection[str], *errors: int, status: int = 204) -> Operation:
    return Operation(summary, {status: None}, errors, query, body)


def _refused(what: str) -> Operation:
    """Routes that exist to answer 400 (not 404 or 405) for an empty path segment, as the ETSI
    suite expects. Those whose path has an empty segment stay out of the document: clients
    built from it would merge the two slashes into one, and reach another route."""
    return Operation(f"Refused: the {what} in the path is empty", {}, (400,), body_required=False)


NGSI_LD_FAILED_SOURCE = {207: json("BatchOperationResult")}  # a context source failed its share
E = entity_routes
T = temporal_routes
S = subscription_routes
C = csource_routes
P = permission_routes

NGSI_LD_OPERATIONS: dict[str, Operation] = {
    "GET /entities": _read("Query entities", ENTITIES, E.P_QUERY, 406),
    "POST /entities": Operation(
        "Create an entity", {201: None, **NGSI_LD_FAILED_SOURCE}, (409,), E.P_CREATE, ld("NewEntity")
    ),
    "DELETE /entities": Operation("Delete the entities a selection names", {204: None}, (), E.P_PURGE),
    "PUT /entities": _refused("entity id"),
    "PATCH /entities": _refused("entity id"),
    "GET /entities/{entity_id}": _read("Retrieve an entity", ENTITY, E.P_RETRIEVE, 406),
    "DELETE /entities/{entity_id}": Operation(
        "Delete an entity", {204: None, **NGSI_LD_FAILED_SOURCE}, (), E.P_NONE | {"type"}
    ),
    "PUT /entities/{entity_id}": Operation(
        "Replace an entity", {204: None, **NGSI_LD_FAILED_SOURCE}, (), E.P_WRITE, ld("NewEntity")
    ),
    "PATCH /entities/{entity_id}": Operation(
        "Merge into an entity", {204: None, **NGSI_LD_FAILED_SOURCE}, (), E.P_WRITE, patch("Entity")
    ),
    "POST /entities/{entity_id}/attrs": Operation(
        "Append attributes", {204: None, 207: json("UpdateResult")}, (), E.P_WRITE, ld("Attributes")
    ),
    "PATCH /entities/{entity_id}/attrs": Operation(
        "Update attributes", {204: None, 207: json("UpdateResult")}, (), E.P_WRITE, ld("Attributes")
    ),
    "POST /entities//attrs": _refused("entity id"),
    "PATCH /entities//attrs": _refused("entity id"),
    "PATCH /entities/{entity_id}/attrs/{attr}": Operation(
        "Update part of an attribute",
        {204: None, 207: json("UpdateResult")},
        (),
        E.P_WRITE,
        patch("Attribute"),
    ),
    "PUT /entities/{entity_id}/attrs/{attr}": Operation(
        "Replace an attribute", {204: None, 207: json("UpdateResult")}, (), E.P_WRITE, ld("Attribute")
    ),
    "DELETE /entities/{entity_id}/attrs/{attr}": Operation(
        "Delete an attribute", {204: None, 207: json("UpdateResult")}, (), E.P_DELETE_ATTR
    ),
    "PATCH /entities//attrs/{attr}": _refused("entity id"),
    "PUT /entities//attrs/{attr}": _refused("entity id"),
    "DELETE /entities//attrs/{attr}": _refused("entity id"),
    "POST /entityOperations/create": Operation(
        "Create entities",
        {201: json("EntityIds"), 207: json("BatchOperationResult")},
        (),
        E.P_WRITE,
        ld("NewEntityList"),
    ),
    "POST /entityOperations/upsert": Operation(
        "Create or update entities",
        {201: json("EntityIds"), 204: None, 207: json("BatchOperationResult")},
        (),
        E.P_WRITE,
        ld("NewEntityList"),
    ),
    "POST /entityOperations/update": Operation(
        "Update entities", {204: None, 207: json("BatchOperationResult")}, (), E.P_WRITE, ld("NewEntityList")
    ),
    "POST /entityOperations/merge": Operation(
        "Merge into entities",
        {204: None, 207: json("BatchOperationResult")},
        (),
        E.P_WRITE,
        ld("NewEntityList"),
    ),
    "POST /entityOperations/delete": Operation(
        "Delete entities", {204: None, 207: json("BatchOperationResult")}, (), E.P_NONE, ld("EntityIds")
    ),
    "POST /entityOperations/query": Operation(
        "Query entities by a Query", {200: ENTITIES}, (406,), E.P_QUERY, ld("Query")
    ),
    # -- temporal -----------------------------------------------------------------------------
    "GET /temporal/entities": Operation(
        "Query temporal entities",
        {200: ld("TemporalEntityList"), 206: ld("TemporalEntityList")},
        (406,),
        T.P_QUERY,
    ),
    "POST /temporal/entities": Operation(
        "Create or add to a temporal entity", {201: None, 204: None}, (), T.P_WRITE, ld("TemporalEntity")
    ),
    "POST /temporal/entityOperations/query": Operation(
        "Query temporal entities by a Query",
        {200: ld("TemporalEntityList"), 206: ld("TemporalEntityList")},
        (406,),
        T.P_QUERY,
        ld("Query"),
    ),
    "GET /temporal/entities/{entity_id}": Operation(
        "Retrieve a temporal entity",
        {200: ld("TemporalEntity"), 206: ld("TemporalEntity")},
        (406,),
        T.P_RETRIEVE,
    ),
    "DELETE /temporal/entities/{entity_id}": Operation(
        "Delete a temporal entity", {204: None}, (), T.P_NONE | {"type"}
    ),
    "POST /temporal/entities/{entity_id}/attrs": _write(
        "Add attribute instances", ld("TemporalEntity"), T.P_WRITE
    ),
    "DELETE /temporal/entities/{entity_id}/attrs/{attr}": Operation(
        "Delete an attribute's history", {204: None}, (), T.P_DELETE_ATTR
    ),
    "PATCH /temporal/entities/{entity_id}/attrs/{attr}/{instance_id}": _write(
        "Modify an attribute instance", ld("Attribute"), T.P_NONE
    ),
    "DELETE /temporal/entities/{entity_id}/attrs/{attr}/{instance_id}": Operation(
        "Delete an attribute instance", {204: None}, (), T.P_NONE
    ),
    "POST /temporal/entities//attrs": _refused("entity id"),
    "DELETE /temporal/entities//attrs/{attr}": _refused("entity id"),
    "PATCH /temporal/entities//attrs/{attr}/{instance_id}": _refused("entity id"),
    "DELETE /temporal/entities//attrs/{attr}/{instance_id}": _refused("entity id"),
    "DELETE /temporal/entities/{entity_id}/attrs//{instance_id}": _refused("attribute name"),
    # -- subscriptions, registrations, permissions ---------------------------------------------
    **{
        f"{verb} {path}{member}": operation
        for path, param, thing, schema, query, found in (
            (S.SUBSCRIPTIONS, S.ID, "subscriptions", "Subscription", S.P_QUERY, S.P_RETRIEVE),
            (
                S.CSOURCE_SUBSCRIPTIONS,
                S.ID,
                "context source subscriptions",
                "Subscription",
                S.P_QUERY,
                S.P_RETRIEVE,
            ),
            (
                C.REGISTRATIONS,
                C.ID,
                "context source registrations",
                "CsourceRegistration",
                C.P_DISCOVER,
                C.P_RETRIEVE,
            ),
            ("/auth/permissions", P.ID, "permissions", "Permission", P.P_QUERY, P.P_RETRIEVE),
        )
        for verb, member, operation in (
            ("GET", "", _read(f"Query {thing}", ld(schema + "List"), query, 406)),
            ("POST", "", _write(f"Create one of the {thing}", ld(schema), (), 409, status=201)),
            ("GET", f"/{{{param}}}", _read(f"Retrieve one of the {thing}", ld(schema), found, 406)),
            ("PATCH", f"/{{{param}}}", _write(f"Update one of the {thing}", patch(schema), ())),
            ("DELETE", f"/{{{param}}}", Operation(f"Delete one of the {thing}", {204: None})),
        )
    },
    "GET /auth/permissions/assigned": _read(
        "Query the permissions assigned to the subject who asks", ld("PermissionList"), P.P_QUERY, 406
    ),
    # -- discovery and hosted @contexts ---------------------------------------------------------
    "GET /types": _read("List entity types", ld("Discovery"), discovery.P_DISCOVERY, 406),
    "GET /types/{type}": _read("Describe an entity type", ld("Discovery"), discovery.P_DISCOVERY, 406),
    "GET /attributes": _read("List attributes", ld("Discovery"), discovery.P_DISCOVERY, 406),
    "GET /attributes/{attr}": _read("Describe an attribute", ld("Discovery"), discovery.P_DISCOVERY, 406),
    "GET /jsonldContexts": _read("List the hosted @contexts", json("HostedContexts"), {"details", "kind"}),
    "POST /jsonldContexts": _write("Host an @context", ld("Json"), (), 409, status=201),
    "GET /jsonldContexts/{context_id}": _read("Serve a hosted @context", json("Json"), {"details"}),
    "DELETE /jsonldContexts/{context_id}": Operation(
        "Delete a hosted @context", {204: None}, (409,), {"reload"}
    ),
}

DSP_OPERATIONS: dict[str, Operation] = {
    "POST /catalog/request": Operation(
        "The catalog (DSP)",
        {200: json(dsp("Catalog"))},
        (),
        {"offset", "limit"},
        json(dsp("CatalogRequestMessage")),
    ),
    "GET /catalog/datasets/{dataset_id}": _read(
        "A dataset of the catalog (DSP)", json(dsp("Dataset")), (), 404
    ),
    "GET /negotiations/{pid}": _read(
        "A contract negotiation (DSP)", json(dsp("ContractNegotiation")), (), 404
    ),
    "POST /negotiations/request": _write(
        "A consumer starts a negotiation", json(dsp("ContractRequestMessage")), (), status=201
    ),
    "POST /negotiations/offers": _write(
        "A provider starts a negotiation", json(dsp("ContractOfferMessage")), (), status=201
    ),
    **{
        f"POST /negotiations/{{pid}}/{tail}": Operation(
            summary, {200: json(dsp("ContractNegotiation"))}, (404,), (), json(dsp(message))
        )
        for tail, message, summary in (
            ("request", "ContractRequestMessage", "A consumer's counter-request"),
            ("offers", "ContractOfferMessage", "A provider's counter-offer"),
            ("events", "ContractNegotiationEventMessage", "A negotiation event (ACCEPTED, FINALIZED)"),
            ("agreement/verification", "ContractAgreementVerificationMessage", "A consumer verifies"),
            ("agreement", "ContractAgreementMessage", "A provider agrees"),
            ("termination", "ContractNegotiationTerminationMessage", "Either side terminates"),
        )
    },
    "POST /transfers/request": _write(
        "A consumer requests a transfer", json(dsp("TransferRequestMessage")), (), status=201
    ),
    "GET /transfers/{pid}": _read("A transfer process (DSP)", json(dsp("TransferProcess")), (), 404),
    **{
        f"POST /transfers/{{pid}}/{tail}": Operation(
            summary, {200: json(dsp("TransferProcess"))}, (404,), (), json(dsp(message))
        )
        for tail, message, summary in (
            ("start", "TransferStartMessage", "The transfer starts"),
            ("completion", "TransferCompletionMessage", "The transfer completes"),
            ("suspension", "TransferSuspensionMessage", "The transfer is suspended"),
            ("termination", "TransferTerminationMessage", "The transfer is terminated"),
        )
    },
}

DATA_PLANE = {"limit", "offset", "options", "q", "purpose"}
DATA_PLANE_OPERATIONS: dict[str, Operation] = {
    "GET /data/entities": _read("Pull the agreed entities (data plane)", json("EntityList"), DATA_PLANE),
    "GET /data/temporal/entities": _read(
        "Pull the agreed entities' history (data plane)",
        json("TemporalEntityList"),
        DATA_PLANE | TEMPORAL_PARAMS,
    ),
}

MANAGEMENT_OPERATIONS: dict[str, Operation] = {
    "POST /datasets": Operation(
        "Offer a dataset", {201: json("ManagedRecord")}, (409,), (), json("ManagedRecord")
    ),
    "GET /datasets": _read("The datasets offered", json("ManagedRecords"), ()),
    "GET /datasets/{dataset_id}": _read("A dataset offered", json("ManagedRecord"), (), 404),
    "DELETE /datasets/{dataset_id}": Operation("Withdraw a dataset", {204: None}, (404,)),
    "POST /catalog/request": Operation(
        "Fetch a counterparty's catalog", {200: json(dsp("Catalog"))}, (502,), (), json("ManagedRecord")
    ),
    "POST /negotiations": Operation(
        "Start a negotiation as consumer", {201: json("StartedProcess")}, (502,), (), json("ManagedRecord")
    ),
    "GET /negotiations": _read("The negotiations", json("ManagedRecords"), ()),
    "GET /negotiations/{pid}": _read("A negotiation", json("ManagedRecord"), (), 404),
    "POST /negotiations/{pid}/{action}": Operation(
        "Act on a negotiation (offer, agree, finalize, terminate, request, accept, verify)",
        {200: json("ManagedRecord")},
        (404, 502),
        (),
        json("ManagedRecord"),
        body_required=False,
    ),
    "GET /agreements": _read("The agreements", json("ManagedRecords"), ()),
    "GET /agreements/{agreement_id}": _read("An agreement", json("ManagedRecord"), (), 404),
    "POST /transfers": Operation(
        "Request a transfer as consumer", {201: json("StartedProcess")}, (404, 502), (), json("ManagedRecord")
    ),
    "GET /transfers": _read("The transfers", json("ManagedRecords"), ()),
    "GET /transfers/{pid}": _read("A transfer", json("ManagedRecord"), (), 404),
    "GET /transfers/{pid}/data/{rest}": Operation(
        "Pull through a transfer: the provider's answer, passed on", {200: json("Json")}, (404, 502)
    ),
    "POST /transfers/{pid}/{action}": Operation(
        "Act on a transfer (start, resume, suspend, complete, terminate)",
        {200: json("ManagedRecord")},
        (404, 502),
        (),
        json("ManagedRecord"),
        body_required=False,
    ),
    "POST /cadde/catalog": Operation(
        "Search a CADDE provider connector's catalog", {200: json("Json")}, (502,), (), json("ManagedRecord")
    ),
    "POST /cadde/fetch": Operation(
        "Fetch through a CADDE provider connector: its answer, passed on",
        {200: json("Json")},
        (404, 502),
        (),
        json("ManagedRecord"),
    ),
    "GET /audit": _read(
        "The audit trail, oldest event first",
        json("AuditEvents"),
        {"subject", "tenant", "since", "limit", "offset"},
    ),
}

CKAN_ACTION = Operation(
    "A CKAN action (package_list, package_show, package_search, ...)",
    {200: json("CkanResponse")},
    (404, 409),
    ("id", "q", "fq", "rows", "start", "sort", "limit", "offset"),
)
NODE_OPERATIONS: dict[str, Operation] = {
    "GET /health": _read("Liveness", json("Status"), ()),
    "GET /health/live": _read("Liveness", json("Status"), ()),
    "GET /health/ready": Operation("Readiness: the store answers", {200: json("Status")}, (503,)),
    "GET /openapi.json": _read("This document", json("OpenApi"), ()),
    "GET /.well-known/dspace-version": _read("The DSP versions served", json(dsp("VersionResponse")), ()),
    "GET /catalog": Operation(
        "The DCAT-AP 3.0 catalog",
        {200: {media: "RdfDocument" for media in ("text/turtle", JSON_LD, "application/rdf+xml")}},
        (406,),
    ),
}

CKAN_OPERATIONS: dict[str, Operation] = {
    f"{verb} {prefix}/{{action}}": CKAN_ACTION
    if verb == "GET"
    else Operation(CKAN_ACTION.summary, CKAN_ACTION.answers, CKAN_ACTION.errors, (), json("Json"), False)
    for prefix in (paths.CKAN_ACTIONS, "/api/action")
    for verb in ("GET", "POST")
}

CADDE_OPERATIONS: dict[str, Operation] = {
    "GET /catalog": _read(
        "CADDE's detail search (CKAN's package_search)", json("CkanResponse"), CKAN_ACTION.query, 404, 409
    ),
    "GET /file": Operation(
        "CADDE's data exchange: a dataset's NGSI-LD data",
        {200: json("EntityList")},
        (404,),
        headers=("x-cadde-resource-url", "x-cadde-resource-api-type", "x-cadde-options"),
    ),
}

METRICS_OPERATIONS: dict[str, Operation] = {
    "GET /metrics": Operation(
        "Prometheus metrics (admins only)", {200: {"text/plain": "MetricsText"}}, (401, 403)
    ),
}

CONSOLE_OPERATIONS: dict[str, Operation] = {
    "GET ": _read("The console's page (docs/console.md)", {"text/html": "Page"}, ()),
    "GET /districts.json": _read(
        "Duisburg's district outlines, the map's offline background", {"application/geo+json": "GeoJson"}, ()
    ),
    "GET /map": _read(
        "The map's rows: every located entity the caller may read, compactly",
        json("MapPoints"),
        ("tenant",),
        404,
    ),
    "GET /events": Operation(
        "The live stream of entity changes (Server-Sent Events; docs/console.md)",
        {200: {"text/event-stream": "EventStream"}},
        (404, 503),
        ("type", "tenant", "context"),
        headers=("Last-Event-ID",),
    ),
}

V2_OPERATIONS: dict[str, Operation] = {
    "GET /entities": _read("Query entities (NGSI v2)", json("V2EntityList"), V2_QUERY),
    "GET /entities/{entity_id}": _read("Retrieve an entity (NGSI v2)", json("V2Entity"), V2_RETRIEVE),
}

PROBLEM = json("ProblemDetails")
NGSI_LD = Api(
    paths.NGSI_LD, "NGSI-LD", PROBLEM, frozenset({400, 401, 403, 404, 503}), headers=("NGSILD-Tenant", "Link")
)
DSP = Api(paths.DSP, "Dataspace Protocol", json("DspError"), frozenset({400, 401}), frozenset({413}))
DATA = Api(paths.DSP, "Data plane", PROBLEM, frozenset({400, 401, 403}), frozenset(), ("Kizuna-Purpose",))
MANAGEMENT = Api(paths.MANAGEMENT, "Management", PROBLEM, frozenset({400, 401, 403}))
V2 = Api(
    paths.NGSI_V2,
    "NGSI v2",
    json("V2Error"),
    frozenset({400, 401, 404, 406}),
    frozenset(),
    ("Fiware-Service", "Fiware-ServicePath"),
)
CADDE = Api(paths.CADDE, "CADDE", PROBLEM, frozenset({400, 401, 403}), frozenset())
CONSOLE = Api(paths.CONSOLE, "Console", PROBLEM, frozenset({400, 401, 403}), frozenset())
METRICS = Api("", "Metrics", PROBLEM, frozenset(), frozenset())
CKAN = Api("", "CKAN", json("CkanError"), frozenset({400}), frozenset({413}), secured=False)
NODE = Api("", "Node", PROBLEM, frozenset(), frozenset(), secured=False)

# Each API root with its operations, keyed by method and path relative to the root.
APIS: list[tuple[Api, dict[str, Operation]]] = [
    (NGSI_LD, NGSI_LD_OPERATIONS),
    (DSP, DSP_OPERATIONS),
    (DATA, DATA_PLANE_OPERATIONS),
    (MANAGEMENT, MANAGEMENT_OPERATIONS),
    (V2, V2_OPERATIONS),
    (CADDE, CADDE_OPERATIONS),
    (CONSOLE, CONSOLE_OPERATIONS),
    (METRICS, METRICS_OPERATIONS),
    (CKAN, CKAN_OPERATIONS),
    (NODE, NODE_OPERATIONS),
]
