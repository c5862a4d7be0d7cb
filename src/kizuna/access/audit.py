"""The audit trail: every refusal and every change of who may do what, kept in the store.

Operators need to answer "who was refused what, and who changed the rights" long after the
request log has rotated, so the events live in the store, outside ``--history-retention``.
Refusals are recorded where requests are answered (:mod:`kizuna.middleware.audit`), so that no
route can forget one; changes are recorded by the services that make them (permissions, API keys,
datasets, agreements).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kizuna.access.subject import Subject
from kizuna.store import AuditEvent, Store

log = logging.getLogger("kizuna.audit")

DENIED = "denied"
DONE = "done"


def subject_name(subject: Subject | str | None) -> str:
    """How the trail names a subject: its id, "" for the anonymous public."""
    if isinstance(subject, Subject):
        return subject.id or ""
    return subject or ""


class AuditTrail:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def record(
        self,
        subject: Subject | str | None,
        tenant: str,
        operation: str,
        target: str,
        outcome: str = DONE,
        detail: str = "",
    ) -> None:
        event = AuditEvent(self.clock(), subject_name(subject), tenant, operation, target, outcome, detail)
        try:
            await self.store.append_audit(event)
        except Exception:
            # The answer (a refusal, or a change already committed) stands; the log keeps the event.
            log.exception("audit event not stored: %s", event)

    async def read(
        self,
        *,
        subject: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[AuditEvent], int]:
        return await self.store.read_audit(
            subject=subject, tenant=tenant, since=since, limit=limit, offset=offset
        )
