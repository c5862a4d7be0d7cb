"""Whatever reaches any route, the node answers, answers in time, and stays up.

Hypothesis throws random JSON (and not-JSON) bodies, random query strings and random headers
(Content-Type, Accept, Link, NGSILD-Tenant, Authorization, X-Api-Key, Origin, Via, ...) at every
route of every API root, with every method the route allows and now and then one it does not.
The routes are read from the app itself (``app.routes``, through every Mount), so a new route is
fuzzed without anyone adding it here. Path parameters get the ids of resources the node holds
(seeded once per module), plausible ids, and random text. What a user can rely on, per request:

* no 500, ever; no other 5xx but those the errors define for an outside party failing: 502
  CounterpartyFailed, 503 LdContextNotAvailable/ServiceUnavailable, 508 LoopDetected;
* no answer takes 2 s or more, even when a Link header or a body names an address that refuses
  connections (127.0.0.1:9) or one that accepts and never answers (a local black hole);
* GET /health answers 200 after every request.

The app raises server exceptions into the test (``raise_server_exceptions=True``), so a failure
shows the server's traceback as its cause and the request (method, URL with query, headers,
body) in its message. Set KIZUNA_FUZZ_EXAMPLES to run more than the default examples per route.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.openapi.document import walk

FUZZ = settings(
    max_examples=int(os.environ.get("KIZUNA_FUZZ_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
SLOW = 2.0  # seconds; any answer slower than this is a failure
HUNG = 15.0  # seconds after which the test stops waiting for an answer (and fails)
# The 5xx an outside party's failure may cause, by the error type its ProblemDetails names.
ALLOWED_5XX = {
    502: {"CounterpartyFailed"},
    503: {"LdContextNotAvailable", "ServiceUnavailable"},
    508: {"LoopDetected"},
}
DSPACE = ["https://w3id.org/dspace/2025/1/context.jsonld"]
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
PEER = "http://peer.test/dsp"  # the scripted counterparty, answered in-process
REFUSED = "http://127.0.0.1:9"  # nothing listens there: connections are refused at once
ENTITY_ID = "urn:ngsi-ld:X:1"

# -- the routes, as the app has them ----------------------------------------------------------------


def app_routes() -> list[tuple[str, frozenset[str]]]:
    """Read at collection time from an app that is never started (its store is never opened)."""
    app = create_app(Settings(store=f"sqlite:///{tempfile.gettempdir()}/kizuna-fuzz-routes-unused.db"))
    found = {(path, frozenset(route.methods or {"GET"})) for path, route in walk(app.routes)}
    return sorted(found, key=lambda r: (r[0], sorted(r[1])))


ROUTES = app_routes()
CASES = [
    pytest.param(path, methods, dsp, id=f"{dsp}:{'|'.join(sorted(methods))}:{path}")
    for path, methods in ROUTES
    for dsp in (("signed", "none") if path.startswith("/dsp") else ("signed",))
]
PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")
OTHER_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW"]

# -- values -----------------------------------------------------------------------------------------

junk_text = st.text(max_size=30)
latin1_junk = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits now and then
    | st.floats(allow_nan=False, allow_infinity=False)
    | junk_text
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(junk_text, children, max_size=4),
    max_leaves=12,
)
# Addresses that are almost addresses (URL parsers disagree on them), and dates that are almost dates.
BAD_URLS = [
    "http://[::1",
    "http://a b/",
    "\x16",
    "http://127.0.0.1:99999/",
    "//x",
    "http:",
    "http://",
    "mailto:x@y",
    "file:///etc/passwd",
    "http://127.0.0.1:9/x",
    "https://example.invalid/",
    "ftp://x/",
    "",
]
BAD_TIMES = [
    "2026-13-45T99:00:00Z",
    "2026-01-01",
    "2026-01-01T00:00:00",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "2026-01-01T00:00:00+25:00",
    "-1",
    "now",
]

tricky = st.sampled_from(
    [
        "",
        "urn:ngsi-ld:X:1",
        "urn:ngsi-ld:X:2",
        "not a uri",
        "Property",
        "Relationship",
        "GeoProperty",
        "2026-13-45T99:00:00Z",
        "2026-01-01T00:00:00Z",
        "P1D",
        "PT0S",
        f"{REFUSED}/x",
        PEER,
        "ftp://x/",
        0,
        -1,
        2**63,
        1e308,
        True,
        [],
        {},
        [1],
        [[]],
        {"type": "Point", "coordinates": [181, 91]},
        {"@id": 5},
        {"type": "Property"},
        {"@value": None},
        {"and": []},
        ["a", 1, None],
    ]
)


def templates(blackhole: str) -> dict[str, list[Any]]:
    """Valid-looking bodies per kind of route (keyed by a fragment of the path), to be mutated."""
    entity = {
        "id": ENTITY_ID,
        "type": "X",
        "p": {"type": "Property", "value": 1, "observedAt": "2026-01-01T00:00:00Z", "unitCode": "C62"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [6.76, 51.43]}},
        "r": {"type": "Relationship", "object": "urn:ngsi-ld:X:2"},
        "name": {"type": "LanguageProperty", "languageMap": {"en": "one"}},
    }
    temporal = {
        **entity,
        "p": [{"type": "Property", "value": v, "observedAt": f"2026-01-0{v}T00:00:00Z"} for v in (1, 2)],
    }
    endpoint = {"uri": f"{REFUSED}/notify", "accept": "application/json"}
    subscription = {
        "id": "urn:ngsi-ld:Subscription:1",
        "type": "Subscription",
        "entities": [{"type": "X"}],
        "watchedAttributes": ["p"],
        "q": "p>0",
        "geoQ": {"geometry": "Point", "coordinates": [6.76, 51.43], "georel": "near;maxDistance==100"},
        "notification": {"attributes": ["p"], "format": "normalized", "endpoint": endpoint},
    }
    registration = {
        "id": "urn:ngsi-ld:ContextSourceRegistration:1",
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Remote"}], "propertyNames": ["p"]}],
        "endpoint": blackhole,
        "mode": "inclusive",
        "operations": ["retrieveOps"],
    }
    csub = {"type": "Subscription", "entities": [{"type": "X"}], "notification": {"endpoint": endpoint}}
    permission = {
        "id": "urn:ngsi-ld:Permission:1",
        "type": "Permission",
        "action": "read",
        "assignee": "bob",
        "target": {"types": "X"},
    }
    policy = {
        "permission": [
            {
                "action": "use",
                "constraint": [{"leftOperand": "count", "operator": "lteq", "rightOperand": "3"}],
            }
        ]
    }
    dataset = {"id": "urn:ds:1", "entityTypes": ["X"], "policy": policy, "approval": "manual"}
    offer = {"@id": "urn:offer:1", "@type": "Offer", "target": "urn:ds:1", "permission": [{"action": "use"}]}
    query = {
        "type": "Query",
        "entities": [{"type": "X", "idPattern": ".*"}],
        "attrs": ["p"],
        "q": "p==1",
        "geoQ": subscription["geoQ"],
        "temporalQ": {"timerel": "after", "timeAt": "2026-01-01T00:00:00Z"},
    }
    base = {"@context": DSPACE, "providerPid": "urn:uuid:p", "consumerPid": "urn:uuid:c"}
    return {
        "/temporal/entityOperations/query": [query],
        "/temporal/entities": [temporal, temporal["p"], {"p": temporal["p"]}],
        "/entityOperations/query": [query],
        "/entityOperations/delete": [[ENTITY_ID, "urn:ngsi-ld:X:2"]],
        "/entityOperations": [[entity, {**entity, "id": "urn:ngsi-ld:X:2"}]],
        "/entities": [entity, {"p": entity["p"], "r": entity["r"]}, entity["p"], entity["location"]],
        "/csourceRegistrations": [registration],
        "/csourceSubscriptions": [csub],
        "/subscriptions": [subscription],
        "/auth/permissions": [permission],
        "/jsonldContexts": [{"@context": {"lux": "https://example.org/lux"}}],
        "/management/v1/datasets": [dataset],
        "/management/v1/catalog": [{"counterPartyAddress": PEER}],
        "/management/v1/negotiations": [
            {"counterPartyAddress": PEER, "counterPartyId": "urn:peer", "offer": offer, "approval": "manual"},
            {"offer": offer, "reason": "because"},
        ],
        "/management/v1/transfers": [
            {"counterPartyAddress": PEER, "agreementId": "urn:agreement:1", "format": "HttpData-PULL"},
            {
                "counterPartyAddress": PEER,
                "agreementId": "urn:agreement:1",
                "format": "HttpData-PUSH",
                "endpoint": f"{REFUSED}/inbox",
                "purpose": "research",
            },
            {"reason": "because"},
        ],
        "/dsp/catalog": [{"@context": DSPACE, "@type": "CatalogRequestMessage", "filter": []}],
        "/dsp/negotiations": [
            {**base, "@type": "ContractRequestMessage", "offer": offer, "callbackAddress": PEER},
            {**base, "@type": "ContractNegotiationEventMessage", "eventType": "ACCEPTED"},
            {**base, "@type": "ContractAgreementVerificationMessage"},
            {**base, "@type": "ContractNegotiationTerminationMessage", "code": "1", "reason": ["x"]},
            {**base, "@type": "ContractOfferMessage", "offer": offer, "callbackAddress": PEER},
            {
                **base,
                "@type": "ContractAgreementMessage",
                "callbackAddress": PEER,
                "agreement": {
                    "@id": "urn:agreement:1",
                    "@type": "Agreement",
                    "target": "urn:ds:1",
                    "assigner": "urn:node",
                    "assignee": "urn:peer",
                    "timestamp": "2026-01-01T00:00:00Z",
                    "permission": [{"action": "use"}],
                },
            },
        ],
        "/dsp/transfers": [
            {
                **base,
                "@type": "TransferRequestMessage",
                "agreementId": "urn:agreement:1",
                "format": "HttpData-PULL",
                "callbackAddress": PEER,
            },
            {**base, "@type": "TransferStartMessage"},
            {**base, "@type": "TransferCompletionMessage"},
            {**base, "@type": "TransferSuspensionMessage", "code": "1", "reason": ["x"]},
            {**base, "@type": "TransferTerminationMessage", "code": "1", "reason": ["x"]},
        ],
    }


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


SPECIAL_BODIES = [
    b"",
    b"null",
    b"{}",
    b"[]",
    b'"text"',
    b"1e400",
    b"\xff\xfe\x00",
    b'{"a": NaN}',
    b'"\\ud800"',
    b'{"id": "urn:ngsi-ld:X:1", "id": 5}',
    b"[" * 100_000,
    b'{"a":' * 5_000,
    nested(200),
    nested(900),
    b" " * 300_000,
    json.dumps({"id": ENTITY_ID, "type": "X", "p": {"type": "Property", "value": "x" * 300_000}}).encode(),
]

QUERY_VALUES: dict[str, list[str]] = {
    "type": ["X", "X,Y", "X|Y", "(X;Y)", "https://example.org/X", "ngsi-ld:X", "Remote", "", ","],
    "q": [
        "p==1",
        "p>0;p<5",
        "p.q==1",
        "p[a.b]==1",
        "r==urn:ngsi-ld:X:1",
        "p~=a.*",
        "p=='x'",
        "(p==1|p==2)",
        "p==1..5",
        "p!=",
        "((((",
        "p==2026-01-01T00:00:00Z",
        "p~=(a+)+$",
        "name[en]==one",
        'p=="x',
    ],
    "attrs": ["p", "p,r", "location", "", ",,", "@id"],
    "pick": ["id", "p,type", ""],
    "omit": ["p", "id"],
    "options": [
        "keyValues",
        "sysAttrs",
        "concise",
        "count",
        "noOverwrite",
        "replace",
        "update",
        "keyValues,sysAttrs",
        "bogus",
        "",
    ],
    "limit": ["0", "1", "-1", "1000", "1001", "99999999999999999999", "abc", "1.5"],
    "georel": [
        "near;maxDistance==10",
        "near;minDistance==1",
        "within",
        "intersects",
        "equals",
        "disjoint",
        "overlaps",
        "contains",
        "near;maxDistance==abc",
        "near",
        "near;maxDistance==1e400",
    ],
    "geometry": ["Point", "Polygon", "LineString", "MultiPolygon", "Junk", ""],
    "coordinates": [
        "[6.7,51.4]",
        "[[[0,0],[1,0],[1,1],[0,0]]]",
        "[[0,0],[1,1]]",
        "[1]",
        "abc",
        "[[1,2],[3]]",
        "[1e400,0]",
        "[]",
        "[[[0,0]]]",
    ],
    "geoproperty": ["location", "p", "observedAt", ""],
    "timeproperty": ["observedAt", "createdAt", "p", ""],
    "timerel": ["before", "after", "between", "junk"],
    "timeAt": ["2026-01-01T00:00:00Z", "2026-13-45T99:00:00Z", "0", "now", ""],
    "format": ["keyValues", "simplified", "normalized", "concise", "temporalValues", "aggregatedValues", "x"],
    "aggrMethods": ["totalCount", "sum,avg", "min,max", "distinctCount", "stddev", "sumsq", "x", ""],
    "aggrPeriodDuration": ["PT1H", "P1D", "P0D", "PT0S", "junk", "P99999999Y"],
    "lang": ["en", "de", "*", "en,de;q=0.5", "@none", ""],
    "idPattern": [".*", "urn:ngsi-ld:X:.*", "(", "[", "a{99999}", "(a+)+b", "(?P<x>", "\\"],
    "id": [ENTITY_ID, f"{ENTITY_ID},urn:ngsi-ld:X:2", "not a uri", ""],
    "join": ["inline", "flat", "@none", "x"],
    "joinLevel": ["0", "1", "9", "-1", "x"],
    "scopeQ": ["/a", "/a/#", "/a/+", "a", "//", ""],
    "csf": ["p==1", "(", ""],
    "datasetId": ["urn:ngsi-ld:Dataset:a", "@none", "x", ""],
    "deleteAll": ["true", "false", "x"],
    "count": ["true", "false", "x"],
    "local": ["true", "false", "x"],
    "details": ["true", "x"],
    "action": ["read", "write", "admin", "own", "x"],
    "kind": ["entity", "x"],
    "since": ["2026-01-01T00:00:00Z", "x"],
    "observedAt": ["2026-01-01T00:00:00Z", "x"],
    "geometryProperty": ["location", "x"],
}
QUERY_VALUES.update(
    {name: QUERY_VALUES["limit"] for name in ("offset", "lastN")}
    | {name: QUERY_VALUES["timeAt"] for name in ("endTimeAt",)}
    | {
        name: ["bob", "urn:x", "", "x" * 300]
        for name in ("assignee", "assigner", "subject", "tenant", "purpose")
    }
    | {name: ["p", "", "true"] for name in ("attributes", "sysAttrs", "orderBy", "expandValues")}
)
plausible_pairs = st.lists(
    st.sampled_from(sorted(QUERY_VALUES)).flatmap(
        lambda name: st.tuples(st.just(name), st.sampled_from(QUERY_VALUES[name]))
    ),
    max_size=3,
)
query_pairs = st.lists(
    st.sampled_from(sorted(QUERY_VALUES)).flatmap(
        lambda name: st.tuples(st.just(name), st.sampled_from(QUERY_VALUES[name]) | junk_text)
    )
    | st.tuples(junk_text, junk_text),
    max_size=5,
)


def sane_headers(hosted: str) -> st.SearchStrategy[dict[str, str]]:
    """What a well-behaved client sends: a JSON media type, maybe the core or a hosted @context."""
    link = '<{}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    return st.fixed_dictionaries(
        {"Content-Type": st.just("application/json")},
        optional={
            "Link": st.sampled_from([link.format(CORE), link.format(hosted)]),
            "Accept": st.sampled_from(["application/json", "application/ld+json", "application/geo+json"]),
            "NGSILD-Tenant": st.just("t1"),
        },
    )


def header_pools(blackhole: str, hosted: str) -> dict[str, st.SearchStrategy[str]]:
    def link(url: str) -> str:
        return f'<{url}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'

    links = [
        link(u)
        for u in (
            f"{REFUSED}/x",
            f"{blackhole}/ctx.jsonld",
            CORE,
            hosted,
            "not a url",
            "",
            "http://[::1]:9/x",
            *BAD_URLS,
        )
    ]
    tokens = [
        "W10.e30.AA",
        "MQ.e30.AA",
        "eyJhbGciOiJFZERTQSJ9.eyJpc3MiOltdfQ.AA",
        "eyJhbGciOiJFZERTQSJ9.WzFd.AA",
        "!!.e30.AA",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        "a.b",
        "",
        "a.b.c.d",
    ]
    return {
        "Content-Type": st.sampled_from(
            [
                "application/json",
                "application/json",
                "application/ld+json",
                "application/merge-patch+json",
                "application/json; charset=utf-8",
                "application/ld+json; charset=latin1",
                "text/plain",
                "",
                "junk",
                "multipart/form-data; boundary=x",
                "application/geo+json",
                ";;",
            ]
        )
        | latin1_junk,
        "Accept": st.sampled_from(
            [
                "application/json",
                "application/ld+json",
                "application/geo+json",
                "*/*",
                "text/html",
                "application/json;q=0",
                "application/*",
                "application/ld+json;q=0.1, application/json;q=0.9",
                "junk",
                "",
                "application/json;q=abc",
            ]
        )
        | latin1_junk,
        "Link": st.sampled_from([*links, ", ".join(links[:2]), links[0] + ", " + link(CORE), "junk", "<>"])
        | latin1_junk,
        "NGSILD-Tenant": st.sampled_from(["t1", "urn:ngsi-ld:tenant:x", "../../etc", "a" * 300, "Ä", ""])
        | latin1_junk,
        "Authorization": st.sampled_from(
            [f"Bearer {t}" for t in tokens] + ["Basic Zm9vOmJhcg==", "Bearer", "junk"]
        )
        | latin1_junk.map(lambda s: "Bearer " + s),
        "X-Api-Key": st.sampled_from(["kz_x", "", "x" * 300]) | latin1_junk,
        "Origin": st.sampled_from(["http://evil.example", "null", "http://testserver", ""]),
        "Sec-Fetch-Site": st.sampled_from(["cross-site", "same-origin", "none", "x"]),
        "Via": st.sampled_from(["1.1 urn:kizuna:node", "1.1 http://127.0.0.1:1026", "junk", "1.1 a, 1.1 b"])
        | latin1_junk,
        "Kizuna-Purpose": st.sampled_from(["research", ""]) | latin1_junk,
    }


# -- the nodes --------------------------------------------------------------------------------------


async def peer(request: Request) -> JSONResponse:
    """The counterparty at peer.test: acknowledges whatever the node sends it."""
    body = await request.json() if await request.body() else {}
    kind = {"negotiations": "ContractNegotiation", "transfers": "TransferProcess"}
    for part, type_ in kind.items():
        if request.url.path.endswith(f"/{part}/request"):
            ack = {
                "@context": DSPACE,
                "@type": type_,
                "providerPid": f"urn:uuid:{uuid.uuid4()}",
                "consumerPid": body.get("consumerPid", "urn:uuid:c"),
                "state": "REQUESTED",
            }
            return JSONResponse(ack, status_code=201)
    if request.url.path.endswith("/catalog/request"):
        return JSONResponse({"@context": DSPACE, "@type": "Catalog", "@id": "urn:catalog", "dataset": []})
    return JSONResponse({}, status_code=200)


PEER_APP = Starlette(routes=[Route("/{path:path}", peer, methods=["GET", "POST"])])


class Node:
    """A started app, the ids it holds, and the header and body pools that name its resources.

    A plain class, not a dataclass: hypothesis prints a failing example's arguments, and would
    print every pool of a dataclass in full."""

    def __init__(
        self,
        client: TestClient,
        ids: dict[str, list[str]],
        headers: dict[str, st.SearchStrategy[str]],
        sane_headers: st.SearchStrategy[dict[str, str]],
        bodies: dict[str, list[Any]],
    ) -> None:
        self.client, self.ids, self.bodies = client, ids, bodies
        self.headers, self.sane_headers = headers, sane_headers

    def __repr__(self) -> str:
        return "Node(...)"


@pytest.fixture(scope="module")
def blackhole() -> Iterator[str]:
    """An address that accepts connections (into the kernel's backlog) and never answers."""
    with socket.socket() as sink:
        sink.bind(("127.0.0.1", 0))
        sink.listen(128)
        yield f"http://127.0.0.1:{sink.getsockname()[1]}"


def ok(response: httpx.Response, *statuses: int) -> httpx.Response:
    assert response.status_code in (statuses or (200, 201, 204)), (response.request.url, response.text)
    return response


def seed(client: TestClient, blackhole: str, dsp_open: bool) -> dict[str, list[str]]:
    """One of each resource, so path parameters can name things that exist."""
    bodies = templates(blackhole)
    ngsi = "/ngsi-ld/v1"
    ok(client.post(f"{ngsi}/entities", json=bodies["/entities"][0]))
    ok(
        client.post(
            f"{ngsi}/temporal/entities", json={**bodies["/temporal/entities"][0], "id": "urn:ngsi-ld:X:t"}
        )
    )
    history = ok(client.get(f"{ngsi}/temporal/entities/urn:ngsi-ld:X:t")).json()
    instances = [i["instanceId"] for i in history["p"] if "instanceId" in i]
    ok(client.post(f"{ngsi}/subscriptions", json=bodies["/subscriptions"][0]))
    ok(client.post(f"{ngsi}/csourceRegistrations", json=bodies["/csourceRegistrations"][0]))
    csub = ok(client.post(f"{ngsi}/csourceSubscriptions", json=bodies["/csourceSubscriptions"][0]))
    ok(client.post(f"{ngsi}/auth/permissions", json=bodies["/auth/permissions"][0]))
    context = ok(client.post(f"{ngsi}/jsonldContexts", json=bodies["/jsonldContexts"][0]))
    dataset = ok(client.post("/management/v1/datasets", json=bodies["/management/v1/datasets"][0])).json()
    negotiation = ok(
        client.post("/management/v1/negotiations", json=bodies["/management/v1/negotiations"][0])
    )
    transfer = ok(client.post("/management/v1/transfers", json=bodies["/management/v1/transfers"][0]))
    pids = [negotiation.json()["id"], transfer.json()["id"]]
    agreements = ["urn:agreement:1"]
    if dsp_open:  # a provider-side negotiation through to its agreement, and a transfer under it
        offer = {**dataset["offers"][0], "target": dataset["id"]}
        request = {
            "@context": DSPACE,
            "@type": "ContractRequestMessage",
            "consumerPid": "urn:uuid:c1",
            "offer": offer,
            "callbackAddress": PEER,
        }
        ppid = ok(client.post("/dsp/negotiations/request", json=request)).json()["providerPid"]
        ok(client.post(f"/management/v1/negotiations/{ppid}/agree"))
        verification = {
            "@context": DSPACE,
            "@type": "ContractAgreementVerificationMessage",
            "providerPid": ppid,
            "consumerPid": "urn:uuid:c1",
        }
        ok(client.post(f"/dsp/negotiations/{ppid}/agreement/verification", json=verification))
        ok(client.post(f"/management/v1/negotiations/{ppid}/finalize"))
        agreements = [a["id"] for a in ok(client.get("/management/v1/agreements")).json()] + agreements
        start = {
            "@context": DSPACE,
            "@type": "TransferRequestMessage",
            "consumerPid": "urn:uuid:c2",
            "agreementId": agreements[0],
            "format": "HttpData-PULL",
            "callbackAddress": PEER,
        }
        tpid = ok(client.post("/dsp/transfers/request", json=start)).json()["providerPid"]
        ok(client.post(f"/management/v1/transfers/{tpid}/start"))
        pids += [ppid, tpid, "urn:uuid:c1", "urn:uuid:c2"]
    return {
        "entity_id": [ENTITY_ID, "urn:ngsi-ld:X:t", "urn:ngsi-ld:X:2"],
        "attr": ["p", "location", "r", "name", "https://uri.etsi.org/ngsi-ld/default-context/p"],
        "instance_id": [*instances, "urn:ngsi-ld:instance:1"],
        "subscription_id": ["urn:ngsi-ld:Subscription:1", csub.headers["location"].rsplit("/", 1)[-1]],
        "registration_id": ["urn:ngsi-ld:ContextSourceRegistration:1"],
        "pid": [*pids, "urn:ngsi-ld:Permission:1"],
        "action": [
            "offer",
            "agree",
            "finalize",
            "terminate",
            "request",
            "accept",
            "verify",
            "start",
            "resume",
            "suspend",
            "complete",
        ],
        "agreement_id": agreements,
        "dataset_id": [dataset["id"]],
        "context_id": [context.headers["location"].rsplit("/", 1)[-1]],
        "type": ["X", "Remote"],
        "rest": ["entities", "temporal/entities", "entities/urn:ngsi-ld:X:1"],
        "hosted": ["http://127.0.0.1:1026" + context.headers["location"]],  # the default public URL
    }


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, blackhole: str) -> Iterator[dict[str, Node]]:
    """A node with signed DSP and one with ``--dsp-auth none`` (so DSP messages get past the
    signature check); both ``--auth none`` on SQLite, with short outbound timeouts."""
    out: dict[str, Node] = {}
    clients = []
    for dsp in ("signed", "none"):
        path: Path = tmp_path_factory.mktemp(f"fuzz-routes-{dsp}")
        app = create_app(
            Settings(
                store=f"sqlite:///{path}/kizuna.db",
                auth="none",
                dsp_auth=dsp,
                participant_id="urn:node",
                context_fetch_timeout=0.5,
                forward_timeout=0.5,
                notify_timeout=0.5,
                max_body_bytes=256 * 1024,
                console_stream_lifetime=0.5,  # an event stream is an answer that ends late
            )
        )
        # peer.test is answered in-process; any other counterparty address goes to the network.
        messenger = app.state.dataspace.node.messenger
        messenger.client_factory = lambda m=messenger: m.gate.client(
            mounts={"all://peer.test": httpx.ASGITransport(app=PEER_APP)}, timeout=0.5
        )
        client = TestClient(app, raise_server_exceptions=True)
        client.__enter__()
        clients.append(client)
        ids = seed(client, blackhole, dsp_open=dsp == "none")
        hosted = ids.pop("hosted")[0]
        out[dsp] = Node(
            client, ids, header_pools(blackhole, hosted), sane_headers(hosted), templates(blackhole)
        )
    yield out
    for client in clients:
        client.__exit__(None, None, None)


