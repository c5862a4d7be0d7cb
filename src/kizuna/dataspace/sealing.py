"""Pull tokens at rest: a consumer keeps the provider's token encrypted in its store.

Whoever reads the store (a backup, a copied SQLite file, a database login) must not be able to
pull the agreed data. The key is derived (HKDF-SHA256) from the node's DSP key file, which is
kept outside the store already; a node without one holds an ephemeral key, so its tokens are
usable only until it stops, as if they were kept in memory. AES-256-GCM binds each sealed token
to the transfer it belongs to (associated data), so a sealed value cannot be moved to another.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kizuna.dataspace.auth import load_or_create_key

PREFIX = "sealed:v1:"
_NONCE = 12


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def from_key_file(cls, path: str | None) -> Sealer:
        if not path:
            return cls(AESGCM.generate_key(256))
        secret = load_or_create_key(path).private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        key = HKDF(hashes.SHA256(), 32, salt=None, info=b"kizuna pull tokens v1").derive(secret)
        return cls(key)

    def seal(self, value: str, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, value.encode(), context.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, value: str, context: str) -> str | None:
        """The token, or None when it was sealed with another key (a restart without a key file)
        or for another ``context``."""
        if not value.startswith(PREFIX):
            return None
        raw = base64.urlsafe_b64decode(value[len(PREFIX) :])
        try:
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()).decode()
        except InvalidTag:
            return None
