"""The node's datasets as a CKAN 2.10 site answers them: packages, one organization (the node),
tags (the entity types), and the read-only actions portals and harvesters call.

Read-only and computed on each call from the management API's dataset records that the caller
is shown (:class:`~kizuna.catalogs.listing.Shown`), so nothing is indexed twice. ``q`` and
``fq`` take what harvesters send (terms, ``field:value``, quoted values, ``AND``); anything Solr
would do beyond that is refused as a search error rather than answered wrongly.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

import orjson

from kizuna.catalogs.listing import Datasets, Listing, Site
from kizuna.errors import CatalogParameterInvalid, CatalogSearchInvalid, ResourceNotFound

CKAN_VERSION = "2.10.0"
MAX_ROWS = 1000
DEFAULT_SORT = "score desc, metadata_modified desc"
SORTABLE = {"name", "title_string", "metadata_modified", "metadata_created", "score"}
# Fields of q and fq, and what of a package each one matches.
FIELDS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "tags": lambda p: [t["name"] for t in p["tags"]],
    "organization": lambda p: [p["organization"]["name"]],
    "name": lambda p: [p["name"]],
    "id": lambda p: [p["id"]],
    "dataset_type": lambda p: [p["type"]],
    "title": lambda p: [p["title"]],
    "res_format": lambda p: [r["format"] for r in p["resources"]],
    "license_id": lambda p: [p["license_id"]],
    "metadata_modified": lambda p: [p["metadata_modified"]],
    "metadata_created": lambda p: [p["metadata_created"]],
    "text": lambda p: [p["title"], p["notes"], *(t["name"] for t in p["tags"])],
}
# What help_show answers (every envelope's "help" links to it): the parameters each action takes.
HELP = {
    "status_show": "Return the site's version and title. Takes no parameters.",
    "package_list": "Return the names of the site's datasets. :param limit: :param offset:",
    "package_show": "Return one dataset. :param id: the id or name of the dataset",
    "package_search": (
        "Search the datasets. :param q: terms or field:value, joined by AND, + or - before one"
        " :param fq: as q :param rows: at most 1000 (10) :param start: :param sort: name,"
        " title_string, metadata_created or metadata_modified with asc or desc"
    ),
    "organization_list": "Return the site's organizations. :param all_fields: dictionaries, not names",
    "organization_show": "Return one organization. :param id: :param include_datasets:",
    "tag_list": "Return the tags of the datasets. :param query: a part of the name :param all_fields:",
    "help_show": "Return the help of an action. :param name: the action's name",
}
_NAMESPACE = uuid.UUID("6f1c1b8e-58a4-4e84-9a8e-0b5c2d7f7c1a")  # of the node's CKAN ids
_TOKEN = re.compile(r'\s*([+-]?)(?:([A-Za-z_]+):)?("(?:[^"\\]|\\.)*"|\[[^\]]*\]|[^\s"]+)')
_RANGE = re.compile(r"\[\s*(\S+)\s+TO\s+(\S+)\s*\]")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z?")
TIMES = ("metadata_modified", "metadata_created")


# What another site built on these packages adds to each (CADDE's catalog items): the package
# and the dataset record it was made of, to the package as that site shows it.
Extend = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def ckan_id(*parts: str) -> str:
    """A stable UUID for a record (CKAN ids are UUIDs; harvesters key on them)."""
    return str(uuid.uuid5(_NAMESPACE, "\x00".join(parts)))


def munge_name(text: str) -> str:
    """A CKAN name (2-100 of ``a-z0-9-_``) from an id or a title, as CKAN's munge does."""
    name = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")[:100]
    return name if len(name) >= 2 else (name + "--")[:2]


def ckan_time(iso: str) -> str:
    """ISO 8601 as CKAN writes timestamps: UTC without an offset, microseconds."""
    stamp = iso.removesuffix("Z")
    head, _, fraction = stamp.partition(".")
    return f"{head}.{(fraction + '000000')[:6]}"


