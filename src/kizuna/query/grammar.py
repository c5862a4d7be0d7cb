"""What the NGSI-LD query languages share: one scanner, the `;` / `|` grammar, the limits.

q, scopeQ and entity type selections are small recursive-descent parsers over the same
:class:`Scanner` and :class:`LogicParser`; pick/omit and orderBy use the scanner alone. Every
parse error is a ``BadRequestData`` whose detail names the language, the 0-based position and
what was expected: the ETSI conformance suite expects 400 BadRequestData for malformed
expressions, and one scanner building every error gives every detail the same shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Generic, TypeVar

from kizuna.errors import BadRequestData
from kizuna.patterns import compile_pattern

MAX_EXPRESSION_LENGTH = 8 * 1024
MAX_NESTING = 64


# -- scanning and the shared `;` / `|` grammar ---------------------------------------------------


class Scanner:
    """A cursor over one expression; it also builds the errors so that every detail has one shape."""

    __slots__ = ("language", "pos", "text")

    def __init__(self, language: str, text: str) -> None:
        self.language = language
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def take(self, token: str) -> bool:
        """Consume ``token`` if it comes next; blanks are not skipped (paths and values are contiguous)."""
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def take_match(self, pattern: re.Pattern[str]) -> str | None:
        found = pattern.match(self.text, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        return found.group()

    def fail(self, message: str, pos: int | None = None) -> BadRequestData:
        at = self.pos if pos is None else pos
        return BadRequestData(f"Invalid {self.language} at position {at}: {message}")

    def error(self, expected: str, pos: int | None = None) -> BadRequestData:
        at = self.pos if pos is None else pos
        found = repr(self.text[at]) if at < len(self.text) else "end of input"
        return self.fail(f"expected {expected}, found {found}", at)


Node = TypeVar("Node")


class LogicParser(Generic[Node]):
    """The grammar q, scopeQ and type expressions share: `;` (AND) binds tighter than `|` (OR)."""

    def __init__(
        self,
        language: str,
        text: str,
        term: Callable[[Scanner], Node],
        all_of: Callable[[tuple[Node, ...]], Node],
        any_of: Callable[[tuple[Node, ...]], Node],
        or_tokens: tuple[str, ...] = ("|",),
    ) -> None:
        if len(text) > MAX_EXPRESSION_LENGTH:
            raise BadRequestData(f"Invalid {language}: longer than {MAX_EXPRESSION_LENGTH} characters")
        self.scanner = Scanner(language, text)
        self.term = term
        self.all_of = all_of
        self.any_of = any_of
        self.or_tokens = or_tokens
        self.operators = " or ".join(repr(t) for t in (";", *or_tokens))

    def parse(self) -> Node:
        node = self._any(0)
        sc = self.scanner
        sc.skip_spaces()
        if sc.pos < len(sc.text):
            if sc.peek() == ")":
                raise sc.fail("unbalanced ')'")
            raise sc.error(f"{self.operators} or end of input")
        return node

    def _take(self, tokens: tuple[str, ...]) -> bool:
        self.scanner.skip_spaces()
        return any(self.scanner.take(token) for token in tokens)

    def _any(self, depth: int) -> Node:
        terms = [self._all(depth)]
        while self._take(self.or_tokens):
            terms.append(self._all(depth))
        return terms[0] if len(terms) == 1 else self.any_of(tuple(terms))

    def _all(self, depth: int) -> Node:
        terms = [self._primary(depth)]
        while self._take((";",)):
            terms.append(self._primary(depth))
        return terms[0] if len(terms) == 1 else self.all_of(tuple(terms))

    def _primary(self, depth: int) -> Node:
        sc = self.scanner
        sc.skip_spaces()
        if not sc.take("("):
            return self.term(sc)
        if depth >= MAX_NESTING:
            raise sc.fail(f"parentheses nested deeper than {MAX_NESTING} levels", sc.pos - 1)
        node = self._any(depth + 1)
        sc.skip_spaces()
        if not sc.take(")"):
            raise sc.error(f"')' or {self.operators}")
        return node


def parse_token(sc: Scanner, pattern: re.Pattern[str], expected: str) -> str:
    """The token ``pattern`` matches next, or the error saying what was ``expected`` there."""
    token = sc.take_match(pattern)
    if token is None:
        raise sc.error(expected)
    return token


# -- regular expressions -------------------------------------------------------------------------


def check_regex(pattern: str) -> str:
    """Validate a client regular expression (``~=`` operands, ``idPattern``) before it runs on data."""
    try:
        compile_pattern(pattern)
    except ValueError as exc:
        raise BadRequestData(f"Invalid regular expression {pattern[:80]!r}: {exc}") from None
    return pattern
