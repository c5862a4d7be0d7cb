"""Datasets over the node's NGSI-LD data, with ODRL offers, and their DCAT catalog form."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from kizuna import query as ql
from kizuna.access.subject import Subject
from kizuna.dataspace import messages, odrl
from kizuna.dataspace.core import DATASET, Node
from kizuna.errors import (
    AlreadyExists,
    BadRequestData,
    CatalogError,
    DatasetNotFound,
    PolicyError,
    ResourceNotFound,
)

PULL = "HttpData-PULL"
PUSH = "HttpData-PUSH"
FORMATS = (PULL, PUSH)
APPROVALS = ("auto", "manual")
# The policy of an open dataset that gives none: use, with no constraint.
OPEN_POLICY: dict[str, Any] = {"permission": [{"action": "use"}]}
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$|^[A-Za-z0-9._~-]+$")


def _bad(detail: str) -> BadRequestData:
    return BadRequestData(detail)


def parse_dataset(body: Any) -> dict[str, Any]:
    """A management-API dataset definition, checked; offers get their ids here."""
    if not isinstance(body, dict):
        raise _bad("A dataset must be a JSON object")
    known = {
        "id",
        "title",
        "entityTypes",
        "attributes",
        "q",
        "geoQ",
        "history",
        "approval",
        "policy",
        "tenant",
        "context",
        "open",
        "license",
    }
    unknown = sorted(set(body) - known)
    if unknown:
        raise _bad(f"Unknown dataset members: {', '.join(unknown)}")
    dataset_id = body.get("id")
    if not isinstance(dataset_id, str) or not _ID.match(dataset_id):
        raise _bad("id must be a URI or a plain name without spaces")
    types = body.get("entityTypes")
    if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
        raise _bad("entityTypes must be a non-empty array of entity type names")
    attributes = body.get("attributes")
    if attributes is not None and (
        not isinstance(attributes, list) or not all(isinstance(a, str) and a for a in attributes)
    ):
        raise _bad("attributes must be an array of attribute names")
    q = body.get("q")
    if q is not None:
        if not isinstance(q, str):
            raise _bad("q must be a string")
        ql.parse_q(q)  # BadRequestData when it is not a valid NGSI-LD query
    geo_q = body.get("geoQ")
    if geo_q is not None:
        if not isinstance(geo_q, dict) or set(geo_q) - {"geometry", "coordinates", "georel", "geoproperty"}:
            raise _bad("geoQ must be an object with geometry, coordinates, georel and optional geoproperty")
        if not all(isinstance(geo_q.get(k), str) for k in ("geometry", "georel")):
            raise _bad("geoQ needs a geometry and a georel")
        ql.parse_geoq(
            geo_q["georel"], geo_q["geometry"], geo_q.get("coordinates", ""), geo_q.get("geoproperty")
        )
    history = body.get("history", False)
    if not isinstance(history, bool):
        raise _bad("history must be true (the temporal history) or false (the current state)")
    approval = body.get("approval", "auto")
    if approval not in APPROVALS:
        raise _bad("approval must be auto or manual")
    tenant = body.get("tenant", "")
    if not isinstance(tenant, str):
        raise _bad("tenant must be a string")
    context = body.get("context")
    if context is not None and not isinstance(context, str):
        raise _bad("context must be the URL of a JSON-LD @context")
    is_open = body.get("open", False)
    if not isinstance(is_open, bool):
        raise _bad("open must be true (readable without an agreement) or false")
    license_ = body.get("license")
    if license_ is not None and (not isinstance(license_, str) or not license_):
        raise _bad("license must be the id or URL of a licence")
    if is_open:
        _check_open(body)
    policy = body.get("policy", OPEN_POLICY if is_open else None)
    policies = policy if isinstance(policy, list) else [policy]
    if not policies:
        raise _bad("policy must be an ODRL offer or a non-empty array of them")
    offers = []
    for p in policies:
        if not isinstance(p, dict):
            raise _bad("policy must be an ODRL offer (a JSON object)")
        if "@id" in p or "target" in p:
            raise _bad("policy must come without @id and target: the node assigns them")
        try:
            odrl.validate_policy(p)
        except PolicyError as error:
            raise _bad(f"policy: {error}") from None
        offer = {"@id": f"urn:uuid:{uuid.uuid4()}", "@type": "Offer"}
        offer.update({k: v for k, v in p.items() if k not in ("@type", "@context")})
        offers.append(offer)
    title = body.get("title", dataset_id)
    if not isinstance(title, str):
        raise _bad("title must be a string")
    return {
        "id": dataset_id,
        "title": title,
        "tenant": tenant,
        "entityTypes": types,
        "attributes": attributes,
        "q": q,
        "geoQ": geo_q,
        "history": history,
        "context": context,
        "approval": approval,
        "offers": offers,
        "open": is_open,
        "license": license_,
        "createdAt": messages.now_iso(),
    }


def _check_open(body: dict[str, Any]) -> None:
    """An open dataset opens whole entity types to anyone: its reads go through the one policy
    decision as a permission of the public, and permissions select by type, so a ``q``, a
    ``geoQ`` or an attribute list (which only agreements' reads narrow to) could not bound
    them; nor may its offers hold constraints nobody is asked to accept."""
    narrowing = [k for k in ("q", "geoQ", "attributes") if body.get(k) is not None]
    if narrowing:
        raise _bad(f"An open dataset offers whole entity types: it takes no {', '.join(narrowing)}")
    policy = body.get("policy", OPEN_POLICY)
    for p in policy if isinstance(policy, list) else [policy]:
        if not isinstance(p, dict):
            continue  # refused with the other offers' checks
        permissions = p.get("permission") if isinstance(p.get("permission"), list) else []
        if (
            p.get("prohibition")
            or p.get("obligation")
            or any(isinstance(r, dict) and (r.get("constraint") or r.get("duty")) for r in permissions)
        ):
            raise _bad("An open dataset's policy has no constraints, duties or prohibitions")


def management_view(dataset: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dataset.items() if v is not None}


# Told of each dataset published (True) or withdrawn (False): an open one's permission follows.
Published = Callable[[dict[str, Any], bool], Awaitable[None]]


async def _ignored(dataset: dict[str, Any], published: bool) -> None:
    return None


class CatalogService:
    def __init__(self, node: Node, published: Published = _ignored) -> None:
        self.node = node
        self.published = published

    @property
    def service_id(self) -> str:
        return f"{self.node.dsp_base}#dataService"

    async def create(self, subject: Subject, body: Any) -> dict[str, Any]:
        dataset = parse_dataset(body)
        if not await self.node.records.insert(DATASET, dataset):
            raise AlreadyExists(f"Dataset {dataset['id']} already exists")
        await self.published(dataset, True)
        await self.node.audit.record(subject, "", "dataset.create", dataset["id"])
        return dataset

    async def list(self) -> list[dict[str, Any]]:
        datasets, _ = await self.node.records.list(DATASET)
        return datasets

    async def get(self, dataset_id: str) -> dict[str, Any]:
        dataset = await self.node.records.get(DATASET, dataset_id)
        if dataset is None:
            raise ResourceNotFound(f"Dataset {dataset_id} does not exist")
        return dataset

    async def delete(self, subject: Subject, dataset_id: str) -> None:
        dataset = await self.find(dataset_id)
        if dataset is None or not await self.node.records.delete(DATASET, dataset_id):
            raise ResourceNotFound(f"Dataset {dataset_id} does not exist")
        await self.published(dataset, False)
        await self.node.audit.record(subject, "", "dataset.delete", dataset_id)

    async def find(self, dataset_id: str) -> dict[str, Any] | None:
        return await self.node.records.get(DATASET, dataset_id)

    # -- DSP ------------------------------------------------------------------------------------

    def data_service(self) -> dict[str, Any]:
        return {"@id": self.service_id, "@type": "DataService", "endpointURL": self.node.dsp_base}

    def dcat_dataset(self, dataset: dict[str, Any]) -> dict[str, Any]:
        return {
            "@id": dataset["id"],
            "@type": "Dataset",
            "title": dataset["title"],
            "hasPolicy": dataset["offers"],
            "distribution": [
                {"@type": "Distribution", "format": PULL, "accessService": self.data_service()},
                {"@type": "Distribution", "format": PUSH, "accessService": self.service_id},
            ],
        }

    async def catalog(self, request: Any, offset: int, limit: int) -> tuple[dict[str, Any], int]:
        """A page of the catalog (CatalogRequestMessage) and the number of datasets."""
        messages.require_valid(request, "CatalogRequestMessage", CatalogError)
        if request.get("filter"):
            raise CatalogError("Catalog filters are not supported")
        page, total = await self.node.records.list(DATASET, limit, offset)
        catalog = messages.message(
            "Catalog",
            **{"@id": f"{self.node.dsp_base}#catalog"},
            participantId=self.node.participant_id,
            service=[self.data_service()],
        )
        if page:
            catalog["dataset"] = [self.dcat_dataset(d) for d in page]
        return messages.check(catalog, "Catalog"), total

    async def dataset(self, dataset_id: str) -> dict[str, Any]:
        dataset = await self.find(dataset_id)
        if dataset is None:
            raise DatasetNotFound(f"Dataset {dataset_id} does not exist")
        body = {"@context": list(messages.CONTEXT), **self.dcat_dataset(dataset)}
        return messages.check(body, "Dataset")

    async def published_offer(self, offer: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The dataset and published offer an offer refers to (by ``target`` and ``@id``)."""
        dataset = await self.find(str(offer.get("target", "")))
        if dataset is None:
            return None
        for published in dataset["offers"]:
            if published["@id"] == offer.get("@id"):
                return dataset, published
        return None
