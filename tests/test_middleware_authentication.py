"""The authentication middleware: a subject on every request, 401 before any route runs."""

from __future__ import annotations

from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from access_helpers import FakeIdp, Keys, oidc, token
from kizuna.middleware.authentication import Authentication


def client(idp: FakeIdp) -> TestClient:
    async def whoami(request: Request) -> JSONResponse:
        subject = request.state.subject
        return JSONResponse({"id": subject.id, "roles": sorted(subject.roles)})

    app = Starlette(
        routes=[Route("/whoami", whoami)],
        middleware=[Middleware(Authentication, authenticator=oidc(Keys(), idp))],
    )
    return TestClient(app)


def test_the_subject_reaches_the_route() -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k"})
    http = client(FakeIdp(key))
    assert http.get("/whoami").json() == {"id": None, "roles": []}
    value = token(key, realm_access={"roles": ["kizuna-admin"]})
    got = http.get("/whoami", headers={"Authorization": f"Bearer {value}"})
    assert got.json() == {"id": "alice", "roles": ["kizuna-admin"]}


def test_invalid_credentials_answer_401_problem_details_with_a_challenge() -> None:
    got = client(FakeIdp()).get("/whoami", headers={"Authorization": "Bearer not-a-jwt"})
    assert got.status_code == 401
    assert got.headers["content-type"] == "application/json"
    assert got.headers["www-authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in got.headers["www-authenticate"]
    assert got.json()["type"] == "https://w3id.org/kizuna/errors/NotAuthenticated"
