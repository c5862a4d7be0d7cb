"""Content negotiation (kizuna.media): weights, wildcards, and the node's order of preference."""

from __future__ import annotations

import pytest

from kizuna.media import negotiate

OFFERS = ["text/turtle", "application/ld+json", "application/rdf+xml"]


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        ("*/*", "text/turtle"),
        ("application/*", "application/ld+json"),
        ("application/rdf+xml, application/ld+json", "application/rdf+xml"),
        ("application/ld+json;q=0.5, application/rdf+xml;q=0.9", "application/rdf+xml"),
        ("text/html, */*;q=0.1", "text/turtle"),
        ("APPLICATION/LD+JSON", "application/ld+json"),
        ("application/json", None),
        ("text/turtle;q=0", None),
        ("text/turtle;q=x", None),
        ("", None),
    ],
)
def test_negotiate(header: str, chosen: str | None) -> None:
    assert negotiate(header, OFFERS) == chosen
