"""TrailingSlash: one path with and without its trailing slash, never a redirect."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from kizuna.middleware.trailing_slash import TrailingSlash


async def where(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.url.path)


def client() -> TestClient:
    app = Starlette(routes=[Route("/entities", where, methods=["GET", "POST"]), Route("/", where)])
    app.router.redirect_slashes = False
    return TestClient(TrailingSlash(app), follow_redirects=False)


def test_a_trailing_slash_reaches_the_same_route_without_a_redirect() -> None:
    with client() as http:
        for method in ("GET", "POST"):
            answer = http.request(method, "/entities/")
            assert (answer.status_code, answer.text) == (200, "/entities")


def test_the_root_keeps_its_slash() -> None:
    with client() as http:
        assert http.get("/").text == "/"
