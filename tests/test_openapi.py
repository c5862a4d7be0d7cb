"""``GET /openapi.json`` describes every route the node serves, and the node keeps to it.

The description table (kizuna/openapi/operations.py) and the app's routes must match both ways;
the document must be valid OpenAPI 3.1; and Schemathesis, driving a live node from the document
with a bounded number of examples per operation, must find no 5xx and no answer that the
document does not describe (status, media type, body schema). ``KIZUNA_OPENAPI_EXAMPLES`` sets
the examples per operation (default 5, which keeps the run under a minute on two cores), and
``KIZUNA_OPENAPI_PHASES=examples,coverage,fuzzing`` adds the coverage phase.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from openapi_spec_validator import validate
from starlette.routing import BaseRoute
from starlette.testclient import TestClient

from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.openapi import document
from kizuna.openapi.document import build, undescribed, unrouted

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
EXAMPLES = os.environ.get("KIZUNA_OPENAPI_EXAMPLES", "5")
# The coverage phase (boundary values, every undocumented method) doubles the run: opt in.
PHASES = os.environ.get("KIZUNA_OPENAPI_PHASES", "examples,fuzzing")
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "unsupported_method",  # a method the path does not take answers 405 (coverage phase)
    ]
)


@pytest.fixture(scope="module")
def routes() -> list[BaseRoute]:
    """The routes of an app that is never started (its store is never opened), with every
    optional API on."""
    unused = f"sqlite:///{tempfile.gettempdir()}/kizuna-openapi-routes-unused.db"
    app = create_app(Settings(store=unused, cadde="all"))
    return app.routes


def test_every_route_is_described(routes: list[BaseRoute]) -> None:
    missing = undescribed(routes)
    assert not missing, f"routes without a description in kizuna/openapi/operations.py: {missing}"


def test_every_description_has_a_route(routes: list[BaseRoute]) -> None:
    stale = unrouted(routes)
    assert not stale, f"descriptions in kizuna/openapi/operations.py of no route: {stale}"


def test_the_document_is_valid_openapi_3_1(routes: list[BaseRoute]) -> None:
    document = build(routes)
    validate(document)
    assert document["openapi"] == "3.1.0"
    entity = document["paths"]["/ngsi-ld/v1/entities/{entity_id}"]["get"]
    assert {"200", "400", "404", "406"} <= entity["responses"].keys()
    problem = entity["responses"]["404"]["content"]["application/json"]["schema"]
    assert problem == {"$ref": "#/components/schemas/ProblemDetails"}


def test_the_document_is_public_and_built_once(secured: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Served without credentials on a node that wants them: it describes, it holds no data."""
    assert secured.get("/management/v1/datasets").status_code == 401
    first = secured.get("/openapi.json")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/json"
    assert "/ngsi-ld/v1/entities" in first.json()["paths"]

    def build_again(routes: object) -> None:
        raise AssertionError("the document was built again")

    monkeypatch.setattr(document, "build", build_again)
    assert secured.get("/openapi.json").content == first.content


def run_schemathesis(schema: str, base: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The CLI, as a developer runs it (its exit status is the verdict); ``cwd`` takes the
    reports it leaves."""
    return subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            schema,
            "--url",
            base,
            "--checks",
            CHECKS,
            "--max-examples",
            EXAMPLES,
            "--phases",
            PHASES,
            "--generation-database",
            "none",
            "--seed",
            "1",
            "--no-color",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
    )


def test_schemathesis_finds_no_failure(serve: Callable[..., str], tmp_path: Path) -> None:
    """``--dsp-auth none`` lets the generated DSP messages past the signature check, into the
    protocol's handlers; a short stream lifetime ends each read of ``/console/events``."""
    base = serve(
        "--store",
        "sqlite:///kizuna.db",
        "--dsp-auth",
        "none",
        "--cadde",
        "all",
        "--console-stream-lifetime",
        "0.5",
    )
    result = run_schemathesis(base + "/openapi.json", base, tmp_path)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]


def test_schemathesis_fails_when_the_node_does_not_answer_as_described(
    serve: Callable[..., str], tmp_path: Path
) -> None:
    """The run above would pass vacuously if a failure did not fail it: here the document
    promises a member /health never answers."""
    base = serve("--store", "sqlite:///kizuna.db")
    document = httpx.get(base + "/openapi.json").json()
    document["components"]["schemas"]["Status"]["required"] = ["status", "uptime"]
    doctored = tmp_path / "doctored.json"
    doctored.write_bytes(orjson.dumps(document))
    result = run_schemathesis(str(doctored), base, tmp_path, "--include-path", "/health")
    assert result.returncode != 0, result.stdout
    assert "uptime" in result.stdout, result.stdout
