"""API keys for machines (sensor gateways, IoT agents) that cannot run an OIDC flow.

A key is ``kz_<id>_<secret>``: the id finds the record, the secret proves it. The store keeps
only a salted SHA-256 of the secret. A slow password hash would buy nothing here: the secret is
256 random bits, not something a person chose, and the check runs on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from kizuna.access.audit import AuditTrail
from kizuna.store import Store

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


KIND = "apikey"
NODE_TENANT = ""  # keys are the node's, whatever tenant they may be bound to


def _to_doc(record: ApiKey) -> dict[str, Any]:
    return asdict(record) | {"roles": list(record.roles)}


def _from_doc(doc: dict[str, Any]) -> ApiKey:
    fields_ = {k: v for k, v in doc.items() if k != "version"}
    return ApiKey(**fields_ | {"roles": tuple(fields_["roles"])})


class ApiKeys:
    """The node's API keys, kept as the store's documents of kind ``apikey``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.audit = AuditTrail(store)

    async def create(
        self, by: str, subject: str, roles: tuple[str, ...], tenant: str | None, lifetime: float | None
    ) -> tuple[ApiKey, str]:
        """A new key for ``subject``, made by the operator ``by`` (who the audit trail names)."""
        now = time.time()
        record, key = new_key(subject, roles, tenant, now, None if lifetime is None else now + lifetime)
        if not await self.store.insert_document(KIND, NODE_TENANT, _to_doc(record)):
            raise RuntimeError("API key id collision")  # 64 random bits: practically never
        roles_text = ",".join(roles) or "no roles"
        await self.audit.record(
            by, tenant or "", "apikey.create", record.id, detail=f"for {subject} with {roles_text}"
        )
        return record, key

    async def find(self, key_id: str) -> ApiKey | None:
        doc = await self.store.get_document(KIND, NODE_TENANT, key_id)
        return None if doc is None else _from_doc(doc)

    async def all(self) -> list[ApiKey]:
        docs, _ = await self.store.list_documents(KIND, NODE_TENANT)
        return [_from_doc(doc) for doc in docs]

    async def revoke(self, by: str, key_id: str) -> bool:
        """Revoked keys are kept (marked), so that the audit trail can still name them."""
        record = await self.find(key_id)
        if record is None:
            return False
        if record.revoked is None:
            revoked = replace(record, revoked=time.time())
            await self.store.replace_document(KIND, NODE_TENANT, _to_doc(revoked))
            await self.audit.record(
                by, record.tenant or "", "apikey.revoke", key_id, detail=f"of {record.subject}"
            )
        return True
