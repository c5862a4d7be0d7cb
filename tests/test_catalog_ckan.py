"""The CKAN Action API over the node's datasets: what ckanapi (the client harvesters use) reads
from a live node, the package mapping, and CKAN's envelope and statuses for every failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ckanapi
import httpx
import pytest
from starlette.testclient import TestClient

from kizuna.catalogs.ckan import CkanActions, ckan_time, munge_name
from kizuna.catalogs.listing import Publisher, Site
from kizuna.dataspace.catalog import parse_dataset
from kizuna.errors import CatalogSearchInvalid

USE = {"permission": [{"action": "use"}]}
IN_EU = {
    "permission": [
        {"action": "use", "constraint": [{"leftOperand": "spatial", "operator": "eq", "rightOperand": "EU"}]}
    ]
}
LIGHTS = {"id": "urn:kizuna:ds:lights", "title": "Street lights of Duisburg", "entityTypes": ["Streetlight"]}
CABINETS = {
    "id": "cabinets",
    "title": "Control cabinets",
    "entityTypes": ["StreetlightControlCabinet", "Streetlight"],
    "attributes": ["powerState"],
    "tenant": "duisburg",
}
SITE = Site("https://node.example", Publisher("did:web:node.example", "Duisburg Node"))


def create(base: str, dataset: dict[str, Any], policy: dict[str, Any]) -> None:
    response = httpx.post(f"{base}/management/v1/datasets", json={**dataset, "policy": policy})
    assert response.status_code == 201, response.text


def test_ckanapi_lists_shows_and_searches_a_live_node(serve: Callable[..., str]) -> None:
    # --dsp-auth none: the DSP catalog answers anyone, so the listings show every dataset to
    # anyone (tests/test_cadde.py shows the anonymous public the open ones only).
    base = serve("--publisher-name", "Duisburg Node", "--dsp-auth", "none")
    create(base, LIGHTS, USE)
    create(base, CABINETS, IN_EU)
    with ckanapi.RemoteCKAN(base) as portal:  # POSTs JSON, as harvesters do
        assert portal.action.package_list() == ["cabinets", "urn-kizuna-ds-lights"]
        lights = portal.action.package_show(id="urn-kizuna-ds-lights")
        assert lights["title"] == "Street lights of Duisburg"
        assert lights["organization"]["name"] == "duisburg-node"
        assert [r["format"] for r in lights["resources"]] == ["NGSI-LD", "NGSI v2", "DSP"]
        assert lights["resources"][0]["url"] == f"{base}/ngsi-ld/v1/entities?type=Streetlight"
        assert lights["resources"][1]["url"] == f"{base}/v2/entities?type=Streetlight"
        assert lights["resources"][2]["url"] == f"{base}/dsp/catalog/datasets/urn:kizuna:ds:lights"
        # the dataset's own id finds it too
        assert portal.action.package_show(id="urn:kizuna:ds:lights")["id"] == lights["id"]
        found = portal.action.package_search(q="cabinets", fq="tags:Streetlight")
        assert found["count"] == 1 and found["results"][0]["name"] == "cabinets"
        both = portal.action.package_search(fq="+organization:duisburg-node tags:Streetlight")
        assert both["count"] == 2
        assert portal.action.organization_list() == ["duisburg-node"]
        assert portal.action.tag_list() == ["Streetlight", "StreetlightControlCabinet"]
        with pytest.raises(ckanapi.NotFound):
            portal.action.package_show(id="no-such-dataset")
        with pytest.raises(ckanapi.ValidationError):
            portal.action.package_show()
        with pytest.raises(ckanapi.SearchQueryError):
            portal.action.package_search(fq="tags:(a OR b)")
    with ckanapi.RemoteCKAN(base, get_only=True) as portal:  # and the same over GET
        assert (
            portal.action.package_search(q="duisburg", rows=1)["results"][0]["name"] == "urn-kizuna-ds-lights"
        )
        assert portal.action.status_show()["site_title"] == "Duisburg Node"
        assert "rows" in portal.action.help_show(name="package_search")


def actions(*datasets: dict[str, Any]) -> CkanActions:
    class Records:
        async def list(self) -> list[dict[str, Any]]:
            return list(datasets)

    return CkanActions(Records(), SITE)  # type: ignore[arg-type]


def record(dataset: dict[str, Any], policy: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**parse_dataset({**dataset, "policy": policy}), **extra}


async def test_a_package_has_ckan_2_10_shape() -> None:
    lights = record(LIGHTS, USE, createdAt="2026-11-22T18:00:00.123Z")
    package = await actions(lights).package_show({"id": "urn-kizuna-ds-lights"})
    assert package["metadata_created"] == package["metadata_modified"] == "2026-11-22T18:00:00.123000"
    assert package["private"] is False and package["state"] == "active" and package["type"] == "dataset"
    assert package["num_resources"] == 3 and package["num_tags"] == 1
    assert package["tags"][0]["name"] == "Streetlight" and package["tags"][0]["vocabulary_id"] is None
    assert package["owner_org"] == package["organization"]["id"]
    assert package["organization"]["title"] == "Duisburg Node"
    assert {r["package_id"] for r in package["resources"]} == {package["id"]}
    assert [r["position"] for r in package["resources"]] == [0, 1, 2]
    extras = {e["key"]: e["value"] for e in package["extras"]}
    assert extras["dsp_dataset_id"] == "urn:kizuna:ds:lights"
    assert '"action":"use"' in extras["odrl_policy"]
    assert (package["isopen"], package["license_id"]) == (False, "other-closed")
    assert "license_url" not in package


async def test_an_open_dataset_is_isopen_under_odc_by_or_its_own_licence() -> None:
    opened = record(LIGHTS, USE, open=True)
    package = await actions(opened).package_show({"id": "urn:kizuna:ds:lights"})
    assert (package["isopen"], package["license_id"]) == (True, "odc-by")
    assert package["license_url"].startswith("http://opendatacommons.org/")
    own = record(LIGHTS, USE, open=True, license="https://creativecommons.org/licenses/by/4.0/")
    package = await actions(own).package_show({"id": "urn:kizuna:ds:lights"})
    assert package["license_id"] == package["license_url"] == "https://creativecommons.org/licenses/by/4.0/"


async def test_the_resources_carry_the_datasets_query() -> None:
    cabinets = record({**CABINETS, "q": 'powerState=="on"', "history": True}, IN_EU)
    package = await actions(cabinets).package_show({"id": "cabinets"})
    ngsi_ld, v2, _ = (r["url"] for r in package["resources"])
    assert ngsi_ld == (
        "https://node.example/ngsi-ld/v1/temporal/entities?type=StreetlightControlCabinet,Streetlight"
        "&attrs=powerState&q=powerState%3D%3D%22on%22"
    )
    assert (
        v2 == "https://node.example/v2/entities?type=StreetlightControlCabinet,Streetlight&attrs=powerState"
    )
    assert "tenant 'duisburg'" in package["resources"][0]["description"]
    assert {"key": "tenant", "value": "duisburg"} in package["extras"]
    assert "with their temporal history" in package["notes"]
    near = {"geometry": "Point", "coordinates": "[6.77,51.43]", "georel": "near;maxDistance==500"}
    package = await actions(record({**LIGHTS, "geoQ": near}, USE)).package_show(
        {"id": "urn:kizuna:ds:lights"}
    )
    assert package["resources"][0]["url"] == (
        "https://node.example/ngsi-ld/v1/entities?type=Streetlight&geometry=Point"
        "&coordinates=%5B6.77,51.43%5D&georel=near%3BmaxDistance%3D%3D500"
    )
    assert package["notes"].endswith("(geoQ: near;maxDistance==500 Point [6.77,51.43]), their current state.")


async def test_search_terms_fields_negation_paging_and_sort() -> None:
    site = actions(
        record(LIGHTS, USE, createdAt="2026-11-20T08:00:00Z"),
        record(CABINETS, IN_EU, createdAt="2026-11-23T08:00:00Z"),
        record({**LIGHTS, "id": "zz"}, USE, createdAt="2026-11-22T18:00:00Z"),
    )

    async def names(**params: Any) -> list[str]:
        return [p["name"] for p in (await site.package_search(params))["results"]]

    assert await names(sort="name asc") == ["cabinets", "urn-kizuna-ds-lights", "zz"]
    assert await names(q="street DUISBURG", sort="name desc") == ["zz", "urn-kizuna-ds-lights"]
    assert await names(q='"control cabinets"') == ["cabinets"]
    assert await names(fq="-tags:StreetlightControlCabinet", sort="name asc") == [
        "urn-kizuna-ds-lights",
        "zz",
    ]
    assert await names(fq="res_format:DSP AND name:zz") == ["zz"]
    assert await names(q="*:*", rows="1", start="1", sort="name asc") == ["urn-kizuna-ds-lights"]
    assert await names(fq="metadata_modified:[2026-11-22T18:00:00Z TO *]", sort="name asc") == [
        "cabinets",
        "zz",
    ]
    assert await names(fq="-metadata_created:[* TO 2026-11-22T18:00:00.000000]") == ["cabinets"]
    for refused in ("metadata_modified:[NOW-1DAY TO *]", "tags:[a TO b]", "name:x OR name:y"):
        with pytest.raises(CatalogSearchInvalid):
            await site.package_search({"fq": refused})
    result = await site.package_search({"q": "nothing-like-this"})
    assert (result["count"], result["results"], result["sort"]) == (
        0,
        [],
        "score desc, metadata_modified desc",
    )


async def test_organizations_and_tags() -> None:
    site = actions(record(LIGHTS, USE), record(CABINETS, IN_EU))
    (organization,) = await site.organization_list({"all_fields": "true"})
    assert organization["package_count"] == 2 and organization["is_organization"] is True
    shown = await site.organization_show({"id": organization["id"], "include_datasets": True})
    assert shown["name"] == "duisburg-node" and len(shown["packages"]) == 2
    assert "packages" not in await site.organization_show({"id": "duisburg-node"})
    assert await site.tag_list({"query": "cabinet"}) == ["StreetlightControlCabinet"]
    assert (await site.tag_list({"all_fields": True}))[0]["display_name"] == "Streetlight"


def test_names_and_times_as_ckan_writes_them() -> None:
    assert munge_name("urn:ngsi-ld:Dataset:Lights 2") == "urn-ngsi-ld-dataset-lights-2"
    assert munge_name("x") == "x-"
    assert ckan_time("2026-11-22T18:00:00Z") == "2026-11-22T18:00:00.000000"


def test_failures_in_ckans_envelope_and_statuses(client: TestClient) -> None:
    r = client.get("/api/3/action/package_show?id=nothing")
    assert r.status_code == 404
    body = r.json()
    assert body["success"] is False and body["error"]["__type"] == "Not Found Error"
    assert body["help"].endswith("/api/3/action/help_show?name=package_show")
    r = client.get("/api/3/action/package_list?limit=many")
    assert r.status_code == 409 and r.json()["error"] == {
        "__type": "Validation Error",
        "limit": ["Invalid integer"],
    }
    r = client.get("/api/3/action/package_search?sort=popularity desc")
    assert r.status_code == 400 and r.json()["error"]["__type"] == "Search Query Error"
    r = client.get(body["help"].removeprefix("http://127.0.0.1:1026"))  # where every answer points
    assert r.status_code == 200 and ":param id:" in r.json()["result"]
    assert client.get("/api/3/action/help_show?name=package_create").status_code == 404
    r = client.get("/api/3/action/package_create")
    assert (r.status_code, r.json()) == (400, "Bad request - Action name not known: package_create")
    r = client.post("/api/3/action/package_list", content=b"[1]")
    assert r.status_code == 400 and r.json().startswith("Bad request - JSON Error")
    r = client.post("/api/action/package_list", content=b"")  # the unversioned path, an empty body
    assert (r.status_code, r.json()["result"]) == (200, [])
