"""API keys: shown once, kept as a salted hash, split and checked in constant time."""

from __future__ import annotations

from kizuna.access.apikeys import new_key, split_key


def test_a_new_key_proves_its_record_and_nothing_else() -> None:
    record, key = new_key("gateway-7", ("kizuna-creator",), "duisburg", now=100.0, expires=200.0)
    parts = split_key(key)
    assert parts is not None and parts[0] == record.id
    assert record.proves(parts[1])
    assert not record.proves(parts[1] + "x")
    assert parts[1] not in repr(record), "the record must not hold the secret"
    other, _ = new_key("gateway-7", (), None, now=100.0, expires=None)
    assert other.salt != record.salt and not other.proves(parts[1])


def test_validity_ends_at_expiry_or_revocation() -> None:
    record, _ = new_key("gateway-7", (), None, now=100.0, expires=200.0)
    assert record.valid_at(150.0) and not record.valid_at(200.0)
    forever, _ = new_key("gateway-7", (), None, now=100.0, expires=None)
    assert forever.valid_at(10**12)
    from dataclasses import replace

    assert not replace(forever, revoked=120.0).valid_at(121.0)


def test_malformed_keys_are_not_split() -> None:
    for key in ["", "kz_", "kz_abc_def", "xx_0123456789abcdef_secret", "kz_0123456789abcdef_"]:
        assert split_key(key) is None