# -- strategies that need the node ------------------------------------------------------------------


def path_value(node: Node, name: str, convertor: str | None, sane: bool) -> st.SearchStrategy[str]:
    """An id the node holds; when not ``sane`` also unknown, odd and random ones (URL-encoded)."""
    safe = ":/" if convertor == "path" else ":"
    held = [quote(v, safe=safe) for v in node.ids.get(name, [ENTITY_ID])]
    if sane:
        return st.sampled_from(held)
    odd = [quote(ENTITY_ID), "urn:ngsi-ld:X:nope", "x", "..", "%2E%2E", "%2F", "%00", "a" * 300]
    text = junk_text.filter(bool).map(lambda s: quote(s, safe="/" if convertor == "path" else ""))
    return st.sampled_from(held + odd) | text


def all_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    children = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, child in children:
        yield from all_paths(child, (*prefix, key))


def like(old: Any) -> st.SearchStrategy[Any]:
    """A replacement for ``old`` that is wrong the way values like it tend to be wrong."""
    if isinstance(old, str) and re.match(r"^[a-z]+:", old):
        return st.sampled_from([*BAD_URLS, old + "\x00", old * 50])
    if isinstance(old, str) and re.match(r"^\d{4}-\d\d-\d\d", old):
        return st.sampled_from(BAD_TIMES)
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        return st.sampled_from([0, -1, 2**63, -(2**63) - 1, 1e308, -1e308, 0.5, "1"])
    return tricky | json_values


