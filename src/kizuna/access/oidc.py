"""OpenID Connect bearer tokens: which issuers the node trusts, and what a valid token says.

Keycloak, Authentik, Azure AD and the rest all sign JWTs with keys they publish as a JWKS. A
token is accepted when it is signed with one of its issuer's keys by an asymmetric algorithm
(never ``none``, never HMAC: a public key must not be usable as a shared secret), and its ``iss``,
``aud``, ``exp`` and ``nbf`` hold within a small clock skew. Keys are cached; a token naming an
unknown ``kid`` makes the node read the JWKS again (the issuer rotated its keys), at most once a
minute per issuer, so that a flood of forged ``kid`` values cannot make the node hammer the IdP.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet

from kizuna.access.subject import Subject
from kizuna.errors import InvalidCredentials

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "Ed25519")

# Keycloak and others still name Ed25519 signatures "EdDSA" (RFC 9864 deprecates the name, not
# the algorithm); joserfc warns on each use, which would flood the log once per request.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)
CLOCK_SKEW_SECONDS = 30
REFRESH_INTERVAL_SECONDS = 60.0

log = logging.getLogger("kizuna.access")

FetchJson = Callable[[str], Awaitable[Any]]


@dataclass(frozen=True)
class Issuer:
    """One trusted issuer. ``jwks`` is a file path or URL; None means discovery through
    ``{issuer}/.well-known/openid-configuration``. ``tenant`` binds the issuer to one tenant
    (one realm per tenant); None trusts it for all."""

    issuer: str
    audience: str | None = None
    jwks: str | None = None
    roles_claim: str = "realm_access.roles"
    groups_claim: str = "groups"
    tenant: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Issuer:
        known = {"issuer", "audience", "jwks", "roles_claim", "groups_claim", "tenant"}
        unknown = set(data) - known
        if unknown or not isinstance(data.get("issuer"), str):
            raise ValueError(f"an issuer needs 'issuer' and may have {sorted(known)}; got {sorted(data)}")
        return cls(**data)


def claim(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (``realm_access.roles``), or None."""
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _strings(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


class _Keys:
    """One issuer's key set, read lazily and again on an unknown ``kid``."""

    def __init__(self, issuer: Issuer, fetch_json: FetchJson) -> None:
        self.issuer = issuer
        self._fetch_json = fetch_json
        self._keys: KeySet | None = None
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def for_kid(self, kid: str | None) -> KeySet:
        async with self._lock:  # concurrent requests with a new kid wait for one read
            if self._keys is not None and self._knows(kid):
                return self._keys
            if time.monotonic() - self._read_at < REFRESH_INTERVAL_SECONDS:
                if self._keys is None:
                    raise InvalidCredentials(f"keys of {self.issuer.issuer} unavailable")
                return self._keys  # rotation was checked less than a minute ago
            self._read_at = time.monotonic()
            try:
                self._keys = KeySet.import_key_set(await self._read())
            except (OSError, ValueError, TypeError, KeyError, JoseError) as exc:
                log.warning("keys of %s unreadable: %s", self.issuer.issuer, exc)
                raise InvalidCredentials(f"keys of {self.issuer.issuer} unavailable") from exc
            return self._keys

    def _knows(self, kid: str | None) -> bool:
        assert self._keys is not None
        return kid is None or any(key.kid == kid for key in self._keys.keys)

    async def _read(self) -> Any:
        source = self.issuer.jwks
        if source is None:
            discovery = await self._fetch_json(
                self.issuer.issuer.rstrip("/") + "/.well-known/openid-configuration"
            )
            source = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
            if not isinstance(source, str):
                raise InvalidCredentials(f"{self.issuer.issuer} publishes no jwks_uri")
        if source.startswith(("http://", "https://")):
            return await self._fetch_json(source)
        return orjson.loads(Path(source).read_bytes())


VERIFIED_TOKENS = 10_000


class TokenVerifier:
    """Verifies bearer tokens against the trusted issuers and turns them into subjects.

    A verified token is remembered until it expires (at most :data:`VERIFIED_TOKENS` of them):
    a client sends the same token with every request, and checking an RSA signature each time
    cost more than half of a retrieval's throughput. Time and tenant are checked on every use."""

    def __init__(self, issuers: list[Issuer], fetch_json: FetchJson) -> None:
        self._keys = {i.issuer: _Keys(i, fetch_json) for i in issuers}
        self._verified: dict[str, tuple[Subject, str | None, float, float]] = {}

    async def verify(self, token: str, tenant: str) -> Subject:
        known = self._verified.get(token)
        if known is not None:
            subject, bound, not_before, expires = known
            now = time.time()
            if not_before - CLOCK_SKEW_SECONDS <= now < expires + CLOCK_SKEW_SECONDS:
                if bound is not None and bound != tenant:
                    raise InvalidCredentials(f"the token's issuer is trusted for tenant {bound!r} only")
                return subject
            del self._verified[token]
        subject, bound, not_before, expires = await self._verify(token, tenant)
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = (subject, bound, not_before, expires)
        return subject

    async def _verify(self, token: str, tenant: str) -> tuple[Subject, str | None, float, float]:
        try:
            unverified = jws.extract_compact(token.encode())
            claims = orjson.loads(unverified.payload)
        except (JoseError, ValueError) as exc:
            raise InvalidCredentials("not a compact JWS") from exc
        iss = claims.get("iss") if isinstance(claims, dict) else None
        keys = self._keys.get(iss) if isinstance(iss, str) else None
        if keys is None:
            raise InvalidCredentials(f"untrusted issuer {iss!r}")
        issuer = keys.issuer
        if issuer.tenant is not None and issuer.tenant != tenant:
            raise InvalidCredentials(f"{iss} is trusted for tenant {issuer.tenant!r} only")
        kid = unverified.headers().get("kid")
        try:
            verified = jwt.decode(token, await keys.for_kid(kid), algorithms=list(ALGORITHMS))
            options: dict[str, Any] = {"iss": {"essential": True, "value": iss}, "exp": {"essential": True}}
            if issuer.audience is not None:
                options["aud"] = {"essential": True, "value": issuer.audience}
            jwt.JWTClaimsRegistry(leeway=CLOCK_SKEW_SECONDS, **options).validate(verified.claims)
        except (JoseError, ValueError) as exc:
            raise InvalidCredentials(f"{type(exc).__name__}: {exc}") from exc
        sub = verified.claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidCredentials("token has no 'sub'")
        subject = Subject(
            sub,
            groups=_strings(claim(verified.claims, issuer.groups_claim)),
            roles=_strings(claim(verified.claims, issuer.roles_claim)),
        )
        nbf = verified.claims.get("nbf")
        not_before = float(nbf) if isinstance(nbf, int | float) else float("-inf")
        return subject, issuer.tenant, not_before, float(verified.claims["exp"])
