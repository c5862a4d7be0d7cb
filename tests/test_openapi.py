"""``GET /openapi.json`` describes every route the node serves, and the node keeps to it.

The description table (kizuna/openapi/operations.py) and the app's routes must match both ways,
and the document must be valid OpenAPI 3.1.
"""

from __future__ import annotations

import tempfile

import pytest
from openapi_spec_validator import validate
from starlette.testclient import TestClient

from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.openapi.document import build, undescribed, unrouted


@pytest.fixture(scope="module")
def routes() -> list:
    """The routes of an app that is never started (its store is never opened)."""
    app = create_app(Settings(store=f"sqlite:///{tempfile.gettempdir()}/kizuna-openapi-routes-unused.db"))
    return app.routes


def test_every_route_is_described(routes: list) -> None:
    missing = undescribed(routes)
    assert not missing, f"routes without a description in kizuna/openapi/operations.py: {missing}"


def test_every_description_has_a_route(routes: list) -> None:
    stale = unrouted(routes)
    assert not stale, f"descriptions in kizuna/openapi/operations.py of no route: {stale}"


def test_the_document_is_valid_openapi_3_1(routes: list) -> None:
    document = build(routes)
    validate(document)
    assert document["openapi"] == "3.1.0"
    entity = document["paths"]["/ngsi-ld/v1/entities/{entity_id}"]["get"]
    assert {"200", "400", "404", "406"} <= entity["responses"].keys()
    problem = entity["responses"]["404"]["content"]["application/json"]["schema"]
    assert problem == {"$ref": "#/components/schemas/ProblemDetails"}


def test_the_document_is_public_and_built_once(secured: TestClient) -> None:
    """Served without credentials on a node that wants them: it describes, it holds no data."""
    assert secured.get("/management/v1/datasets").status_code == 401
    first = secured.get("/openapi.json")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/json"
    assert "/ngsi-ld/v1/entities" in first.json()["paths"]
    assert secured.get("/openapi.json").content == first.content
