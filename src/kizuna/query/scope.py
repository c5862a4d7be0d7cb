"""scopeQ, the selection of entities by scope of clause 4.19: AST, evaluation, parser.

A scope is a path of levels (``/Duisburg/Zoo``); a scopeQ matches one level with ``+``, a
path and its descendants with ``#``, and combines patterns with the `;` / `|` grammar.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from kizuna.query.grammar import LogicParser, Scanner, parse_token
from kizuna.query.q import as_list


class ScopeExpr(ABC):
    __slots__ = ()

    @abstractmethod
    def matches(self, entity: dict[str, Any]) -> bool: ...


@dataclass(frozen=True, slots=True)
class ScopePattern(ScopeExpr):
    """``/a/+/c`` (``+`` is any one level), ``/a/#`` (``/a`` and its descendants), ``/#`` (any scope)."""

    levels: tuple[str, ...]
    descendants: bool = False

    def matches(self, entity: dict[str, Any]) -> bool:
        return any(
            self.matches_scope(scope) for scope in as_list(entity.get("scope")) if isinstance(scope, str)
        )

    def matches_scope(self, scope: str) -> bool:
        parts = [part for part in scope.split("/") if part]
        if len(parts) < len(self.levels) or (not self.descendants and len(parts) > len(self.levels)):
            return False
        return all(want == "+" or want == got for want, got in zip(self.levels, parts, strict=False))


@dataclass(frozen=True, slots=True)
class ScopeAnd(ScopeExpr):
    terms: tuple[ScopeExpr, ...]

    def matches(self, entity: dict[str, Any]) -> bool:
        return all(term.matches(entity) for term in self.terms)


@dataclass(frozen=True, slots=True)
class ScopeOr(ScopeExpr):
    terms: tuple[ScopeExpr, ...]

    def matches(self, entity: dict[str, Any]) -> bool:
        return any(term.matches(entity) for term in self.terms)


_SCOPE_LEVEL = re.compile(r"[^/;|,()#+\s]+")


def _parse_scope_term(sc: Scanner) -> ScopeExpr:
    if not sc.take("/"):
        raise sc.error("'/' starting a scope")
    levels: list[str] = []
    while True:
        if sc.take("#"):
            return ScopePattern(tuple(levels), descendants=True)
        if sc.take("+"):
            levels.append("+")
        else:
            levels.append(parse_token(sc, _SCOPE_LEVEL, "a scope level, '+' or '#'"))
        if not sc.take("/"):
            return ScopePattern(tuple(levels))


def parse_scope_q(text: str) -> ScopeExpr:
    """Parse a scopeQ of clause 4.19; ``,`` is an OR like ``|``, ``;`` binds tighter."""
    return LogicParser("scopeQ", text, _parse_scope_term, ScopeAnd, ScopeOr, ("|", ",")).parse()
