"""The live view of a tenant's entities: each subject follows the store's change log from a
cursor, and sees only changes of entities it may read (the one policy decision). No HTTP here.

Each stream reads the log itself, from its own cursor, when the change feed says the tenant's
log grew: nothing is queued per stream, so a writer never waits for a reader and a slow reader
costs memory for nothing it has not read yet; it only falls behind, and resumes from the log.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from kizuna.access.policy import AccessPolicy, Guard
from kizuna.access.subject import Subject
from kizuna.errors import TooManyStreams
from kizuna.ngsild.tenants import require_tenant
from kizuna.store import Entity, EntityChange, Store

PAGE = 200  # changes read from the store per call
READS_KEPT = 64  # recent reads the streams of a process share (see ChangeStreams.changes)
COALESCE = 0.05  # seconds between a commit and the wake-up of its streams (see ChangeStreams.wake)


@dataclass(frozen=True, slots=True)
class Change:
    """One change as a stream shows it: ``entity`` as it is now (None for a delete)."""

    seq: int
    entity_id: str
    op: str
    at: float
    types: list[str]
    entity: Entity | None


@dataclass(frozen=True, slots=True)
class Reload:
    """The changes since the client's last one are no longer all kept (or its id is not of this
    store): it must read the entities afresh; the stream goes on from ``seq``."""

    seq: int


Event = Change | Reload


class ChangeStreams:
    """The streams of one process: how many are open (at most ``max_streams``), and the signal
    that wakes those of a tenant when its change log grew (:meth:`wake`, from the change feed)."""

    def __init__(self, store: Store, policy: AccessPolicy, *, max_streams: int) -> None:
        self.store = store
        self.policy = policy
        self.max_streams = max_streams
        self.open_streams = 0
        self._signals: dict[str, asyncio.Event] = {}
        self._due: set[str] = set()  # tenants whose streams are to be woken
        self._reads: dict[tuple[str, int], asyncio.Future[list[EntityChange]]] = {}

    def wake(self, tenant: str | None) -> None:
        """The change log of ``tenant`` (None: of any) grew. The streams are woken a moment
        later, once for all the commits of that moment: woken per commit, a node taking 500
        writes a second would read (and on PostgreSQL number) its log 500 times a second."""
        if tenant is None:
            self._release(None)
        elif tenant not in self._due:
            self._due.add(tenant)
            asyncio.get_running_loop().call_later(COALESCE, self._release, tenant)

    def _release(self, tenant: str | None) -> None:
        if tenant is None:
            signals, self._signals = list(self._signals.values()), {}
            self._due.clear()
        else:
            self._due.discard(tenant)
            signal = self._signals.pop(tenant, None)
            signals = [] if signal is None else [signal]
        for signal in signals:
            signal.set()

    def signal(self, tenant: str) -> asyncio.Event:
        """What :meth:`wake` sets next for ``tenant``; taken before a read, so that a change
        committed between the read and the wait is not slept through."""
        signal = self._signals.get(tenant)
        if signal is None:
            signal = self._signals[tenant] = asyncio.Event()
        return signal

    async def changes(self, tenant: str, after: int) -> list[EntityChange]:
        """The changes after ``after``, read once for all the streams at that point: ten tabs
        woken by one write would otherwise read the same rows ten times. A non-empty answer
        stays true (the numbers below its last are final), so it is kept for the next stream;
        an empty one is not (changes may come after it)."""
        key = (tenant, after)
        read = self._reads.get(key)
        if read is None:
            read = self._reads[key] = asyncio.ensure_future(self.store.entity_changes(tenant, after, PAGE))
            read.add_done_callback(lambda done: self._forget(key, done))
            while len(self._reads) > READS_KEPT:
                del self._reads[next(iter(self._reads))]
        return await asyncio.shield(read)  # one stream going does not cancel the others' read

    def _forget(self, key: tuple[str, int], read: asyncio.Future[list[EntityChange]]) -> None:
        """Drop a read that failed or found nothing (also when no stream waits for it anymore)."""
        if (read.cancelled() or read.exception() is not None or not read.result()) and self._reads.get(
            key
        ) is read:
            del self._reads[key]

    async def open(
        self, tenant: str, subject: Subject, types: frozenset[str] | None, last_seen: int | None
    ) -> ChangeStream:
        """A stream of the changes after ``last_seen`` (None: from now on) of entities of
        ``types`` (IRIs; None: any); :meth:`ChangeStream.close` it when done."""
        if self.open_streams >= self.max_streams:
            raise TooManyStreams(f"This node serves at most {self.max_streams} event streams at once")
        await require_tenant(self.store, tenant, subject)
        pruned, last = await self.store.change_bounds(tenant)
        stream = ChangeStream(self, tenant, subject, types, last if last_seen is None else last_seen)
        if last_seen is not None and not pruned <= last_seen <= last:
            stream.cursor = last
            stream.pending.append(Reload(last))
        self.open_streams += 1
        return stream


class ChangeStream:
    """One subject's view of one tenant's changes, from ``cursor`` on."""

    def __init__(
        self, streams: ChangeStreams, tenant: str, subject: Subject, types: frozenset[str] | None, cursor: int
    ) -> None:
        self.streams = streams
        self.tenant = tenant
        self.subject = subject
        self.types = types
        self.cursor = cursor
        self.pending: list[Event] = []
        self._closed = False

    async def next(self, wait: float) -> list[Event]:
        """The next events, oldest first; [] when none came within ``wait`` seconds."""
        if self.pending:
            events, self.pending = self.pending, []
            return events
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            signal = self.streams.signal(self.tenant)
            batch = await self.streams.changes(self.tenant, self.cursor)
            if batch:
                self.cursor = batch[-1].seq
                guard = await self.streams.policy.guard(self.tenant, self.subject)
                shown = [c for c in (self._shown(guard, change) for change in batch) if c is not None]
                if shown:
                    return shown
                continue
            left = deadline - loop.time()
            if left <= 0:
                return []
            try:
                async with asyncio.timeout(left):  # no task per wait, unlike wait_for on 3.11
                    await signal.wait()
            except TimeoutError:
                return []

    def _shown(self, guard: Guard, change: EntityChange) -> Change | None:
        """The change as the subject may see it, or None: another type, or an entity it may not
        read (for a delete: could not, before)."""
        if self.types is not None and self.types.isdisjoint(change.types):
            return None
        if change.entity is None:
            return None
        if not guard.unrestricted and guard.held(change.entity, change.owner) is None:
            return None
        entity = None if change.op == "delete" else change.entity
        return Change(change.seq, change.entity_id, change.op, change.at, change.types, entity)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.streams.open_streams -= 1
