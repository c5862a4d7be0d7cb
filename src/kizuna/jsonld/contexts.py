"""Where @contexts come from, and their compilation into term maps.

Peers stall on this: a broker that fetches every @context URL on every request is only as fast
and as available as the slowest context server. Kizuna resolves contexts from, in order: the
bundled core context (every published core URL), the operator's context map, the contexts users
host on the node (``/jsonldContexts``), and a cache of guarded remote fetches (short timeout, size
cap, http(s) only, few redirects). A context that cannot be had fails fast with 503
``LdContextNotAvailable``. Each distinct @context value is processed by pyld once and then served
from a compiled :class:`TermMap`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from pyld import jsonld
from pyld.context_resolver import ContextResolver

from kizuna import paths
from kizuna.errors import BadRequestData, InvalidRequest, LdContextNotAvailable
from kizuna.jsonld.terms import TermMap
from kizuna.metrics import CONTEXT_CACHE_HITS, CONTEXT_CACHE_MISSES, CONTEXT_FETCH_FAILURES
from kizuna.outbound import UNREACHABLE, OutboundGate, summary
from kizuna.times import iso_millis

CORE_CONTEXT_URL = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
CORE_CONTEXT_VERSIONS = ("1.3", "1.4", "1.5", "1.6", "1.7", "1.8", "1.9")
CORE_CONTEXT_URLS = frozenset(
    [CORE_CONTEXT_URL]
    + [f"https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v{v}.jsonld" for v in CORE_CONTEXT_VERSIONS]
    + [f"http://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v{v}.jsonld" for v in CORE_CONTEXT_VERSIONS]
    + ["http://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"]
)
HOSTED_PATH = paths.NGSI_LD + paths.HOSTED_CONTEXTS + "/"
MAX_COMPILED = 1024
NEGATIVE_CACHE_SECONDS = 5.0
# Context URLs are often redirect services (w3id.org, purl.org): a few redirects are followed,
# each target checked by the outbound gate again, as the first was.
MAX_REDIRECTS = 3
IMPLICIT_PREFIX = "implicit-"

ContextValue = str | dict[str, Any] | list[Any] | None


def _load_core() -> dict[str, Any]:
    text = resources.files("kizuna.contexts").joinpath("ngsi-ld-core-context.jsonld").read_bytes()
    return orjson.loads(text)


@dataclass(slots=True)
class ContextRecord:
    """A context the node knows by URL: hosted by users, or cached from a remote server."""

    url: str
    document: dict[str, Any]
    kind: str  # "Hosted" | "Cached"
    local_id: str
    created_at: float = field(default_factory=time.time)
    last_usage: float | None = None
    owner: str | None = None  # the subject that hosted it (None: the node's, or from before owners)
    tenant: str = ""  # the tenant a hosted context was hosted in (cached ones are the node's)

    def describe(self, base_url: str) -> dict[str, Any]:
        info: dict[str, Any] = {
            "URL": self.url if self.kind == "Cached" else base_url + HOSTED_PATH + self.local_id,
            "localId": self.local_id,
            "kind": self.kind,
            "createdAt": iso_millis(self.created_at),
        }
        if self.last_usage is not None:
            info["lastUsage"] = iso_millis(self.last_usage)
        return info


class ContextRegistry:
    """Resolves and compiles @contexts; one per process."""

    def __init__(
        self,
        context_map: dict[str, dict[str, Any]] | None = None,
        *,
        fetch_timeout: float = 3.0,
        max_context_bytes: int = 1_000_000,
        gate: OutboundGate | None = None,
    ) -> None:
        self.core_document = _load_core()
        self._mapped = dict(context_map or {})
        self._records: dict[str, ContextRecord] = {}  # by URL
        self._by_local_id: dict[str, ContextRecord] = {}
        self._failures: dict[str, float] = {}
        self._compiled: OrderedDict[str, TermMap] = OrderedDict()
        self._fetch_timeout = fetch_timeout
        self._max_bytes = max_context_bytes
        self._gate = gate or OutboundGate()
        self._fetch_locks: dict[str, asyncio.Lock] = {}
        self.core = self._compile(None)

    # -- the document loader pyld sees: everything is already in memory -------------------------

    def _document(self, url: str) -> dict[str, Any] | None:
        if url in CORE_CONTEXT_URLS:
            return self.core_document
        record = self._records.get(url) or self._hosted_record(url)
        if record is None:
            mapped = self._mapped.get(url)
            if mapped is None:
                return None
            # Contexts from the operator's map are listed as cached, like fetched ones.
            record = ContextRecord(url, mapped, "Cached", _local_id_for(url))
            self._remember(record)
        record.last_usage = time.time()
        return record.document

    def _hosted_record(self, url: str) -> ContextRecord | None:
        _, sep, local_id = url.rpartition(HOSTED_PATH)
        if not sep:
            return None
        record = self._by_local_id.get(local_id)
        return record if record is not None and record.kind in ("Hosted", "ImplicitlyCreated") else None

    def _loader(self, url: str, options: Any = None) -> dict[str, Any]:
        doc = self._document(url)
        if doc is None:
            raise LdContextNotAvailable(f"@context {url} is not available")
        return {"contextUrl": None, "documentUrl": url, "document": doc, "tag": "static"}

    # -- resolution ------------------------------------------------------------------------------

    async def term_map(self, context: ContextValue) -> TermMap:
        """The compiled term map for a request's @context (the core context is always in force)."""
        if context is None or (isinstance(context, str) and context in CORE_CONTEXT_URLS):
            return self.core
        key = (
            context
            if isinstance(context, str)
            else orjson.dumps(context, option=orjson.OPT_SORT_KEYS).decode()
        )
        compiled = self._compiled.get(key)
        if compiled is not None:
            CONTEXT_CACHE_HITS.inc()
            self._compiled.move_to_end(key)
            if isinstance(context, str):
                self._document(context)  # marks the record as used
            return compiled
        CONTEXT_CACHE_MISSES.inc()
        await self._prefetch(context, depth=0)
        compiled = self._compile(context)
        self._compiled[key] = compiled
        if len(self._compiled) > MAX_COMPILED:
            self._compiled.popitem(last=False)
        return compiled

    def _compile(self, context: ContextValue) -> TermMap:
        options = {
            "documentLoader": self._loader,
            "processingMode": "json-ld-1.1",
            "base": "",
        }
        options["contextResolver"] = ContextResolver({}, self._loader)
        processor = jsonld.JsonLdProcessor()
        try:
            active = processor._get_initial_context(options)
            if context is not None:
                active = processor.process_context(active, context, options)
            active = processor.process_context(active, self.core_document["@context"], options)
        except jsonld.JsonLdError as exc:
            cause = _root_cause(exc)
            if isinstance(cause, LdContextNotAvailable):
                raise cause from None
            raise BadRequestData(f"Invalid @context: {exc.type}: {exc}".split("\n")[0]) from None
        except ValueError as exc:  # pyld's IRI resolution, e.g. a relative URL with no base
            raise BadRequestData(f"Invalid @context: {exc}") from None
        return TermMap(active)

    async def _prefetch(self, context: ContextValue, depth: int) -> None:
        """Bring every remote URL the context names (transitively) into the cache first,
        so that pyld's synchronous loader never blocks on the network."""
        if depth > 8:
            raise BadRequestData("@context nesting is too deep")
        if isinstance(context, str):
            if self._document(context) is None:
                doc = await self._fetch(context)
                await self._prefetch(doc.get("@context"), depth + 1)
        elif isinstance(context, list):
            for item in context:
                await self._prefetch(item, depth)
        elif isinstance(context, dict):
            imported = context.get("@import")
            if isinstance(imported, str):
                await self._prefetch(imported, depth + 1)
        elif context is not None:
            raise BadRequestData("@context must be a URL, an object or an array of them")

    async def _fetch(self, url: str) -> dict[str, Any]:
        if not url.startswith(("http://", "https://")):
            raise BadRequestData(f"@context {url!r} is neither a known context nor an http(s) URL")
        failed_at = self._failures.get(url)
        if failed_at is not None and time.monotonic() - failed_at < NEGATIVE_CACHE_SECONDS:
            raise LdContextNotAvailable(f"@context {url} could not be retrieved (recently failed)")
        lock = self._fetch_locks.setdefault(url, asyncio.Lock())
        async with lock:
            record = self._records.get(url)
            if record is not None:
                return record.document
            try:
                document = await self._download(url)
            except LdContextNotAvailable:
                CONTEXT_FETCH_FAILURES.inc()
                self._failures[url] = time.monotonic()
                raise
            finally:
                self._fetch_locks.pop(url, None)
            self._failures.pop(url, None)
            record = ContextRecord(url, document, "Cached", _local_id_for(url))
            self._remember(record)
            return document

    async def _download(self, url: str) -> dict[str, Any]:
        headers = {"Accept": "application/ld+json, application/json;q=0.9"}
        target = url
        try:
            async with self._gate.client(timeout=self._fetch_timeout) as client:
                for _ in range(MAX_REDIRECTS + 1):
                    async with client.stream("GET", target, headers=headers) as response:
                        if response.is_redirect:
                            location = response.headers.get("location", "")
                            target = str(response.url.join(location))
                            if not target.startswith(("http://", "https://")):
                                raise LdContextNotAvailable(f"@context {url} redirects to a non-http URL")
                            continue
                        if response.status_code != 200:
                            raise LdContextNotAvailable(
                                f"@context {url} answered HTTP {response.status_code}"
                            )
                        body = bytearray()
                        async for chunk in response.aiter_bytes():
                            body += chunk
                            if len(body) > self._max_bytes:
                                raise LdContextNotAvailable(
                                    f"@context {url} is larger than {self._max_bytes} bytes"
                                )
                        break
                else:
                    raise LdContextNotAvailable(f"@context {url} redirects too often")
        except UNREACHABLE as exc:
            raise LdContextNotAvailable(f"@context {url} could not be retrieved: {summary(exc)}") from None
        try:
            document = orjson.loads(bytes(body))
        except orjson.JSONDecodeError:
            raise LdContextNotAvailable(f"@context {url} is not valid JSON") from None
        if not isinstance(document, dict) or "@context" not in document:
            raise LdContextNotAvailable(f"@context {url} is not a JSON-LD context document")
        return document

    # -- user-managed contexts (clause 5.13) ------------------------------------------------------

    def _remember(self, record: ContextRecord) -> None:
        self._records[record.url] = record
        self._by_local_id[record.local_id] = record

    async def add_hosted(
        self, document: Any, local_id: str | None = None, *, owner: str | None = None, tenant: str = ""
    ) -> ContextRecord:
        """Host a user's context; its URL is this node's ``/jsonldContexts/{localId}``.

        URLs the context names are fetched now, so that a broken context is refused at once
        rather than on first use."""
        if not isinstance(document, dict) or "@context" not in document:
            raise InvalidRequest("A context to host must be a JSON object with an @context member")
        context = document["@context"]
        if not isinstance(context, (dict, list, str)):
            raise BadRequestData("@context of a hosted context must be an object, an array or a URL")
        await self._prefetch(context, depth=0)
        self._compile(context)
        local_id = local_id or uuid.uuid4().hex
        kind = "ImplicitlyCreated" if local_id.startswith(IMPLICIT_PREFIX) else "Hosted"
        record = ContextRecord(
            f"urn:kizuna:hosted:{local_id}", document, kind, local_id, owner=owner, tenant=tenant
        )
        self._remember(record)
        return record

    async def add_implicit(self, context: ContextValue) -> ContextRecord:
        """A context the node creates for a subscription whose @context is not a single URL
        (clause 5.13.2): it is served at ``/jsonldContexts/{localId}`` like a hosted one."""
        record = await self.add_hosted({"@context": context}, IMPLICIT_PREFIX + uuid.uuid4().hex)
        record.kind = "ImplicitlyCreated"
        return record

    def records(self, kind: str | None = None) -> list[ContextRecord]:
        return [r for r in self._by_local_id.values() if kind is None or r.kind == kind]

    def record(self, local_id_or_url: str) -> ContextRecord | None:
        """A known context by local id or URL; the core context answers for all its URLs."""
        if local_id_or_url in CORE_CONTEXT_URLS:
            return ContextRecord(local_id_or_url, self.core_document, "Cached", "ngsi-ld-core-context", 0.0)
        record = self._by_local_id.get(local_id_or_url) or self._records.get(local_id_or_url)
        if record is None:
            record = self._hosted_record(local_id_or_url)
        return record

    def forget(self, record: ContextRecord) -> None:
        self._records.pop(record.url, None)
        self._by_local_id.pop(record.local_id, None)
        self._compiled.clear()

    async def reload(self, record: ContextRecord) -> None:
        """Fetch a cached context again (DELETE ...?reload=true); on failure the old copy stays."""
        if record.url in CORE_CONTEXT_URLS:
            return
        mapped = self._mapped.get(record.url)
        if mapped is not None:
            record.document = mapped
        else:
            record.document = await self._download(record.url)
        self._compiled.clear()


def _local_id_for(url: str) -> str:
    return hashlib.sha1(url.encode()).hexdigest()[:20]


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while True:
        cause = getattr(seen, "cause", None) or seen.__cause__ or seen.__context__
        if cause is None or cause is seen:
            return seen
        seen = cause


def load_context_map(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read the operator's context map: remote URL -> local file (relative to the map's folder)."""
    map_path = Path(path)
    try:
        mapping = orjson.loads(map_path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SystemExit(f"kizuna: cannot read context map {map_path}: {exc}") from None
    if not isinstance(mapping, dict):
        raise SystemExit(f"kizuna: context map {map_path} must be a JSON object of URL -> file")
    documents: dict[str, dict[str, Any]] = {}
    for url, file in mapping.items():
        file_path = Path(file)
        if not file_path.is_absolute():
            file_path = map_path.parent / file_path
        try:
            documents[url] = orjson.loads(file_path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise SystemExit(f"kizuna: context map entry {url} -> {file_path}: {exc}") from None
    return documents
