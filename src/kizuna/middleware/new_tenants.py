"""Decides, before a write runs, whether it may create the tenant it names.

Tenants are created by the first write that names them (clause 4.14), so anyone could make
the node create any number of them: 3,000 subscription POSTs with distinct ``NGSILD-Tenant``
values made 3,000 tenants (on PostgreSQL, 3,000 schemas) for good, each walked by the periodic
loop from then on. Here a write naming a tenant the node does not hold is let through only for
a node administrator (every subject, with ``--auth none``) and only while the node holds fewer
than ``--max-tenants``. Writes to existing tenants and all reads pass untouched. Two writes
racing to create the last tenants allowed may pass the limit by as many as race.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from kizuna.access.subject import Subject
from kizuna.errors import AccessDenied, TooManyTenants
from kizuna.problems import problem_response
from kizuna.request_headers import header
from kizuna.store import Store

WRITES = frozenset({"POST", "PUT", "PATCH"})


class NewTenants:
    def __init__(self, app: ASGIApp, store: Store, max_tenants: int) -> None:
        self.app = app
        self.store = store
        self.max_tenants = max_tenants

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in WRITES:
            tenant = header(scope, "ngsild-tenant", "")
            if tenant and not await self.store.has_tenant(tenant):
                subject: Subject = scope["state"]["subject"]
                refusal: AccessDenied | TooManyTenants | None = None
                if not subject.is_admin(tenant):
                    # Worded as for a tenant the subject has no rights in: no tenant enumeration.
                    refusal = AccessDenied(f"The subject may not write to tenant {tenant!r}")
                elif len(await self.store.tenants()) >= self.max_tenants:
                    refusal = TooManyTenants(
                        f"Tenant {tenant!r} would be one more than the {self.max_tenants} this node may hold"
                        " (--max-tenants)"
                    )
                if refusal is not None:
                    await problem_response(refusal)(scope, receive, send)
                    return
        await self.app(scope, receive, send)
