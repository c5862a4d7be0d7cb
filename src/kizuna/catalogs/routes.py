"""The HTTP edge of the catalog formats: CKAN's Action API under ``/api/3/action`` (and
``/api/action``, which CKAN serves alike) and DCAT-AP under ``/catalog``.

Both publish the open datasets' metadata to anyone who asks, as a portal does, and every
dataset's to a caller the DSP catalog would answer (:class:`~kizuna.catalogs.listing.Shown`); the
data behind it stays behind the NGSI-LD permissions and DSP agreements
(docs/interop-catalogs.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kizuna import paths
from kizuna.catalogs import dcat_ap
from kizuna.catalogs.ckan import CkanActions
from kizuna.catalogs.listing import Datasets, Shown, Site
from kizuna.errors import (
    CatalogParameterInvalid,
    CatalogSearchInvalid,
    NgsiLdError,
    NotAcceptable,
    ResourceNotFound,
)
from kizuna.media import negotiate

CKAN_JSON = "application/json;charset=utf-8"


# Whether the DSP catalog would answer a request's sender (DataspaceApi.answers_catalog).
AnswersCatalog = Callable[[Request], Awaitable[bool]]


class CatalogApi:
    def __init__(self, catalog: Datasets, site: Site, answers_catalog: AnswersCatalog) -> None:
        self.catalog = catalog
        self.site = site
        self.answers_catalog = answers_catalog
        self.dcat = dcat_ap.CatalogDocuments(site)

    async def shown(self, request: Request) -> Shown:
        """The datasets this request's caller is shown (the one decision of every listing)."""
        return Shown(self.catalog, everything=await self.answers_catalog(request))

    async def ckan_action(self, request: Request) -> Response:
        """One action call, answered in CKAN's envelope with CKAN's status for each failure."""
        name = request.path_params["action"]
        action = CkanActions(await self.shown(request), self.site).actions.get(name)
        if action is None:
            return _ckan(f"Bad request - Action name not known: {name}", 400)
        envelope: dict[str, Any] = {
            "help": f"{self.site.public_url}{paths.CKAN_ACTIONS}/help_show?name={name}",
        }
        try:
            params = await _action_params(request)
        except ValueError as error:
            return _ckan(f"Bad request - JSON Error: {error}", 400)
        try:
            result = await action(params)
        except CatalogParameterInvalid as error:
            invalid = {"__type": "Validation Error", error.member: [error.detail]}
            envelope |= {"success": False, "error": invalid}
            return _ckan(envelope, 409)
        except CatalogSearchInvalid as error:
            message = f"Search Query is invalid: {error.detail}"
            envelope |= {"success": False, "error": {"__type": "Search Query Error", "message": message}}
            return _ckan(envelope, 400)
        except ResourceNotFound as error:
            message = f"Not found: {error.detail}"
            envelope |= {"success": False, "error": {"__type": "Not Found Error", "message": message}}
            return _ckan(envelope, 404)
        return _ckan(envelope | {"success": True, "result": result})

    async def dcat_catalog(self, request: Request) -> Response:
        header = request.headers.get("accept") or "*/*"
        media = negotiate(header, list(dcat_ap.SYNTAXES))
        if media is None:
            raise NotAcceptable(f"The catalog is served as {', '.join(dcat_ap.SYNTAXES)}, not {header}")
        body = await self.dcat.document(await self.shown(request), media)
        return Response(body, media_type=media, headers={"Vary": "Accept"})

    def routes(self) -> list[BaseRoute]:
        methods = ["GET", "POST"]  # CKAN takes a read-only action's parameters either way
        return [
            Route(paths.CKAN_ACTIONS + "/{action}", self.ckan_action, methods=methods),
            Route("/api/action/{action}", self.ckan_action, methods=methods),
            Route(paths.DCAT_CATALOG, self.dcat_catalog, methods=["GET"]),
        ]


async def _action_params(request: Request) -> dict[str, Any]:
    """A GET's query parameters, or a POST's JSON object (an empty body is no parameters)."""
    if request.method == "GET":
        return dict(request.query_params)
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = request.app.state.limits.parse(raw)
    except NgsiLdError as error:
        raise ValueError(error.detail) from None
    if not isinstance(body, dict):
        raise ValueError("the request data must be a JSON object")
    return body


def _ckan(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=CKAN_JSON)