class CkanActions:
    """The CKAN actions over the node's catalog; each takes the action's parameters (a query
    string's or a JSON body's members) and returns its ``result``."""

    def __init__(self, catalog: Datasets, site: Site, extend: Extend | None = None) -> None:
        self.catalog = catalog
        self.site = site
        self.extend = extend
        self.actions: dict[str, Callable[[Mapping[str, Any]], Awaitable[Any]]] = {
            "status_show": self.status_show,
            "package_list": self.package_list,
            "package_show": self.package_show,
            "package_search": self.package_search,
            "organization_list": self.organization_list,
            "organization_show": self.organization_show,
            "tag_list": self.tag_list,
            "help_show": self.help_show,
        }

    # -- the records ----------------------------------------------------------------------------

    async def packages(self) -> list[dict[str, Any]]:
        """Every dataset as a package, by name (CKAN's order of package_list)."""
        found = []
        for dataset in await self.catalog.list():
            package = self.package(self.site.describe(dataset))
            found.append(self.extend(package, dataset) if self.extend else package)
        return sorted(found, key=lambda p: p["name"])

    def organization(self) -> dict[str, Any]:
        publisher = self.site.publisher
        return {
            "id": ckan_id("organization", publisher.participant_id),
            "name": munge_name(publisher.name),
            "title": publisher.name,
            "type": "organization",
            "description": f"The data-space node {publisher.participant_id}.",
            "image_url": "",
            "created": None,
            "is_organization": True,
            "approval_status": "approved",
            "state": "active",
        }

    def package(self, listing: Listing) -> dict[str, Any]:
        package_id = ckan_id("package", listing.id)
        created = ckan_time(listing.created)
        organization = self.organization()
        tags = [
            {
                "display_name": keyword,
                "id": ckan_id("tag", keyword),
                "name": keyword,
                "state": "active",
                "vocabulary_id": None,
            }
            for keyword in listing.keywords
        ]
        resources = [
            {
                "cache_last_updated": None,
                "cache_url": None,
                "created": created,
                "datastore_active": False,
                "description": access.description,
                "format": access.service.format,
                "hash": "",
                "id": ckan_id("resource", listing.id, access.service.key),
                "last_modified": None,
                "metadata_modified": created,
                "mimetype": access.service.media_type,
                "mimetype_inner": None,
                "name": access.name,
                "package_id": package_id,
                "position": position,
                "resource_type": "api",
                "size": None,
                "state": "active",
                "url": access.url,
                "url_type": None,
            }
            for position, access in enumerate(listing.accesses)
        ]
        extras = {
            "dsp_dataset_id": listing.id,
            "entity_types": ",".join(listing.keywords),
            "odrl_policy": orjson.dumps(listing.offers).decode(),
        }
        if listing.tenant:
            extras["tenant"] = listing.tenant
        package = {
            "author": None,
            "author_email": None,
            "creator_user_id": None,
            "extras": [{"key": k, "value": v} for k, v in sorted(extras.items())],
            "groups": [],
            "id": package_id,
            "isopen": listing.is_open,
            "license_id": listing.license.id,
            "license_title": listing.license.title,
            "maintainer": None,
            "maintainer_email": None,
            "metadata_created": created,
            "metadata_modified": created,
            "name": munge_name(listing.id),
            "notes": listing.description,
            "num_resources": len(resources),
            "num_tags": len(tags),
            "organization": organization,
            "owner_org": organization["id"],
            "private": False,
            "relationships_as_object": [],
            "relationships_as_subject": [],
            "resources": resources,
            "state": "active",
            "tags": tags,
            "title": listing.title,
            "type": "dataset",
            "url": listing.access("dsp").url,
            "version": None,
        }
        if listing.license.url:
            package["license_url"] = listing.license.url
        return package

    # -- the actions ----------------------------------------------------------------------------

    async def status_show(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "ckan_version": CKAN_VERSION,
            "site_url": self.site.public_url,
            "site_description": f"The data-space node {self.site.publisher.participant_id}",
            "site_title": self.site.publisher.name,
            "error_emails_to": None,
            "locale_default": "en",
            "extensions": [],
        }

    async def package_list(self, params: Mapping[str, Any]) -> list[str]:
        limit = _int(params, "limit", None)
        offset = _int(params, "offset", 0) or 0
        names = [p["name"] for p in await self.packages()]
        return names[offset:] if limit is None else names[offset : offset + limit]

    async def package_show(self, params: Mapping[str, Any]) -> dict[str, Any]:
        wanted = _required(params, "id")
        for package in await self.packages():
            if wanted in (package["id"], package["name"], _extra(package, "dsp_dataset_id")):
                return package
        raise ResourceNotFound("Dataset not found")

    async def package_search(self, params: Mapping[str, Any]) -> dict[str, Any]:
        rows = min(_int(params, "rows", 10) or 0, MAX_ROWS)
        start = _int(params, "start", 0) or 0
        sort = _text(params, "sort") or DEFAULT_SORT
        terms = _terms(_text(params, "q")) + _terms(_text(params, "fq"))
        found = [p for p in await self.packages() if all(_matches(p, term) for term in terms)]
        return {
            "count": len(found),
            "facets": {},
            "results": _sorted(found, sort)[start : start + rows],
            "sort": sort,
            "search_facets": {},
        }

    async def organization_list(self, params: Mapping[str, Any]) -> list[Any]:
        organization = self.organization()
        if not _bool(params, "all_fields"):
            return [organization["name"]]
        return [
            {
                **organization,
                "display_name": organization["title"],
                "package_count": len(await self.packages()),
            }
        ]

    async def organization_show(self, params: Mapping[str, Any]) -> dict[str, Any]:
        wanted = _required(params, "id")
        organization = self.organization()
        if wanted not in (organization["id"], organization["name"]):
            raise ResourceNotFound("Organization not found")
        packages = await self.packages()
        shown = {
            **organization,
            "display_name": organization["title"],
            "package_count": len(packages),
            "extras": [],
            "groups": [],
            "tags": [],
            "users": [],
        }
        if _bool(params, "include_datasets"):
            shown["packages"] = packages
        return shown

    async def tag_list(self, params: Mapping[str, Any]) -> list[Any]:
        query = (_text(params, "query") or "").lower()
        names = sorted({t["name"] for p in await self.packages() for t in p["tags"]})
        names = [n for n in names if query in n.lower()]
        if not _bool(params, "all_fields"):
            return names
        return [{"display_name": n, "id": ckan_id("tag", n), "name": n, "vocabulary_id": None} for n in names]

    async def help_show(self, params: Mapping[str, Any]) -> str:
        name = _required(params, "name")
        if name not in HELP:
            raise ResourceNotFound(f"Action function not found: {name}")
        return HELP[name]


