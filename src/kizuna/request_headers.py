"""A request header read straight off the ASGI scope.

Every request passes half a dozen layers that each want a header or two, most of them absent
(``Link``, ``NGSILD-Tenant``, ``Authorization``, ``Content-Length`` on a GET). Starlette's
``Headers.get`` answers an absent one by raising and catching a ``KeyError``; a retrieve paid
for nineteen of those. ASGI servers give header names in lower case, so one pass over the raw
list finds a header without building anything.
"""

from __future__ import annotations

from starlette.types import Scope


def header(scope: Scope, name: str, default: str | None = None) -> str | None:
    """The first value of header ``name`` (any case), or ``default``."""
    wanted = name.lower().encode("latin-1")
    for key, value in scope["headers"]:
        if key == wanted:
            return value.decode("latin-1")
    return default
