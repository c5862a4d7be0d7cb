"""API keys for machines (sensor gateways, IoT agents) that cannot run an OIDC flow.

A key is ``kz_<id>_<secret>``: the id finds the record, the secret proves it. The store keeps
only a salted SHA-256 of the secret. A slow password hash would buy nothing here: the secret is
256 random bits, not something a person chose, and the check runs on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "kz_"


@dataclass(frozen=True)
class ApiKey:
    """What the store keeps of a key; ``expires`` and ``revoked`` are epoch seconds or None."""

    id: str
    subject: str
    roles: tuple[str, ...]
    tenant: str | None
    salt: str
    digest: str
    created: float
    expires: float | None = None
    revoked: float | None = None

    def valid_at(self, now: float) -> bool:
        return self.revoked is None and (self.expires is None or now < self.expires)

    def proves(self, secret: str) -> bool:
        return hmac.compare_digest(self.digest, _digest(self.salt, secret))


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def new_key(
    subject: str, roles: tuple[str, ...], tenant: str | None, now: float, expires: float | None
) -> tuple[ApiKey, str]:
    """A new record and the key to hand out once (it cannot be recovered from the record)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    record = ApiKey(key_id, subject, roles, tenant, salt, _digest(salt, secret), now, expires)
    return record, f"{PREFIX}{key_id}_{secret}"


def split_key(key: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    if not key.startswith(PREFIX):
        return None
    key_id, sep, secret = key[len(PREFIX) :].partition("_")
    if not sep or len(key_id) != 16 or not secret:
        return None
    return key_id, secret
