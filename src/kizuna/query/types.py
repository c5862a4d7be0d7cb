"""Entity type selections of clause 4.17 (``type=A,B;C``): AST, evaluation, parser.

A plain list of types is also what a store answers from its type index
(:meth:`TypeExpr.as_simple_list`); an expression with ``;`` is evaluated on the entity.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from kizuna.query.grammar import LogicParser, Scanner, parse_token


class TypeExpr(ABC):
    __slots__ = ()

    @abstractmethod
    def names(self) -> set[str]: ...

    @abstractmethod
    def resolve(self, expand: Callable[[str], str]) -> TypeExpr: ...

    @abstractmethod
    def matches(self, types: list[str]) -> bool: ...

    def as_simple_list(self) -> list[str] | None:
        """The types when the expression is a plain OR of names (an index lookup), else None."""
        return None


@dataclass(frozen=True, slots=True)
class TypeName(TypeExpr):
    name: str

    def names(self) -> set[str]:
        return {self.name}

    def resolve(self, expand: Callable[[str], str]) -> TypeName:
        return TypeName(expand(self.name))

    def matches(self, types: list[str]) -> bool:
        return self.name in types

    def as_simple_list(self) -> list[str] | None:
        return [self.name]


@dataclass(frozen=True, slots=True)
class TypeAnd(TypeExpr):
    terms: tuple[TypeExpr, ...]

    def names(self) -> set[str]:
        return set().union(*(term.names() for term in self.terms))

    def resolve(self, expand: Callable[[str], str]) -> TypeAnd:
        return TypeAnd(tuple(term.resolve(expand) for term in self.terms))

    def matches(self, types: list[str]) -> bool:
        return all(term.matches(types) for term in self.terms)


@dataclass(frozen=True, slots=True)
class TypeOr(TypeExpr):
    terms: tuple[TypeExpr, ...]

    def names(self) -> set[str]:
        return set().union(*(term.names() for term in self.terms))

    def resolve(self, expand: Callable[[str], str]) -> TypeOr:
        return TypeOr(tuple(term.resolve(expand) for term in self.terms))

    def matches(self, types: list[str]) -> bool:
        return any(term.matches(types) for term in self.terms)

    def as_simple_list(self) -> list[str] | None:
        lists = [term.as_simple_list() for term in self.terms]
        if any(names is None for names in lists):
            return None
        return list(dict.fromkeys(name for names in lists for name in names or ()))


_TYPE_NAME = re.compile(r"[^,;|()\s]+")


def _parse_type_term(sc: Scanner) -> TypeExpr:
    return TypeName(parse_token(sc, _TYPE_NAME, "an entity type name"))


def parse_type_expr(text: str) -> TypeExpr:
    """Parse an entity type selection of clause 4.17; ``,`` is an OR like ``|``, ``;`` binds tighter."""
    return LogicParser("type", text, _parse_type_term, TypeAnd, TypeOr, ("|", ",")).parse()
