"""Callers' regular expressions (``idPattern``, ``q``'s ``~=``), run by RE2.

A backtracking engine (Python's ``re``) takes exponential time on patterns such as
``a*a*a*a*a*a*a*a*a*a*a*a*b``, and it runs on the event loop: one query, or one subscription
matching every write, stalled the whole node. RE2 matches in time linear in the input, so a
pattern costs what its input costs. It has no backreferences or lookaround; a pattern that uses
them is refused when it is given (400), never at matching time.

Matching is a search (the pattern may match anywhere in the value), as with ``re.search``.
"""

from __future__ import annotations

import functools
from typing import Any

import re2

MAX_PATTERN_LENGTH = 512

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is the caller's error, not a log line of ours


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """The compiled pattern; ValueError saying why a pattern cannot be used."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"longer than {MAX_PATTERN_LENGTH} characters")
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else "invalid"
        raise ValueError(reason.decode() if isinstance(reason, bytes) else str(reason)) from None


def search(pattern: str, value: str) -> bool:
    """Does ``pattern`` (already checked by :func:`compile_pattern`) match within ``value``?"""
    return compile_pattern(pattern).search(value) is not None
