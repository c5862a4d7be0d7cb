"""The node's catalog in DCAT-AP 3.0: one dcat:Catalog published by the node (a foaf:Agent),
a dcat:Dataset per dataset record with its ODRL offers (odrl:hasPolicy), one dcat:Distribution
per way to its data, and the three APIs as dcat:DataServices.

Built as an rdflib graph and serialised in the syntax asked for; it conforms to the SHACL shapes
of DCAT-AP 3.0.0 (tests/test_catalog_dcat_ap.py validates it against them). The classes of the
objects that DCAT-AP ranges constrain (dct:LicenseDocument, dct:MediaType, ...) are stated in
the graph, since a harvester validating it sees no other document.
"""

from __future__ import annotations

import asyncio
import logging
import re
from importlib.resources import files
from typing import Any
from urllib.parse import quote

import orjson
from rdflib import RDF, XSD, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, ODRL2

from kizuna.catalogs.listing import Access, Listing, Service, Shown, Site

log = logging.getLogger("kizuna.catalogs")

TURTLE = "text/turtle"
JSON_LD = "application/ld+json"
RDF_XML = "application/rdf+xml"
SYNTAXES = {TURTLE: "turtle", JSON_LD: "json-ld", RDF_XML: "xml"}  # the node's order of preference

FILE_TYPE = Namespace("http://publications.europa.eu/resource/authority/file-type/")
ACCESS_RIGHT = Namespace("http://publications.europa.eu/resource/authority/access-right/")
IANA = "https://www.iana.org/assignments/media-types/"
FORMATS = {"application/ld+json": FILE_TYPE.JSON_LD, "application/json": FILE_TYPE.JSON}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_NOT_IN_IRIS = re.compile(r'[\x00-\x20<>"{}|\\^`]')
_PREFIXES = {"dcat": DCAT, "dct": DCTERMS, "foaf": FOAF, "odrl": ODRL2, "xsd": XSD}
# The ODRL terms of the bundled DSP context, with ODRL as the vocabulary of the names an offer
# uses as values (``use``, ``spatial``, ``eq``): an offer reads as RDF without the network.
_ODRL_CONTEXT = {
    **orjson.loads(files("kizuna.dataspace").joinpath("context/odrl.jsonld").read_bytes())["@context"],
    "@vocab": str(ODRL2),
}


def catalog_graph(site: Site, listings: list[Listing]) -> Graph:
    graph = Graph(bind_namespaces="none")
    for prefix, namespace in _PREFIXES.items():
        graph.bind(prefix, namespace, replace=True)
    catalog = URIRef(site.public_url + "/catalog")
    publisher = _publisher(graph, site)
    graph.add((catalog, RDF.type, DCAT.Catalog))
    graph.add((catalog, DCTERMS.title, Literal(f"Datasets of {site.publisher.name}", lang="en")))
    graph.add(
        (
            catalog,
            DCTERMS.description,
            Literal(
                f"The datasets the data-space node {site.publisher.participant_id} offers over NGSI-LD,"
                " NGSI v2 and the Dataspace Protocol.",
                lang="en",
            ),
        )
    )
    graph.add((catalog, DCTERMS.publisher, publisher))
    services = {s.key: _service(graph, s) for s in site.services()}
    for service in services.values():
        graph.add((catalog, DCAT.service, service))
    for listing in listings:
        dataset = _dataset(graph, listing, publisher, services)
        graph.add((catalog, DCAT.dataset, dataset))
    _policies(graph, listings)
    return graph


class CatalogDocuments:
    """The serialised catalog, kept while the records it was made of stay the same: rdflib
    takes 3 to 9 ms per dataset to build and write a catalog, and harvesters ask often. A new
    document is made in a worker thread, between which the event loop keeps serving."""

    def __init__(self, site: Site) -> None:
        self.site = site
        # (media type, every dataset or the open ones) -> (records, document)
        self._kept: dict[tuple[str, bool], tuple[bytes, bytes]] = {}

    async def document(self, shown: Shown, media_type: str) -> bytes:
        """The catalog of the datasets one caller is shown; the public's and the participants'
        are kept apart, so that callers of both kinds asking in turn do not remake each other's."""
        datasets = await shown.list()
        key = orjson.dumps(datasets, option=orjson.OPT_SORT_KEYS)
        kept = self._kept.get((media_type, shown.everything))
        if kept is not None and kept[0] == key:
            return kept[1]
        document = await asyncio.to_thread(self._make, datasets, media_type)
        self._kept[(media_type, shown.everything)] = (key, document)
        return document

    def _make(self, datasets: list[dict[str, Any]], media_type: str) -> bytes:
        return serialise(catalog_graph(self.site, [self.site.describe(d) for d in datasets]), media_type)


def serialise(graph: Graph, media_type: str) -> bytes:
    syntax = SYNTAXES[media_type]
    if syntax == "json-ld":
        return graph.serialize(format="json-ld", context={k: str(v) for k, v in _PREFIXES.items()}).encode()
    return graph.serialize(format=syntax, encoding="utf-8")


def dataset_iri(listing: Listing) -> URIRef:
    """The dataset's own id when it is an IRI, else its DSP address (where it can be read)."""
    return URIRef(listing.id) if _is_iri(listing.id) else URIRef(listing.access("dsp").url)


def _is_iri(text: str) -> bool:
    """An absolute IRI every RDF syntax can write (ids may hold ``<``, ``"``, ``{``...)."""
    return bool(_SCHEME.match(text)) and not _NOT_IN_IRIS.search(text)


