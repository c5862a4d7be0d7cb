"""Credentials for access tests: a fake IdP's keys, tokens it signs, and a counted key store."""

from __future__ import annotations

import time
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from kizuna.access.apikeys import ApiKey
from kizuna.access.authenticator import Authenticator
from kizuna.config import Settings

ISS = "https://idp.example/realms/duisburg"


class FakeIdp:
    """Serves a JWKS through the verifier's fetch function and counts the reads."""

    def __init__(self, *keys: Any) -> None:
        self.keys = list(keys)
        self.reads: list[str] = []

    async def fetch_json(self, url: str) -> Any:
        self.reads.append(url)
        if url.endswith("/.well-known/openid-configuration"):
            return {"issuer": ISS, "jwks_uri": ISS + "/certs"}
        return {"keys": [k.as_dict(private=False) for k in self.keys]}


def rsa(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid})


def token(key: Any, alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISS, "sub": "alice", "aud": "kizuna", "exp": now + 300, "iat": now} | claims
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode({"alg": alg, "kid": key.kid}, body, key, algorithms=[alg])


class Keys:
    """The store's side of API keys, counted."""

    def __init__(self, *records: ApiKey) -> None:
        self.records = {r.id: r for r in records}
        self.lookups = 0

    async def find(self, key_id: str) -> ApiKey | None:
        self.lookups += 1
        return self.records.get(key_id)


def oidc(keys: Keys, idp: FakeIdp) -> Authenticator:
    settings = Settings(auth="oidc", oidc_issuer=ISS, oidc_audience="kizuna")
    return Authenticator.from_settings(settings, idp.fetch_json, keys.find)


def bearer(key: Any, *roles: str, sub: str = "alice", groups: tuple[str, ...] = ()) -> dict[str, str]:
    """The Authorization header of a token for ``sub`` with ``roles`` and ``groups``."""
    value = token(key, sub=sub, realm_access={"roles": list(roles)}, groups=list(groups))
    return {"Authorization": f"Bearer {value}"}
