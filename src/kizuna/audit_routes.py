"""``GET /management/v1/audit``: the audit trail for node administrators, oldest event first.

Filters: ``subject`` (exactly; "" is the anonymous public), ``tenant``, ``since`` (an ISO 8601
DateTime: events at or after it); pages with ``limit`` and ``offset``. The total number of
matching events is in the ``Kizuna-Results-Count`` header.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kizuna.access.audit import AuditTrail
from kizuna.errors import BadRequestData
from kizuna.ngsild import edge
from kizuna.store import AuditEvent
from kizuna.times import epoch, iso_millis

COUNT_HEADER = "Kizuna-Results-Count"


def render(event: AuditEvent) -> dict[str, str]:
    return {
        "at": iso_millis(event.at),
        "subject": event.subject,
        "tenant": event.tenant,
        "operation": event.operation,
        "target": event.target,
        "outcome": event.outcome,
        "detail": event.detail,
    }


class AuditApi:
    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    async def read(self, request: Request) -> Response:
        params = request.query_params
        page = edge.page_of(request)
        since = params.get("since")
        try:
            after = None if since is None else epoch(since)
        except ValueError:
            raise BadRequestData(f"since must be an ISO 8601 DateTime, not {since!r}") from None
        events, total = await self.trail.read(
            subject=params.get("subject"),
            tenant=params.get("tenant"),
            since=after,
            limit=page.limit,
            offset=page.offset,
        )
        return Response(
            orjson.dumps([render(e) for e in events]),
            media_type="application/json",
            headers={COUNT_HEADER: str(total)},
        )

    def routes(self) -> list[BaseRoute]:
        """Relative to ``/management/v1``, behind its administrators-only middleware."""
        return [Route("/audit", self.read, methods=["GET"])]
