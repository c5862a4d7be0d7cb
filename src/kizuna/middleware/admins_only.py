"""Lets only node administrators through (the connector's management API, other subjects' rights).

Runs after :mod:`~kizuna.middleware.authentication`; the decision is the subject's own
``is_admin``, the same one every service asks.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from kizuna.access.subject import Subject
from kizuna.errors import AccessDenied, NotAuthenticated
from kizuna.problems import problem_response


class AdminsOnly:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            subject: Subject = scope["state"]["subject"]
            if not subject.administers_node:
                error = (
                    AccessDenied("Only administrators may use this API")
                    if subject.authenticated
                    else NotAuthenticated("This API needs an administrator's credentials")
                )
                await problem_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
