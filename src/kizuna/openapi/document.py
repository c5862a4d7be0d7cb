"""The OpenAPI 3.1 document: the app's route table joined with the descriptions of
:mod:`~kizuna.openapi.operations`.

The paths come from the app itself (every Route, through every Mount), so the document names
the routes the node serves and no others; a route without a description is left out here and
named by ``tests/test_openapi.py``, as is a description without a route.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from kizuna import __version__
from kizuna.openapi.operations import APIS, JSON, Api, Content, Operation
from kizuna.openapi.schemas import Schema, component_schemas, error_types_by_status, ref

PATH = "/openapi.json"
CONVERTER = re.compile(r"\{(\w+):\w+\}")  # Starlette's {name:path}: OpenAPI knows only {name}
PARAMETER = re.compile(r"\{(\w+)\}")
QUERY_SCHEMAS: dict[str, Schema] = {
    **{name: {"type": "integer", "minimum": 0} for name in ("limit", "offset", "rows", "start")},
    "lastN": {"type": "integer", "minimum": 1},
    **{name: {"type": "boolean"} for name in ("details", "deleteAll", "reload", "local", "count")},
}
HEADERS: dict[str, Schema] = {
    "NGSILD-Tenant": {"description": "The tenant (clause 4.14); none: the default tenant."},
    "Link": {"description": 'The @context of a JSON body or of the names in a query: <url>; rel="..."'},
    "Fiware-Service": {"description": "The tenant, as NGSI v2 names it."},
    "Fiware-ServicePath": {"description": "Only the root (/) is served."},
    "Kizuna-Purpose": {"description": "The purpose of a pull, if the agreement's policy asks for one."},
    "x-cadde-resource-url": {"description": "The dataset's resource URL (its CADDE catalog item)."},
    "x-cadde-resource-api-type": {"description": "api/ngsi: the only one served."},
    "x-cadde-options": {"description": "CADDE's options, as `name:value` pairs."},
    "Last-Event-ID": {"description": "The id of the last change a reconnecting stream saw."},
}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
}
ANYONE_OR_CREDENTIALS = [{}, {"bearer": []}, {"apiKey": []}]  # anonymous sees what the public may


def walk(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, Route]]:
    """Every Route of ``routes`` with its full path template, through Mounts at any depth."""
    for route in routes:
        if isinstance(route, Mount):
            yield from walk(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            yield prefix + route.path, route


def endpoints(routes: Sequence[BaseRoute]) -> Iterator[tuple[str, str]]:
    """Every (method, path template) of ``routes`` (HEAD, which Starlette adds to every GET,
    is left implicit)."""
    for template, route in walk(routes):
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            yield method, template


def openapi_path(template: str) -> str:
    return CONVERTER.sub(r"{\1}", template)


def key(method: str, template: str) -> str:
    return f"{method} {openapi_path(template)}"


def descriptions() -> dict[str, tuple[Api, Operation]]:
    """Every description by its key, each API root's paths made absolute."""
    found: dict[str, tuple[Api, Operation]] = {}
    for api, operations in APIS:
        for relative, operation in operations.items():
            method, _, path = relative.partition(" ")
            full = f"{method} {api.prefix}{path}"
            assert full not in found, f"{full} is described twice"
            found[full] = (api, operation)
    return found


def undescribed(routes: Sequence[BaseRoute]) -> list[str]:
    known = descriptions()
    return sorted({key(*e) for e in endpoints(routes)} - known.keys())


def unrouted(routes: Sequence[BaseRoute]) -> list[str]:
    return sorted(descriptions().keys() - {key(*e) for e in endpoints(routes)})


def _content(content: Content) -> dict[str, Any]:
    return {media: {"schema": ref(schema)} for media, schema in content.items()}


def _answer(status: int, content: Content | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": HTTPStatus(status).phrase}
    if content:
        answer["content"] = _content(content)
    elif status == 201:
        answer["headers"] = {"Location": {"description": "The new resource", "schema": {"type": "string"}}}
    return answer


def _refusal(status: int, content: Content) -> dict[str, Any]:
    types = error_types_by_status().get(status)
    named = f" ({', '.join(types)})" if types else ""
    return {"description": HTTPStatus(status).phrase + named, "content": _content(content)}


def _parameters(api: Api, operation: Operation, path: str) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in PARAMETER.findall(path)
    ]
    parameters += [
        {"name": name, "in": "query", "schema": QUERY_SCHEMAS.get(name, {"type": "string"})}
        for name in sorted(operation.query)
    ]
    headers = (*api.headers, *operation.headers)
    parameters += [{"$ref": f"#/components/parameters/{name}"} for name in headers]
    return parameters


def operation_object(api: Api, operation: Operation, path: str) -> dict[str, Any]:
    statuses = set(api.errors) | set(operation.errors)
    if operation.body is not None:
        statuses |= api.body_errors
    responses = {str(s): _answer(s, c) for s, c in sorted(operation.answers.items())}
    responses |= {str(s): _refusal(s, api.error) for s in sorted(statuses - operation.answers.keys())}
    described: dict[str, Any] = {"tags": [api.tag], "summary": operation.summary}
    parameters = _parameters(api, operation, path)
    if parameters:
        described["parameters"] = parameters
    if operation.body is not None:
        described["requestBody"] = {"required": operation.body_required, "content": _content(operation.body)}
    described["responses"] = responses
    described["security"] = ANYONE_OR_CREDENTIALS if api.secured else []
    return described


def build(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    known = descriptions()
    paths: dict[str, dict[str, Any]] = {}
    for method, template in sorted(set(endpoints(routes)), key=lambda e: (e[1], e[0])):
        found = known.get(key(method, template))
        if found is not None and "//" not in template:  # see operations._refused
            path = openapi_path(template)
            paths.setdefault(path, {})[method.lower()] = operation_object(*found, path)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kizuna",
            "version": __version__,
            "description": "An NGSI-LD context broker and Dataspace Protocol connector: every API it serves.",
        },
        "tags": [{"name": api.tag} for api, _ in APIS],
        "paths": paths,
        "components": {
            "schemas": component_schemas(),
            "parameters": {
                name: {"name": name, "in": "header", "schema": {"type": "string"}, **described}
                for name, described in HEADERS.items()
            },
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


class OpenApiRoute(Route):
    """``GET /openapi.json``: built from the app's routes at the first request, when every route
    is in place, and then served from memory."""

    def __init__(self) -> None:
        self._document: bytes | None = None
        super().__init__(PATH, self.serve, methods=["GET"])

    async def serve(self, request: Request) -> Response:
        if self._document is None:
            self._document = orjson.dumps(build(request.app.routes))
        return Response(self._document, media_type=JSON)