def _publisher(graph: Graph, site: Site) -> URIRef:
    participant = site.publisher.participant_id
    agent = URIRef(participant if _is_iri(participant) else site.public_url + "#publisher")
    graph.add((agent, RDF.type, FOAF.Agent))
    graph.add((agent, FOAF.name, Literal(site.publisher.name)))
    return agent


def _service(graph: Graph, service: Service) -> URIRef:
    iri = URIRef(service.endpoint)
    standard = URIRef(service.conforms_to)
    graph.add((iri, RDF.type, DCAT.DataService))
    graph.add((iri, DCTERMS.title, Literal(service.title, lang="en")))
    graph.add((iri, DCAT.endpointURL, iri))
    graph.add((iri, DCTERMS.conformsTo, standard))
    graph.add((standard, RDF.type, DCTERMS.Standard))
    return iri


def _dataset(graph: Graph, listing: Listing, publisher: URIRef, services: dict[str, URIRef]) -> URIRef:
    iri = dataset_iri(listing)
    issued = Literal(listing.created, datatype=XSD.dateTime)
    graph.add((iri, RDF.type, DCAT.Dataset))
    graph.add((iri, DCTERMS.identifier, Literal(listing.id)))
    graph.add((iri, DCTERMS.title, Literal(listing.title)))
    graph.add((iri, DCTERMS.description, Literal(listing.description, lang="en")))
    graph.add((iri, DCTERMS.publisher, publisher))
    graph.add((iri, DCTERMS.issued, issued))
    graph.add((iri, DCTERMS.modified, issued))
    for keyword in listing.keywords:
        graph.add((iri, DCAT.keyword, Literal(keyword)))
    rights = ACCESS_RIGHT.PUBLIC if listing.is_open else ACCESS_RIGHT.RESTRICTED
    graph.add((iri, DCTERMS.accessRights, rights))
    graph.add((rights, RDF.type, DCTERMS.RightsStatement))
    for offer in listing.offers:
        graph.add((iri, ODRL2.hasPolicy, URIRef(str(offer["@id"]))))
    for access in listing.accesses:
        distribution = _distribution(graph, listing, access, services[access.service.key])
        graph.add((iri, DCAT.distribution, distribution))
        graph.add((services[access.service.key], DCAT.servesDataset, iri))
    return iri


def _policies(graph: Graph, listings: list[Listing]) -> None:
    """Every offer as ODRL triples, read from their JSON-LD with the bundled ODRL context (in
    one document: rdflib's JSON-LD parser costs milliseconds per call). The management API
    checks an offer's ODRL, not all of its JSON-LD: when the whole fails to read, each offer is
    read alone, and one that cannot be is published as its IRI only (its terms stay in the DSP
    catalog) rather than failing the catalog."""
    offers = [_without_contexts(offer) for listing in listings for offer in listing.offers]
    if offers and not _parsed(graph, offers):
        for offer in offers:
            if not _parsed(graph, [offer]):
                log.warning("offer %s is no JSON-LD rdflib reads; published without its terms", offer["@id"])
    for offer in offers:
        graph.add((URIRef(str(offer["@id"])), RDF.type, ODRL2.Policy))
        graph.add((URIRef(str(offer["@id"])), RDF.type, ODRL2.Offer))


def _parsed(graph: Graph, offers: list[dict[str, Any]]) -> bool:
    """Whether ``offers`` were read into ``graph`` (all of them, or, failing, none)."""
    read = Graph()
    try:
        read.parse(
            data=orjson.dumps({"@context": _ODRL_CONTEXT, "@graph": offers}).decode(), format="json-ld"
        )
    except Exception:  # rdflib fails on odd JSON-LD with whatever error its code meets
        return False
    graph += read
    return True


def _without_contexts(value: Any) -> Any:
    """An offer without the ``@context`` members it may carry inside (the management API keeps
    them): rdflib would fetch each named one, a request past the outbound gate. The bundled ODRL
    context is what an offer means here."""
    if isinstance(value, dict):
        return {k: _without_contexts(v) for k, v in value.items() if k != "@context"}
    if isinstance(value, list):
        return [_without_contexts(v) for v in value]
    return value


def _distribution(graph: Graph, listing: Listing, access: Access, service: URIRef) -> URIRef:
    iri = URIRef(f"{dataset_iri(listing)}#{quote(access.service.key)}")
    media = URIRef(IANA + access.service.media_type)
    file_type = FORMATS[access.service.media_type]
    graph.add((iri, RDF.type, DCAT.Distribution))
    graph.add((iri, DCTERMS.title, Literal(access.name, lang="en")))
    graph.add((iri, DCTERMS.description, Literal(access.description, lang="en")))
    graph.add((iri, DCAT.accessURL, URIRef(access.url)))
    graph.add((iri, DCAT.accessService, service))
    graph.add((iri, DCAT.mediaType, media))
    graph.add((media, RDF.type, DCTERMS.MediaType))
    graph.add((iri, DCTERMS["format"], file_type))
    graph.add((file_type, RDF.type, DCTERMS.MediaTypeOrExtent))
    if listing.license.url and _is_iri(listing.license.url):
        license_iri = URIRef(listing.license.url)
        graph.add((iri, DCTERMS.license, license_iri))
        graph.add((license_iri, RDF.type, DCTERMS.LicenseDocument))
    return iri
