"""The HTTP edge of CADDE: the provider connector API under ``/cadde/api/v4`` (its headers in,
CADDE's error shape out) and the consumer's calls under ``/management/v1/cadde``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kizuna import paths
from kizuna.cadde.consumer import CaddeConsumer
from kizuna.cadde.provider import API_NGSI, CONTRACT_TYPE, CaddeProvider, parse_options
from kizuna.dataspace.routes import optional_string, plain_json, string_member
from kizuna.errors import BadRequestData, DspError, NgsiLdError, ResourceNotFound

JSON = "application/json"
AnswersCatalog = Callable[[Request], Awaitable[bool]]


class CaddeProviderApi:
    """``GET /cadde/api/v4/catalog`` and ``GET /cadde/api/v4/file``, as CADDE's provider
    connector answers them."""

    def __init__(self, provider: CaddeProvider, answers_catalog: AnswersCatalog) -> None:
        self.provider = provider
        self.answers_catalog = answers_catalog

    async def catalog(self, request: Request) -> Response:
        """The detail search: every query parameter goes to package_search, as CADDE passes them
        to its detail CKAN; a trusted participant is shown the datasets under contracts too."""
        try:
            result = await self.provider.search(
                dict(request.query_params), participant=await self.answers_catalog(request)
            )
        except NgsiLdError as error:
            return cadde_error(error)
        help_url = f"{self.provider.site.public_url}{paths.CKAN_ACTIONS}/help_show?name=package_search"
        return _json({"help": help_url, "success": True, "result": result})

    async def file(self, request: Request) -> Response:
        """The data exchange: the dataset's NGSI-LD data, with the contract's headers."""
        headers = request.headers
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        resource_url = headers.get("x-cadde-resource-url")
        try:
            fetched = await self.provider.fetch(
                resource_url,
                headers.get("x-cadde-resource-api-type"),
                token or None,
                parse_options(headers.get("x-cadde-options")),
            )
        except NgsiLdError as error:
            return cadde_error(error)
        name = urlsplit(resource_url or "").path.rstrip("/").rsplit("/", 1)[-1] or "entities"
        answer = {
            "x-cadde-provenance": "",  # the node keeps no CADDE provenance records
            "x-cadde-provenance-management-service-url": "",
            "x-cadde-contract-id": fetched.contract_id,
            "x-cadde-contract-type": CONTRACT_TYPE if fetched.contract_id else "",
            "x-cadde-contract-management-service-url": fetched.contract_url,
            "Content-Disposition": f"attachment; filename={name}.json",
        }
        if fetched.access_count is not None:
            answer["Kizuna-Access-Count"] = str(fetched.access_count)
        return _json(fetched.entities, headers=answer)

    def routes(self) -> list[BaseRoute]:
        return [
            Route(paths.CADDE + "/catalog", self.catalog, methods=["GET"]),
            Route(paths.CADDE + "/file", self.file, methods=["GET"]),
        ]


class CaddeConsumerApi:
    """``POST /management/v1/cadde/catalog`` and ``.../cadde/fetch``: node administrators search
    and read a CADDE provider connector through the node."""

    def __init__(self, consumer: CaddeConsumer) -> None:
        self.consumer = consumer

    async def catalog(self, request: Request) -> Response:
        body = await plain_json(request)
        params = _strings(body, "params")
        if body.get("q") is not None:
            params["q"] = string_member(body, "q")
        found = await self.consumer.search(
            string_member(body, "address"),
            params,
            sign_for=optional_string(body, "counterPartyAddress"),
            token=optional_string(body, "token"),
        )
        return _json(found)

    async def fetch(self, request: Request) -> Response:
        body = await plain_json(request)
        options = _strings(body, "options")
        if body.get("purpose") is not None:
            options["Kizuna-Purpose"] = string_member(body, "purpose")
        try:
            fetched = await self.consumer.fetch(
                string_member(body, "address"),
                string_member(body, "resourceUrl"),
                api_type=optional_string(body, "apiType") or API_NGSI,
                options=options,
                token=optional_string(body, "token"),
                transfer_id=optional_string(body, "transferId"),
            )
        except DspError as error:  # an unknown transfer
            raise ResourceNotFound(error.detail) from None
        return Response(fetched.content, status_code=fetched.status, headers=fetched.headers)

    def routes(self) -> list[BaseRoute]:
        """Relative to ``/management/v1``."""
        return [
            Route("/cadde/catalog", self.catalog, methods=["POST"]),
            Route("/cadde/fetch", self.fetch, methods=["POST"]),
        ]


def cadde_error(error: NgsiLdError) -> Response:
    """CADDE's ErrorResponse: ``detail`` and ``status``, with the ProblemDetails ``title`` and
    ``type`` the node gives every error."""
    problem = error.to_problem()
    body = {
        "detail": error.detail or error.title,
        "status": error.status,
        "title": problem.get("title", ""),
        "type": problem.get("type", ""),
    }
    return _json(body, error.status, headers=error.headers or None)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def _strings(body: dict[str, Any], name: str) -> dict[str, str]:
    value = body.get(name) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadRequestData(f"{name} must be an object of strings")
    return dict(value)
