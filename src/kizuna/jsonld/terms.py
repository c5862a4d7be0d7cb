"""Compiled term maps: the hot-path form of a processed JSON-LD @context.

pyld processes each distinct @context once (with full JSON-LD 1.1 semantics); what the NGSI-LD
payloads need from it afterwards is only "term -> IRI" and back, which a dict lookup answers in
nanoseconds instead of the milliseconds a full pyld expansion or compaction costs per entity.
"""

from __future__ import annotations

from typing import Any

_KEYWORD_PREFIX = "@"


class TermMap:
    """Expansion and compaction of terms for one active context (core context always included)."""

    __slots__ = ("_compact_cache", "_inverse", "_keywords", "_prefixes", "_terms", "vocab")

    def __init__(self, active_context: dict[str, Any]) -> None:
        terms: dict[str, str] = {}
        prefixes: dict[str, str] = {}
        keywords: dict[str, str] = {}
        for term, definition in active_context.get("mappings", {}).items():
            if not definition or definition.get("reverse"):
                continue
            iri = definition.get("@id")
            if not isinstance(iri, str):
                continue
            if iri.startswith(_KEYWORD_PREFIX):
                keywords[term] = iri  # "id" -> "@id", "type" -> "@type"
                continue
            terms[term] = iri
            if definition.get("_prefix"):
                prefixes[term] = iri
        inverse: dict[str, str] = {}
        # JSON-LD term selection prefers the shortest, then lexicographically least, term.
        for term in sorted(terms, key=lambda t: (len(t), t)):
            inverse.setdefault(terms[term], term)
        self._terms = terms
        self._prefixes = prefixes
        self._keywords = keywords
        self._inverse = inverse
        self.vocab: str | None = active_context.get("@vocab")
        self._compact_cache: dict[str, str] = {}

    def expand(self, term: str) -> str:
        """Expand a term used as a property name or a vocabulary-relative @type value."""
        iri = self._terms.get(term)
        if iri is not None:
            return iri
        if term.startswith(_KEYWORD_PREFIX):
            return term
        keyword = self._keywords.get(term)
        if keyword is not None:
            return keyword
        prefix, sep, suffix = term.partition(":")
        if sep:
            base = self._prefixes.get(prefix)
            if base is not None and not suffix.startswith("//"):
                return base + suffix
            return term  # already an absolute IRI
        if self.vocab is not None:
            return self.vocab + term
        return term

    def compact(self, iri: str) -> str:
        """Compact an IRI to the term a client using this context would write."""
        cached = self._compact_cache.get(iri)
        if cached is not None:
            return cached
        term = self._inverse.get(iri)
        if term is None:
            term = self._compact_uncached(iri)
        if len(self._compact_cache) < 100_000:
            self._compact_cache[iri] = term
        return term

    def _compact_uncached(self, iri: str) -> str:
        vocab = self.vocab
        if vocab and iri.startswith(vocab):
            suffix = iri[len(vocab) :]
            if suffix and ":" not in suffix and suffix not in self._terms:
                return suffix
        best: tuple[str, str] | None = None
        for prefix, base in self._prefixes.items():
            if iri.startswith(base) and len(iri) > len(base):
                candidate = f"{prefix}:{iri[len(base) :]}"
                if best is None or (len(candidate), candidate) < (len(best[0]), best[0]):
                    best = (candidate, prefix)
        if best is not None and best[0] not in self._terms:
            return best[0]
        return iri
