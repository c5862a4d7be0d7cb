"""``GET /catalog``: the node's datasets in DCAT-AP 3.0, in each RDF syntax it negotiates,
conforming to the official SHACL shapes (tests/data/dcat-ap/README.md says which)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyshacl import validate
from rdflib import RDF, Graph, Literal, URIRef
from rdflib.namespace import DCAT, DCTERMS, ODRL2, SH
from starlette.testclient import TestClient

from conftest import STORE_KINDS, store_url
from kizuna.app import create_app
from kizuna.catalogs.dcat_ap import catalog_graph, serialise
from kizuna.catalogs.listing import Publisher, Site
from kizuna.config import Settings
from kizuna.dataspace.catalog import parse_dataset

SHAPES = Graph().parse(Path(__file__).parent / "data" / "dcat-ap" / "dcat-ap-SHACL.ttl")
PUBLIC = "http://127.0.0.1:1026"  # the default --public-url: every address in the catalog is the node's own
SYNTAXES = {"text/turtle": "turtle", "application/ld+json": "json-ld", "application/rdf+xml": "xml"}
OPEN = {
    "id": "urn:kizuna:ds:lights",
    "title": "Street lights",
    "entityTypes": ["Streetlight"],
    "policy": {"permission": [{"action": "use"}]},
}
CONSTRAINED = {
    "id": "cabinets",
    "title": "Control cabinets",
    "entityTypes": ["StreetlightControlCabinet"],
    "history": True,
    "policy": {
        "permission": [
            {
                "action": "use",
                "constraint": [{"leftOperand": "spatial", "operator": "eq", "rightOperand": "EU"}],
            }
        ]
    },
}


def conforms(graph: Graph) -> tuple[bool, Graph, str]:
    """SHACL with RDFS entailment, under which every IRI is an rdfs:Resource (the range the
    3.0.0 shapes give accessURL and endpointURL): conforms, the results graph, the report."""
    ok, results, text = validate(graph, shacl_graph=SHAPES, inference="rdfs")
    return bool(ok), results, str(text)


@pytest.fixture
def one_store(tmp_path: Path) -> Iterator[TestClient]:
    """Negotiation reads no store: one kind of store is enough for it."""
    with TestClient(create_app(Settings(store=f"sqlite:///{tmp_path}/kizuna.db"))) as client:
        yield client


@pytest.fixture(params=STORE_KINDS)
def anyone_answered(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    """A node with ``--dsp-auth none``: its DSP catalog answers anyone, so its DCAT-AP catalog
    lists every dataset to anyone (not only the open ones)."""
    settings = Settings(store=store_url(request.param, tmp_path, request), dsp_auth="none")
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def catalog(anyone_answered: TestClient) -> TestClient:
    """A node with two datasets: one open and one whose offer binds use to the EU."""
    for dataset in ({**OPEN, "open": True}, CONSTRAINED):
        response = anyone_answered.post("/management/v1/datasets", json=dataset)
        assert response.status_code == 201, response.text
    return anyone_answered


@pytest.mark.parametrize("media", list(SYNTAXES))
def test_the_catalog_conforms_to_dcat_ap_3_in_every_syntax(catalog: TestClient, media: str) -> None:
    response = catalog.get("/catalog", headers={"Accept": media})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(media)
    graph = Graph().parse(data=response.content, format=SYNTAXES[media])
    ok, _, report = conforms(graph)
    assert ok, report
    datasets = set(graph.subjects(RDF.type, DCAT.Dataset))
    assert len(datasets) == 2
    open_one = URIRef("urn:kizuna:ds:lights")
    closed = URIRef(f"{PUBLIC}/dsp/catalog/datasets/cabinets")
    assert datasets == {open_one, closed}
    assert (open_one, DCTERMS.identifier, Literal("urn:kizuna:ds:lights")) in graph
    # the open dataset's distributions carry its licence; the other's are under its offer only
    licences = {graph.value(d, DCTERMS.license) for d in graph.objects(open_one, DCAT.distribution)}
    assert licences == {URIRef("http://opendatacommons.org/licenses/by/")}
    assert not any(graph.value(d, DCTERMS.license) for d in graph.objects(closed, DCAT.distribution))
    # the constrained offer, as ODRL
    (policy,) = graph.objects(closed, ODRL2.hasPolicy)
    constraint = graph.value(graph.value(policy, ODRL2.permission), ODRL2.constraint)
    assert graph.value(constraint, ODRL2.leftOperand) == ODRL2.spatial
    assert graph.value(constraint, ODRL2.rightOperand) == Literal("EU")
    services = {str(graph.value(s, DCAT.endpointURL)) for s in graph.subjects(RDF.type, DCAT.DataService)}
    assert services == {f"{PUBLIC}/ngsi-ld/v1", f"{PUBLIC}/v2", f"{PUBLIC}/dsp"}


def test_the_shapes_do_refuse_what_dcat_ap_forbids(catalog: TestClient) -> None:
    """The validation above can fail: a dataset without its mandatory title does not conform."""
    graph = Graph().parse(data=catalog.get("/catalog").content, format="turtle")
    graph.remove((URIRef("urn:kizuna:ds:lights"), DCTERMS.title, None))
    ok, results, _ = conforms(graph)
    assert not ok
    assert set(results.objects(None, SH.resultPath)) == {DCTERMS.title}
    assert set(results.objects(None, SH.focusNode)) == {URIRef("urn:kizuna:ds:lights")}


@pytest.mark.parametrize(
    ("accept", "served"),
    [
        (None, "text/turtle"),
        ("*/*", "text/turtle"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "text/turtle"),
        ("application/ld+json;q=0.9, application/rdf+xml", "application/rdf+xml"),
        ("application/*", "application/ld+json"),
    ],
)
def test_content_negotiation(one_store: TestClient, accept: str | None, served: str) -> None:
    headers: dict[str, Any] = {"Accept": accept} if accept else {}
    response = one_store.get("/catalog", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == served
    assert response.headers["vary"] == "Accept"


def test_any_other_media_type_is_406_problem_details(one_store: TestClient) -> None:
    response = one_store.get("/catalog", headers={"Accept": "application/json"})
    assert response.status_code == 406
    assert response.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/NotAcceptable"


def test_a_changed_catalog_is_served_changed(catalog: TestClient) -> None:
    """The serialised catalog is kept between requests, and only while the records hold."""

    def datasets() -> set[str]:
        graph = Graph().parse(data=catalog.get("/catalog").content, format="turtle")
        return {str(graph.value(d, DCTERMS.identifier)) for d in graph.subjects(RDF.type, DCAT.Dataset)}

    assert datasets() == {"urn:kizuna:ds:lights", "cabinets"}
    assert catalog.post("/management/v1/datasets", json={**OPEN, "id": "third"}).status_code == 201
    assert datasets() == {"urn:kizuna:ds:lights", "cabinets", "third"}
    assert catalog.delete("/management/v1/datasets/cabinets").status_code == 204
    assert datasets() == {"urn:kizuna:ds:lights", "third"}


def test_an_offer_never_makes_the_node_fetch_a_context() -> None:
    """An @context inside an offer (the management API keeps it) is not resolved: rdflib would
    fetch it, a request no outbound gate checked."""
    asked: list[socket.socket] = []

    def watch(listener: socket.socket) -> None:
        with contextlib.suppress(TimeoutError):
            connection, _ = listener.accept()
            asked.append(connection)
            connection.close()  # a fetch, if one came, fails at once instead of waiting

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        watcher = threading.Thread(target=watch, args=(listener,))
        watcher.start()
        trap = f"http://127.0.0.1:{listener.getsockname()[1]}/context.jsonld"
        record = parse_dataset({**OPEN, "policy": {"permission": [{"action": "use", "@context": trap}]}})
        site = Site(PUBLIC, Publisher("did:web:node.example", "Node"))
        graph = catalog_graph(site, [site.describe(record)])
        watcher.join()
    assert asked == []
    (offer,) = graph.objects(URIRef("urn:kizuna:ds:lights"), ODRL2.hasPolicy)
    assert graph.value(graph.value(offer, ODRL2.permission), ODRL2.action) == ODRL2.use


def test_an_offer_rdflib_cannot_read_leaves_the_catalog_whole() -> None:
    """ODRL-valid is not JSON-LD-valid: an offer with a malformed value object is published as
    its IRI (an odrl:Offer), the other offers with all their terms."""
    odd = {
        "action": "use",
        "constraint": [
            {"leftOperand": "spatial", "operator": "eq", "rightOperand": {"@language": 7, "@value": "x"}}
        ],
    }
    bad = parse_dataset({**OPEN, "policy": {"permission": [odd]}})
    good = parse_dataset(CONSTRAINED)
    site = Site(PUBLIC, Publisher("did:web:node.example", "Node"))
    graph = catalog_graph(site, [site.describe(bad), site.describe(good)])
    (unread,) = graph.objects(URIRef("urn:kizuna:ds:lights"), ODRL2.hasPolicy)
    assert (unread, RDF.type, ODRL2.Offer) in graph and graph.value(unread, ODRL2.permission) is None
    (read,) = graph.objects(URIRef(f"{PUBLIC}/dsp/catalog/datasets/cabinets"), ODRL2.hasPolicy)
    assert graph.value(graph.value(read, ODRL2.permission), ODRL2.action) == ODRL2.use
    assert conforms(graph)[0]


@pytest.mark.parametrize("media", list(SYNTAXES))
def test_an_id_no_iri_can_hold_names_the_dataset_by_its_dsp_address(media: str) -> None:
    odd = parse_dataset({**OPEN, "id": 'urn:x:<lamp>"{1}"'})
    site = Site(PUBLIC, Publisher('did:web:"odd"', "Node"))
    graph = Graph().parse(
        data=serialise(catalog_graph(site, [site.describe(odd)]), media), format=SYNTAXES[media]
    )
    (dataset,) = graph.subjects(RDF.type, DCAT.Dataset)
    assert str(dataset) == f"{PUBLIC}/dsp/catalog/datasets/urn:x:%3Clamp%3E%22%7B1%7D%22"
    assert graph.value(dataset, DCTERMS.identifier) == Literal('urn:x:<lamp>"{1}"')
    assert str(graph.value(dataset, DCTERMS.publisher)) == f"{PUBLIC}#publisher"
