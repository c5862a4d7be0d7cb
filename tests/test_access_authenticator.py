"""The access mode a node starts in, and credentials resolved to subjects."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from joserfc.jwk import RSAKey

from access_helpers import ISS, FakeIdp, Keys, oidc, token
from kizuna.access.apikeys import new_key
from kizuna.access.authenticator import UNCHECKED, Authenticator, access_mode, issuers
from kizuna.access.subject import ANONYMOUS
from kizuna.config import Settings
from kizuna.errors import InvalidCredentials


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_nodes_run_open_without_a_flag(host: str) -> None:
    assert access_mode(Settings(host=host)) == ("none", None)


def test_a_reachable_node_without_auth_refuses_to_start_and_says_why() -> None:
    with pytest.raises(ValueError, match="--auth oidc"):
        access_mode(Settings(host="0.0.0.0"))


def test_auth_none_on_a_reachable_node_starts_with_a_warning() -> None:
    mode, warning = access_mode(Settings(host="0.0.0.0", auth="none"))
    assert mode == "none" and warning is not None and "anyone" in warning


def test_oidc_needs_an_issuer() -> None:
    with pytest.raises(ValueError, match="--oidc-issuer"):
        access_mode(Settings(auth="oidc"))
    assert access_mode(Settings(auth="oidc", oidc_issuer=ISS)) == ("oidc", None)


def test_the_auth_config_file_and_the_flags_add_up(tmp_path: Path) -> None:
    config = tmp_path / "auth.json"
    realms = [{"issuer": "https://idp/realms/a", "tenant": "a"}, {"issuer": "https://idp/realms/b"}]
    config.write_bytes(orjson.dumps({"issuers": realms}))
    found = issuers(Settings(auth="oidc", auth_config=str(config), oidc_issuer=ISS, oidc_audience="k"))
    assert [(i.issuer, i.tenant, i.audience) for i in found] == [
        ("https://idp/realms/a", "a", None),
        ("https://idp/realms/b", None, None),
        (ISS, None, "k"),
    ]


async def test_auth_none_makes_everyone_the_unchecked_admin() -> None:
    authenticator = Authenticator.from_settings(Settings(), FakeIdp().fetch_json, Keys().find)
    assert not authenticator.checked
    assert await authenticator.subject("Bearer garbage", None, "") is UNCHECKED


async def test_no_credentials_is_anonymous_and_bad_ones_are_refused() -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k"})
    authenticator = oidc(Keys(), FakeIdp(key))
    assert await authenticator.subject(None, None, "") is ANONYMOUS
    assert (await authenticator.subject(f"Bearer {token(key)}", None, "")).id == "alice"
    for header in ["Basic YWxpY2U6cHc=", "Bearer ", f"Bearer {token(key)}x"]:
        with pytest.raises(InvalidCredentials):
            await authenticator.subject(header, None, "")


async def test_an_api_key_gives_its_subject_until_revoked() -> None:
    record, key = new_key("gateway-7", ("kizuna-creator",), None, now=time.time(), expires=None)
    keys = Keys(record)
    authenticator = oidc(keys, FakeIdp())
    subject = await authenticator.subject(None, key, "")
    assert (subject.id, subject.roles) == ("gateway-7", {"kizuna-creator"})
    await authenticator.subject(None, key, "")
    assert keys.lookups == 1, "a key read less than a second ago is not read again"

    keys.records[record.id] = replace(record, revoked=time.time())
    deadline = time.monotonic() + 2.0
    while True:
        try:
            await authenticator.subject(None, key, "")
        except InvalidCredentials:
            break
        assert time.monotonic() < deadline, "a revoked key must stop working within 2 seconds"
        time.sleep(0.05)


@pytest.mark.parametrize("tamper", ["wrong-secret", "expired", "other-tenant", "unknown", "malformed"])
async def test_api_keys_that_do_not_hold_are_refused(tamper: str) -> None:
    record, key = new_key("gateway-7", (), "duisburg", now=time.time(), expires=time.time() + 60)
    tenant = "duisburg"
    if tamper == "wrong-secret":
        key = key[:-2] + ("aa" if not key.endswith("aa") else "bb")
    elif tamper == "expired":
        record = replace(record, expires=time.time() - 1)
    elif tamper == "other-tenant":
        tenant = "kanagawa"
    elif tamper == "unknown":
        record = replace(record, id="0" * 16)
    else:
        key = "kz_nonsense"
    with pytest.raises(InvalidCredentials):
        await oidc(Keys(record), FakeIdp()).subject(None, key, tenant)
