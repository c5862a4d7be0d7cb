"""What every catalog format says of one dataset record: its description, keywords, licence
and the three ways to reach its data (NGSI-LD, NGSI v2, DSP); and which records a caller is
shown at all (:class:`Shown`). The CKAN, DCAT-AP and CADDE listings all start here, so the
formats never disagree about a dataset, nor about who sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from kizuna import paths

OPEN_LICENSE = ("odc-by", "Open Data Commons Attribution License", "http://opendatacommons.org/licenses/by/")
CLOSED_LICENSE = ("other-closed", "Other (Not Open)", None)
NGSI_LD_SPEC = "https://www.etsi.org/deliver/etsi_gs/CIM/001_099/009/01.08.01_60/gs_CIM009v010801p.pdf"
NGSI_V2_SPEC = "https://fiware.github.io/specifications/ngsiv2/stable/"
DSP_SPEC = "https://eclipse-dataspace-protocol-base.github.io/DataspaceProtocol/2025-1/"


class Datasets(Protocol):
    """Where the listings read dataset records (the management API's catalog)."""

    async def list(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Shown:
    """The datasets one caller is shown: every one to a caller the DSP catalog would answer (a
    trusted participant, who may negotiate for any of them), else the open ones only, whose
    descriptions are for anyone. The one decision of every listing, so that no format shows a
    caller more than another."""

    datasets: Datasets
    everything: bool

    async def list(self) -> list[dict[str, Any]]:
        found = await self.datasets.list()
        return found if self.everything else [d for d in found if d.get("open")]


@dataclass(frozen=True, slots=True)
class Publisher:
    """The one organization the node publishes as: its participant id and the name shown."""

    participant_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Service:
    """An API of the node that serves datasets (a DCAT DataService)."""

    key: str  # "ngsi-ld" | "ngsi-v2" | "dsp"
    title: str
    format: str  # the name a portal shows as a resource's format
    endpoint: str
    conforms_to: str
    media_type: str


@dataclass(frozen=True, slots=True)
class Access:
    """One way to a dataset's data: the request to make, on which service."""

    service: Service
    name: str
    description: str
    url: str


@dataclass(frozen=True, slots=True)
class License:
    id: str
    title: str
    url: str | None


@dataclass(frozen=True, slots=True)
class Listing:
    id: str
    title: str
    description: str
    keywords: list[str]
    tenant: str
    is_open: bool
    license: License
    created: str
    offers: list[dict[str, Any]]
    accesses: list[Access]

    def access(self, key: str) -> Access:
        return next(a for a in self.accesses if a.service.key == key)


@dataclass(frozen=True, slots=True)
class Site:
    """Where the node's APIs are, as the outside world reaches them (``--public-url``)."""

    public_url: str
    publisher: Publisher

    def services(self) -> list[Service]:
        return [
            Service(
                "ngsi-ld",
                "NGSI-LD API",
                "NGSI-LD",
                self.public_url + paths.NGSI_LD,
                NGSI_LD_SPEC,
                "application/ld+json",
            ),
            Service(
                "ngsi-v2",
                "NGSI v2 API (read-only)",
                "NGSI v2",
                self.public_url + paths.NGSI_V2,
                NGSI_V2_SPEC,
                "application/json",
            ),
            Service(
                "dsp", "Dataspace Protocol", "DSP", self.public_url + paths.DSP, DSP_SPEC, "application/json"
            ),
        ]

    def describe(self, dataset: dict[str, Any]) -> Listing:
        is_open = bool(dataset.get("open", False))
        return Listing(
            id=dataset["id"],
            title=dataset["title"],
            description=_description(dataset),
            keywords=list(dataset["entityTypes"]),
            tenant=dataset.get("tenant", ""),
            is_open=is_open,
            license=_license(dataset, is_open),
            created=dataset["createdAt"],
            offers=dataset["offers"],
            accesses=self._accesses(dataset),
        )

    def _accesses(self, dataset: dict[str, Any]) -> list[Access]:
        ngsi_ld, ngsi_v2, dsp = self.services()
        types = ",".join(dataset["entityTypes"])
        attrs = ",".join(dataset.get("attributes") or [])
        query: dict[str, str] = {"type": types}
        if attrs:
            query["attrs"] = attrs
        v2_query = dict(query)
        if dataset.get("q"):
            query["q"] = dataset["q"]
        query.update(dataset.get("geoQ") or {})  # geoQ's members are NGSI-LD's parameter names
        history = dataset.get("history", False)
        entities = "/temporal/entities" if history else "/entities"
        tenant = dataset.get("tenant", "")
        where = f" in tenant {tenant!r} (header NGSILD-Tenant / Fiware-Service)" if tenant else ""
        context = dataset.get("context")
        terms = f" with the @context {context} in a Link header" if context else ""
        return [
            Access(
                ngsi_ld,
                "NGSI-LD query",
                f"The entities of this dataset{' with their history' if history else ''}, as NGSI-LD"
                f"{where}{terms}; reading them takes the node's permission or a DSP agreement.",
                f"{ngsi_ld.endpoint}{entities}?{urlencode(query, safe=',')}",
            ),
            Access(
                ngsi_v2,
                "NGSI v2 query",
                f"The current state of the entities of these types as NGSI v2 (Orion's shapes){where},"
                " without the dataset's NGSI-LD filters.",
                f"{ngsi_v2.endpoint}/entities?{urlencode(v2_query, safe=',')}",
            ),
            Access(
                dsp,
                "Dataspace Protocol dataset",
                "The dataset in the node's DSP catalog, with its ODRL offers: negotiate an agreement,"
                " then transfer (HttpData-PULL or HttpData-PUSH).",
                f"{dsp.endpoint}/catalog/datasets/{quote(dataset['id'], safe=':')}",
            ),
        ]


def _description(dataset: dict[str, Any]) -> str:
    """A record has no free text of its own: say what it selects, in words a portal shows."""
    types = ", ".join(dataset["entityTypes"])
    text = f"NGSI-LD entities of type {types}"
    if dataset.get("attributes"):
        text += f" (attributes {', '.join(dataset['attributes'])})"
    if dataset.get("q"):
        text += f" where {dataset['q']}"
    if dataset.get("geoQ"):
        geo = dataset["geoQ"]
        words = (geo["georel"], geo["geometry"], geo.get("coordinates"))
        text += f" (geoQ: {' '.join(w for w in words if w)})"
    text += ", with their temporal history." if dataset.get("history") else ", their current state."
    return text


def _license(dataset: dict[str, Any], is_open: bool) -> License:
    """An open dataset under its own licence if it names one, else ODC-By; any other under its
    ODRL offers only, which no licence id expresses (CKAN's ``other-closed``)."""
    if not is_open:
        return License(*CLOSED_LICENSE)
    own = dataset.get("license")
    if isinstance(own, str) and own:
        return License(own, own, own if own.startswith(("http://", "https://")) else None)
    return License(*OPEN_LICENSE)