@st.composite
def mutated(draw: st.DrawFn, template: Any, counts: tuple[int, ...] = (0, 1, 1, 2, 3)) -> Any:
    """``template`` with zero to three members replaced, removed or added."""
    doc = copy.deepcopy(template)
    for _ in range(draw(st.sampled_from(counts))):
        where = draw(st.sampled_from(list(all_paths(doc))))
        old: Any = doc
        for step in where:
            old = old[step]
        value = copy.deepcopy(draw(like(old) | tricky | json_values))
        if not where:
            doc = value
            continue
        parent = doc
        for step in where[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["set", "set", "delete", "add"]))
        if action == "delete":
            del parent[where[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(junk_text | st.sampled_from(["@context", "@type", "id", "type", "@id"]))] = value
        else:
            parent[where[-1]] = value
    return doc


@st.composite
def bodies(draw: st.DrawFn, node: Node, path: str, sane: bool) -> bytes | None:
    """No body, a mutated template for this route or another, random JSON, or not JSON at all;
    a ``sane`` body is this route's template with at most one thing wrong."""
    own = next((b for key, b in node.bodies.items() if key in path), None) or [{}]
    if sane:
        return json.dumps(draw(mutated(draw(st.sampled_from(own)), (0, 1, 1)))).encode()
    kind = draw(st.sampled_from(["none", "own", "own", "own", "any", "json", "special", "bytes"]))
    if kind == "none":
        return None
    if kind == "special":
        return draw(st.sampled_from(SPECIAL_BODIES))
    if kind == "bytes":
        return draw(st.binary(max_size=60))
    if kind == "json":
        doc = draw(json_values)
    else:
        pool = own if kind == "own" else [b for group in node.bodies.values() for b in group]
        doc = draw(mutated(draw(st.sampled_from(pool))))
    if isinstance(doc, dict) and draw(st.booleans()):
        doc = {
            **doc,
            "@context": draw(
                st.sampled_from([CORE, [CORE], f"{REFUSED}/ctx", {}, node.ids["type"]]) | scalars
            ),
        }
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()


# -- the check --------------------------------------------------------------------------------------


def describe(method: str, url: str, headers: dict[str, str], body: bytes | None) -> str:
    shown = body if body is None or len(body) <= 1500 else body[:1500] + b"...(%d bytes)" % len(body)
    return f"\n  {method} {url}\n  headers={headers!r}\n  body={shown!r}"


_WAITER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fuzz-request")


def timed(client: TestClient, method: str, url: str, **kwargs: Any) -> tuple[httpx.Response, float]:
    """The answer and how long it took; a request that hangs fails after HUNG s, not never."""
    started = time.monotonic()
    answer = _WAITER.submit(client.request, method, url, follow_redirects=False, **kwargs)
    return answer.result(timeout=HUNG), time.monotonic() - started


def call(client: TestClient, method: str, url: str, headers: dict[str, str], body: bytes | None) -> None:
    """One request, with every promise of this module checked on its answer."""
    request = describe(method, url, headers, body)
    # latin-1 bytes: httpx would refuse non-ASCII str values before the node saw them
    raw = {name: value.encode("latin-1") for name, value in headers.items()}
    try:
        response, elapsed = timed(client, method, url, content=body, headers=raw)
    except TimeoutError:
        raise AssertionError(f"no answer within {HUNG} s{request}") from None
    except Exception as error:  # the server raised: its traceback is this failure's cause
        raise AssertionError(f"server raised {type(error).__name__}: {error}{request}") from error
    sent = response.request.url.raw_path.decode("ascii")
    if sent != url:  # httpx normalised the path (``..``): say what the node really received
        request += f"\n  (sent as {sent})"
    event(f"HTTP {response.status_code}")
    assert elapsed < SLOW, f"answered {response.status_code} after {elapsed:.2f} s{request}"
    # The node serves with and without a trailing slash and never redirects (middleware/trailing_slash.py).
    assert not 300 <= response.status_code < 400, (
        f"HTTP {response.status_code} to {response.headers.get('location')}{request}"
    )
    if response.status_code >= 500:
        if method == "HEAD":  # no body to name the error: ask again with GET
            response, _ = timed(client, "GET", url, content=body, headers=raw)
        try:
            error = response.json()
            # NGSI v2 answers in Orion's shape, {"error": name, "description": ...}.
            name = error.get("error", "") if url.startswith("/v2/") else error.get("type", "")
            type_name = str(name).rsplit("/", 1)[-1]
        except (ValueError, AttributeError):
            type_name = "(not a ProblemDetails body)"
        allowed = ALLOWED_5XX.get(response.status_code, set())
        assert type_name in allowed, (
            f"HTTP {response.status_code} {type_name}: {response.text[:800]}{request}"
        )
    try:
        health, elapsed = timed(client, "GET", "/health")
    except TimeoutError:
        raise AssertionError(f"/health did not answer within {HUNG} s, following{request}") from None
    assert health.status_code == 200 and elapsed < SLOW, (
        f"/health answered {health.status_code} after {elapsed:.2f} s, following{request}"
    )


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize(("template", "methods", "dsp"), CASES)
def test_every_route_answers_in_time_and_never_500(
    nodes: dict[str, Node], template: str, methods: frozenset[str], dsp: str, data: st.DataObject
) -> None:
    """Every route, every method it takes (and sometimes one it does not), hostile input."""
    node = nodes[dsp]
    # Half the examples are what a careful client sends, with at most one thing wrong, so that
    # requests get past the edge checks into the services; the rest are hostile throughout.
    sane = data.draw(st.booleans(), label="sane")
    allowed = sorted(methods)
    method = data.draw(st.sampled_from(allowed if sane else allowed * 4 + OTHER_METHODS), label="method")
    path = PARAM.sub(
        lambda m: data.draw(path_value(node, m.group(1), m.group(2), sane), label=m.group(1)), template
    )
    query = data.draw(plausible_pairs if sane else query_pairs, label="query")
    if sane and data.draw(st.booleans(), label="typed"):
        query = [("type", "X"), *query]  # most queries need one of type, attrs, q, geoQ
    url = path + (
        "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe=',;:')}" for k, v in query) if query else ""
    )
    if not sane and data.draw(st.integers(0, 9), label="raw query") == 0:
        url += ("&" if query else "?") + data.draw(
            st.sampled_from(["%zz", "a=%", "&&=&", "q=p==1&q=p==2", "=x"])
        )
    headers = data.draw(
        node.sane_headers if sane else st.fixed_dictionaries({}, optional=node.headers), label="headers"
    )
    body = data.draw(bodies(node, path, sane), label="body")
    if sane and body is not None and body.startswith(b"{") and data.draw(st.booleans(), label="ld"):
        # JSON-LD proper: the @context in the body, and then no Link header (the spec's rule)
        body = json.dumps({**json.loads(body), "@context": CORE}).encode()
        headers = {k: v for k, v in headers.items() if k != "Link"} | {"Content-Type": "application/ld+json"}
    call(node.client, method, url, headers, body)


def test_every_route_is_fuzzed() -> None:
    """The enumeration reaches into every API root (a Mount it missed would leave a root unfuzzed)."""
    roots = {path.split("/")[1] for path, _ in ROUTES}
    assert {"health", ".well-known", "dsp", "management", "ngsi-ld"} <= roots, roots
    assert len(ROUTES) > 90, len(ROUTES)
