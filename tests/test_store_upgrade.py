"""Stores written by the release before numbered migrations (c2d3ca2), opened with today's code.

tests/data/store-c2d3ca2.db and store-c2d3ca2.sql were made by tools/make_store_fixtures.py on
that release's code, from tests/store_fixtures.py: the data read back here is what it wrote.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from conftest import DATA
from kizuna.app import create_app
from kizuna.config import Settings
from store_fixtures import (
    AGREEMENT,
    BASE,
    CONTEXT,
    LIGHTS,
    REGISTRATION,
    TENANTS,
    UPDATES,
    headers,
    light,
    light_id,
    status,
)

RELEASE = "c2d3ca2"


def _load_dump(cluster: object, url: str) -> None:
    """The plain dump into a database that holds PostGIS and nothing of Kizuna's yet."""
    name = url.rsplit("/", 1)[1]
    cluster.psql(name, "DROP SCHEMA kizuna CASCADE; DROP SCHEMA tenant_default CASCADE")  # type: ignore[attr-defined]
    psql = [str(cluster.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]  # type: ignore[attr-defined]
    subprocess.run([*psql, "-f", str(DATA / f"store-{RELEASE}.sql"), url], check=True, capture_output=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a store the earlier release wrote (a copy: the fixture stays as made)."""
    if request.param == "sqlite":
        path = tmp_path / "old.db"
        shutil.copy(DATA / f"store-{RELEASE}.db", path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_url")
    _load_dump(request.getfixturevalue("postgres_cluster"), url)
    yield url


def test_a_store_of_the_release_before_opens_upgraded_with_its_data(old_store: str) -> None:
    settings = Settings(store=old_store, outbound_allow="127.0.0.1/32")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/health/ready").status_code == 200
        for tenant in TENANTS:
            for n in range(1, LIGHTS + 1):
                url = f"{BASE}/entities/{light_id(tenant, n)}"
                entity = client.get(url, headers=headers(tenant)).json()
                assert entity["status"]["value"] == status(UPDATES), entity
                assert entity["location"] == {"type": "GeoProperty", **light(tenant, n)["location"]}
                history = client.get(
                    f"{BASE}/temporal/entities/{light_id(tenant, n)}", headers=headers(tenant)
                )
                values = [i["value"] for i in history.json()["status"]]
                assert values == ["ok", *(status(s) for s in range(1, UPDATES + 1))]
            # The per-type counts (SQLite migration 3) start from the type index already there.
            listing = client.get(
                f"{BASE}/entities",
                params={"type": "Streetlight", "count": "true", "limit": "1"},
                headers=headers(tenant),
            )
            assert listing.headers["NGSILD-Results-Count"] == str(LIGHTS), listing.text
            subscriptions = client.get(f"{BASE}/subscriptions", headers=headers(tenant)).json()
            assert [s["id"] for s in subscriptions] == [f"urn:ngsi-ld:Subscription:{tenant or 'default'}"]
        near = client.get(
            f"{BASE}/entities",
            params={
                "type": "Streetlight",
                "georel": "near;maxDistance==100",
                "geometry": "Point",
                "coordinates": str(light("", 1)["location"]["value"]["coordinates"]),
            },
        )
        assert [e["id"] for e in near.json()] == [light_id("", 1)]  # the geo index came along
        registration = client.get(f"{BASE}/csourceRegistrations/{REGISTRATION}")
        assert registration.status_code == 200 and registration.json()["endpoint"] == "http://127.0.0.1:9"
        store = client.app.state.store  # type: ignore[attr-defined]

        async def stored() -> tuple[object, ...]:
            from kizuna.access.apikeys import ApiKeys
            from kizuna.dataspace.core import AGREEMENT as AGREEMENTS
            from kizuna.dataspace.core import Records

            keys = [k.subject for k in await ApiKeys(store).all()]
            agreement = await Records(store).get(AGREEMENTS, AGREEMENT["id"])
            contexts = [doc for _, doc, *_ in await store.hosted_contexts()]
            audit, _ = await store.read_audit()
            queued = [
                [
                    (r.entity_id, r.trigger)
                    for r in await store.outbox_head(t, f"urn:ngsi-ld:Subscription:{t or 'default'}", 100)
                ]
                for t in TENANTS
            ]
            mismatch = await store.schema_mismatch()
            return keys, agreement, contexts, [e.operation for e in audit], queued, mismatch

        keys, agreement, contexts, audit, queued, mismatch = client.portal.call(stored)  # type: ignore[union-attr]
        # The notifications queued by the old release (to a closed port) are still owed, in order.
        assert queued == [
            [
                (light_id(tenant, n), trigger)
                for n in range(1, LIGHTS + 1)
                for trigger in ("attributeCreated", *["attributeUpdated"] * UPDATES)
            ]
            for tenant in TENANTS
        ]
        assert keys == ["alice"] and audit
        assert {k: agreement[k] for k in AGREEMENT} == AGREEMENT  # type: ignore[index]
        assert CONTEXT in contexts
        assert mismatch is None
