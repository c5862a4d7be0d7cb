"""``GET /console``: the console's page, its static files and the bundled district outlines.

The console has no backend of its own: the page is the same for everyone and reads and writes
only through the node's public APIs (NGSI-LD, temporal, management) with the user's credentials,
so it can show and change no more than the user could with curl. What the page needs to know of
the node (tiles, issuer, client id) is written into ``<meta>`` tags, since the Content-Security-
Policy forbids inline scripts.
"""

from __future__ import annotations

import html
from functools import cache
from importlib.resources import files
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from kizuna import paths
from kizuna.config import Settings
from kizuna.sim import geography

STATIC = files("kizuna.console").joinpath("static")


def _origin(url: str | None) -> str:
    """The scheme and host of ``url`` for a CSP source list, or "" without one."""
    if not url:
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


@cache
def _template() -> str:
    return STATIC.joinpath("index.html").read_text(encoding="utf-8")


@cache
def _districts() -> bytes:
    """The simulator's district outlines as GeoJSON: the map's background when no tile server
    is configured, so the console works on a node without Internet access."""
    features = [
        {
            "type": "Feature",
            "properties": {"name": d.name},
            "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in d.polygon]]},
        }
        for d in geography.districts()
    ]
    return orjson.dumps({"type": "FeatureCollection", "features": features})


class Console:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        issuer = settings.oidc_issuer if settings.auth == "oidc" else None
        self.meta = {
            "kizuna-tiles": settings.console_tiles or "",
            "kizuna-issuer": issuer or "",
            "kizuna-client-id": settings.console_client_id or "",
        }
        tiles, idp = _origin(settings.console_tiles), _origin(issuer)
        self.headers = {
            "Content-Security-Policy": "; ".join(
                [
                    "default-src 'self'",
                    "script-src 'self'",
                    "style-src 'self'",
                    f"img-src 'self' data: {tiles}".rstrip(),
                    f"connect-src 'self' {idp}".rstrip(),
                    "frame-ancestors 'none'",
                    "base-uri 'none'",
                    "form-action 'self'",
                ]
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }

    async def page(self, request: Request) -> Response:
        tags = "\n".join(
            f'<meta name="{name}" content="{html.escape(value)}">' for name, value in self.meta.items()
        )
        body = _template().replace("<!-- kizuna-meta -->", tags)
        return Response(body, media_type="text/html; charset=utf-8", headers=self.headers)

    async def districts(self, request: Request) -> Response:
        return Response(_districts(), media_type="application/geo+json", headers=self.headers)

    def routes(self) -> list[BaseRoute]:
        """At the root: ``/console`` itself is a page, which a Mount (``/console/...``) is not."""
        return [
            Route(paths.CONSOLE, self.page, methods=["GET"]),
            Route(f"{paths.CONSOLE}/districts.json", self.districts, methods=["GET"]),
            Mount(f"{paths.CONSOLE}/static", app=StaticFiles(directory=str(STATIC))),
        ]
