"""The node as a CADDE v4 provider connector: the detail search (``/cadde/api/v4/catalog``) is
the CKAN ``package_search`` of :mod:`kizuna.catalogs.ckan` with CADDE's catalog items added to
each package, and the data exchange (``/cadde/api/v4/file``) reads a dataset's NGSI-LD query
through the data plane, under the same agreement checks and counting as a DSP pull.

CADDE's contract is the DSP agreement: its bearer token is the agreement's transfer token (what
the provider's TransferStartMessage handed over), and an open dataset needs none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from kizuna.catalogs.ckan import CkanActions
from kizuna.catalogs.listing import Datasets, Shown, Site
from kizuna.dataspace.dataplane import DataPlane
from kizuna.errors import BadRequestData, ResourceNotFound, UsageDenied

API_NGSI = "api/ngsi"
API_TYPES = (API_NGSI, "file/http", "file/ftp")
REQUIRED = "required"
NOT_REQUIRED = "notRequired"
CONTRACT_TYPE = "dsp:ContractAgreement"  # x-cadde-contract-type of a read under an agreement
# What a resource URL may add to a dataset's own query: paging and the key-values form.
PAGING = ("limit", "offset", "options")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PURPOSE = "kizuna-purpose"  # the x-cadde-options key a consumer declares its purpose with
TENANT_OPTIONS = ("ngsild-tenant", "fiware-service")


@dataclass(frozen=True, slots=True)
class Fetched:
    """One data exchange: the entities, and the contract it was made under ("" for open data)."""

    entities: list[dict[str, Any]]
    dataset_id: str
    contract_id: str = ""
    contract_url: str = ""
    access_count: int | None = None


def parse_options(text: str | None) -> dict[str, str]:
    """``x-cadde-options``: ``key1:value1,key2:value2`` (CADDE's form; no comma in a value),
    keys in lower case as HTTP header names compare."""
    options: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, colon, value = part.partition(":")
        if not colon or not key.strip():
            raise BadRequestData(f"x-cadde-options must be key:value pairs separated by commas, not {part!r}")
        options[key.strip().lower()] = value.strip()
    return options


class CaddeProvider:
    def __init__(
        self, catalog: Datasets, site: Site, dataplane: DataPlane, *, provider_id: str, contracts: bool
    ) -> None:
        self.catalog = catalog
        self.site = site
        self.dataplane = dataplane
        self.provider_id = provider_id
        self.contracts = contracts  # --cadde all: datasets under agreements too, not only open ones

    def shown(self, participant: bool) -> Shown:
        """The datasets listed: the one decision of every listing, within what ``--cadde`` serves."""
        return Shown(self.catalog, everything=participant and self.contracts)

    # -- detail search --------------------------------------------------------------------------

    async def search(self, params: Mapping[str, Any], *, participant: bool) -> dict[str, Any]:
        """CKAN's package_search over the datasets shown, each package with CADDE's items."""
        return await CkanActions(self.shown(participant), self.site, self._items).package_search(params)

    def _items(self, package: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
        """CADDE's catalog items: who provides (extras), and on the NGSI-LD resource, how it is
        reached through the connector and whether a contract is needed (resources)."""
        extras = [
            *package["extras"],
            {"key": "caddec_dataset_id_for_detail", "value": package["name"]},
            {"key": "caddec_provider_id", "value": self.provider_id},
        ]
        required = NOT_REQUIRED if dataset.get("open") else REQUIRED
        ngsi_ld = self.site.describe(dataset).access("ngsi-ld").url
        resources = [
            {**r, "caddec_resource_type": API_NGSI, "caddec_contract_required": required}
            if r["url"] == ngsi_ld
            else r
            for r in package["resources"]
        ]
        return {**package, "extras": sorted(extras, key=lambda e: e["key"]), "resources": resources}

    # -- data exchange --------------------------------------------------------------------------

    async def fetch(
        self, resource_url: str | None, api_type: str | None, token: str | None, options: dict[str, str]
    ) -> Fetched:
        """The data of the dataset whose NGSI-LD resource URL ``resource_url`` is (with ``limit``,
        ``offset`` or ``options=keyValues`` added): an open one for anyone, any other for the
        holder of a transfer token of an agreement on it, checked and counted as a DSP pull."""
        if not resource_url:
            raise BadRequestData("x-cadde-resource-url must name a resource of the catalog")
        if api_type not in API_TYPES:
            raise BadRequestData(f"x-cadde-resource-api-type must be one of {', '.join(API_TYPES)}")
        if api_type != API_NGSI:
            raise BadRequestData(f"This node serves its datasets as {API_NGSI}, not as {api_type} resources")
        wanted, paging = _resource(resource_url)
        limit, offset, key_values = _paging(paging)
        if token:
            return await self._under_contract(token, wanted, options, limit, offset, key_values)
        datasets = [d for d in await self.catalog.list() if self._resource_of(d) == wanted]
        opened = next((d for d in datasets if d.get("open")), None)
        if opened is None:
            if datasets and self.contracts:
                raise UsageDenied(
                    f"{resource_url} is read under a contract: send its transfer token as a Bearer token"
                )
            raise ResourceNotFound(f"No dataset of this node has the resource URL {resource_url}")
        _check_tenant(opened, options)
        entities = await self.dataplane.read_open(opened, limit=limit, offset=offset, key_values=key_values)
        return Fetched(entities, opened["id"])

    async def _under_contract(
        self,
        token: str,
        wanted: tuple[str, list[tuple[str, str]]],
        options: dict[str, str],
        limit: int,
        offset: int,
        key_values: bool,
    ) -> Fetched:
        if not self.contracts:
            raise UsageDenied("This node serves open datasets only through CADDE (--cadde open)")
        _, agreement, dataset = await self.dataplane.authorize(token)
        if self._resource_of(dataset) != wanted:
            raise UsageDenied(
                f"The contract is for dataset {dataset['id']}, whose resource URL is"
                f" {self.site.describe(dataset).access('ngsi-ld').url}"
            )
        _check_tenant(dataset, options)
        entities, info = await self.dataplane.pull(
            token,
            purpose=options.get(PURPOSE),
            limit=limit,
            offset=offset,
            key_values=key_values,
            temporal={} if dataset.get("history") else None,
        )
        contract_url = f"{self.dataplane.node.dsp_base}/negotiations/{agreement.get('negotiationId', '')}"
        return Fetched(entities, dataset["id"], info["agreementId"], contract_url, info["accessCount"])

    def _resource_of(self, dataset: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
        return _resource(self.site.describe(dataset).access("ngsi-ld").url)[0]


def _resource(url: str) -> tuple[tuple[str, list[tuple[str, str]]], dict[str, str]]:
    """A resource URL as (path, its query but paging, sorted) and its paging parameters: the
    node is the origin of its resources, whatever host name the consumer reached it by."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    paging = {k: v for k, v in pairs if k in PAGING}
    return (parts.path, sorted((k, v) for k, v in pairs if k not in PAGING)), paging


def _paging(paging: dict[str, str]) -> tuple[int, int, bool]:
    try:
        limit = int(paging.get("limit", DEFAULT_LIMIT))
        offset = int(paging.get("offset", 0))
    except ValueError:
        raise BadRequestData("limit and offset of a resource URL must be integers") from None
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise BadRequestData(f"limit must be between 1 and {MAX_LIMIT}, offset at least 0")
    forms = set(filter(None, paging.get("options", "").split(",")))
    if forms - {"keyValues", "normalized"}:
        raise BadRequestData("options of a resource URL may only be keyValues or normalized")
    return limit, offset, "keyValues" in forms


def _check_tenant(dataset: dict[str, Any], options: dict[str, str]) -> None:
    """A tenant named in x-cadde-options (Orion's Fiware-Service, as CADDE consumers send it)
    must be the dataset's: a dataset reads its own tenant only."""
    for key in TENANT_OPTIONS:
        if key in options and options[key] != dataset.get("tenant", ""):
            raise BadRequestData(f"Dataset {dataset['id']} is in tenant {dataset.get('tenant', '')!r}")