# -- parameters -------------------------------------------------------------------------------------


def _text(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None or isinstance(value, str):
        return value
    raise CatalogParameterInvalid(name, f"{name} must be a string")


def _required(params: Mapping[str, Any], name: str) -> str:
    value = _text(params, name)
    if not value:
        raise CatalogParameterInvalid(name, "Missing value")
    return value


def _int(params: Mapping[str, Any], name: str, default: int | None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value) if not isinstance(value, bool | float) else None
    except ValueError:
        number = None
    if number is None or number < 0:
        raise CatalogParameterInvalid(
            name, "Invalid integer" if number is None else "Must be a natural number"
        )
    return number


def _bool(params: Mapping[str, Any], name: str) -> bool:
    """CKAN's asbool: true, yes, on, 1 (any case) and JSON true."""
    value = params.get(name, False)
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "yes", "on", "1")


def _extra(package: dict[str, Any], key: str) -> str | None:
    return next((e["value"] for e in package["extras"] if e["key"] == key), None)


# -- search -----------------------------------------------------------------------------------------


class Term(NamedTuple):
    """One term of a search: ``value`` in ``field`` (or, for a range, between ``low`` and
    ``high``), which must hold, or must not (``negated``)."""

    field: str
    value: str
    negated: bool = False
    low: str | None = None
    high: str | None = None


def _terms(query: str | None) -> list[Term]:
    """``q`` or ``fq`` as terms that must all hold: terms joined by spaces or ``AND``, ``+``
    (must, as harvesters write it) or ``-`` (must not) before one, a quoted value for spaces,
    ``[low TO high]`` (``*`` open) on the two time fields; a bare term is ``text``."""
    if not query or query.strip() in ("*:*", "*"):
        return []
    terms: list[Term] = []
    position = 0
    while position < len(query.rstrip()):
        match = _TOKEN.match(query, position)
        if match is None:
            raise CatalogSearchInvalid(f"Cannot read the search {query!r}")
        position = match.end()
        sign, field, value = match.group(1), match.group(2) or "text", match.group(3)
        if field not in FIELDS:
            raise CatalogSearchInvalid(f"Unknown search field {field!r} (known: {', '.join(sorted(FIELDS))})")
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elif value.startswith("["):
            terms.append(_range(field, value, sign == "-"))
            continue
        elif value == "AND" and not sign and match.group(2) is None:
            continue
        elif value in ("OR", "NOT") or value.startswith(("(", "{")):
            raise CatalogSearchInvalid(f"Only terms joined by AND are supported, not {value!r}")
        terms.append(Term(field, value, sign == "-"))
    return terms


def _range(field: str, text: str, negated: bool) -> Term:
    """``[2026-01-01T00:00:00Z TO *]``, what harvesters ask of ``metadata_modified`` to fetch
    only what changed since their last run; times compare as CKAN writes them."""
    bounds = _RANGE.fullmatch(text)
    if (
        field not in TIMES
        or bounds is None
        or not all(b == "*" or _TIME.fullmatch(b) for b in bounds.groups())
    ):
        raise CatalogSearchInvalid(f"Ranges are [time TO time] on {' or '.join(TIMES)}, not {field}:{text}")
    low, high = (None if b == "*" else ckan_time(b) for b in bounds.groups())
    return Term(field, text, negated, low, high)


def _matches(package: dict[str, Any], term: Term) -> bool:
    """A ``text`` term is found inside a value (case-insensitive, as CKAN's stemmed text
    roughly is); a fielded term equals one (``*`` matches any); a range holds its values."""
    values = FIELDS[term.field](package)
    if term.field == "text":
        found = any(term.value.lower() in v.lower() for v in values)
    elif term.value.startswith("["):
        found = any(
            (term.low is None or term.low <= v) and (term.high is None or v <= term.high) for v in values
        )
    else:
        found = term.value == "*" or term.value in values
    return found != term.negated


def _sorted(packages: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    """``field asc|desc`` clauses, comma-separated; ``score`` (no ranking here) keeps the order."""
    keys: list[tuple[str, bool]] = []
    for clause in sort.split(","):
        field, _, direction = clause.strip().partition(" ")
        direction = direction.strip() or "asc"
        if field not in SORTABLE or direction not in ("asc", "desc"):
            raise CatalogSearchInvalid(f"Cannot sort by {clause.strip()!r}")
        keys.append((field, direction == "desc"))
    ordered = list(packages)
    for field, descending in reversed(keys):
        if field == "score":
            continue
        key = "title" if field == "title_string" else field
        ordered.sort(key=lambda p, k=key: str(p[k]).lower(), reverse=descending)
    return ordered
