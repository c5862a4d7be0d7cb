"""From credentials to a subject: the node's access mode, its token verifier and its API keys.

The edge hands over the raw header values; nothing here knows HTTP. A request without
credentials is anonymous (it may still read what is granted to the public); credentials that
do not hold are refused outright rather than treated as anonymous, so a client with an expired
token learns it instead of silently seeing less.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

from kizuna.access.apikeys import ApiKey, split_key
from kizuna.access.oidc import FetchJson, Issuer, TokenVerifier
from kizuna.access.subject import ADMIN_ROLE, ANONYMOUS, Subject
from kizuna.config import Settings
from kizuna.errors import InvalidCredentials

# With --auth none every request is this subject: an admin, so that nothing is refused.
UNCHECKED = Subject("urn:kizuna:unchecked", roles=frozenset({ADMIN_ROLE}))

# A revoked key must stop working within 2 s on every running node; each process re-reads a
# key at most this long after it last read it.
KEY_CACHE_SECONDS = 1.0

FindKey = Callable[[str], Awaitable[ApiKey | None]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def access_mode(settings: Settings) -> tuple[str, str | None]:
    """``(mode, warning)`` for ``settings``; ValueError when the node must not start."""
    if settings.auth is None:
        if is_loopback(settings.host):
            return "none", None
        raise ValueError(
            f"refusing to serve {settings.host} without access control: pass --auth oidc (with"
            " --oidc-issuer or --auth-config), or --auth none to let anyone who reaches the port"
            " read, write and administer everything"
        )
    if settings.auth == "none":
        if is_loopback(settings.host):
            return "none", None
        return "none", f"--auth none on {settings.host}: anyone who reaches the port may do everything"
    if not issuers(settings):
        raise ValueError("--auth oidc needs --oidc-issuer or --auth-config")
    return "oidc", None


def issuers(settings: Settings) -> list[Issuer]:
    """The trusted issuers: those of ``--auth-config``, and the one the ``--oidc-*`` flags name."""
    found: list[Issuer] = []
    if settings.auth_config:
        config = orjson.loads(Path(settings.auth_config).read_bytes())
        if not isinstance(config, dict) or not isinstance(config.get("issuers"), list):
            raise ValueError(f"{settings.auth_config}: expected an object with an 'issuers' list")
        found.extend(Issuer.from_json(entry) for entry in config["issuers"])
    if settings.oidc_issuer:
        found.append(
            Issuer(
                settings.oidc_issuer,
                audience=settings.oidc_audience,
                jwks=settings.oidc_jwks,
                roles_claim=settings.oidc_roles_claim,
                groups_claim=settings.oidc_groups_claim,
            )
        )
    return found


class Authenticator:
    """Resolves the credentials of one request; ``checked`` is False with ``--auth none``."""

    def __init__(self, verifier: TokenVerifier | None, find_key: FindKey | None) -> None:
        self.checked = verifier is not None
        self._verifier = verifier
        self._find_key = find_key
        self._keys: dict[str, tuple[ApiKey, float]] = {}  # only keys that exist: bounded

    @classmethod
    def from_settings(cls, settings: Settings, fetch_json: FetchJson, find_key: FindKey) -> Authenticator:
        mode, _ = access_mode(settings)
        if mode == "none":
            return cls(None, None)
        return cls(TokenVerifier(issuers(settings), fetch_json), find_key)

    async def subject(self, authorization: str | None, api_key: str | None, tenant: str) -> Subject:
        if self._verifier is None:
            return UNCHECKED
        if api_key is not None:
            return await self._key_subject(api_key, tenant)
        if authorization is None:
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidCredentials("expected 'Authorization: Bearer <token>'")
        return await self._verifier.verify(token.strip(), tenant)

    async def _key_subject(self, key: str, tenant: str) -> Subject:
        parts = split_key(key)
        if parts is None or self._find_key is None:
            raise InvalidCredentials("malformed API key")
        key_id, secret = parts
        now = time.monotonic()
        cached = self._keys.get(key_id)
        record = cached[0] if cached is not None and now - cached[1] <= KEY_CACHE_SECONDS else None
        if record is None:
            record = await self._find_key(key_id)
            if record is None:
                self._keys.pop(key_id, None)
            else:
                self._keys[key_id] = (record, now)
        if record is None or not record.proves(secret) or not record.valid_at(time.time()):
            raise InvalidCredentials("unknown, revoked or expired API key")
        if record.tenant is not None and record.tenant != tenant:
            raise InvalidCredentials(f"API key is for tenant {record.tenant!r} only")
        return Subject(record.subject, roles=frozenset(record.roles))
