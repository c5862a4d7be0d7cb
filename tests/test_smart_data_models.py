"""Smart Data Models examples go in and come back out unchanged, in every representation.

Each ``*/*/example-normalized.jsonld`` under ``tests/data/smart-data-models`` is an entity as the
Smart Data Models initiative publishes it, with its own ``@context``. What a user can rely on:

* created as ``application/ld+json``, it reads back (``Accept: application/ld+json`` and the
  example's @context in the ``Link`` header) exactly as it was sent, numbers keeping their JSON type;
* ``options=keyValues`` gives each attribute's bare value;
* ``format=concise`` loses nothing: a concise rendering posted back creates the same entity.

A ``Link`` header carries one URL. For examples whose @context is a list of several URLs, the test
hosts that list on the node (``POST /ngsi-ld/v1/jsonldContexts``, clause 5.13) and reads back with
the hosted context's URL, which stands for exactly the same terms. The ``@context`` member of a
response is the URL the request named, so it is compared with that URL.

The remote @contexts come from ``context-map.json`` (no network). One example also names the
legacy FIWARE ``data-models`` context, which is not in that map; the test maps it to an empty
context, which changes no term because the Environment context listed after it defines every term
that example uses (``test_the_stubbed_fiware_context_changes_no_term`` checks this).

Two upstream examples are not valid NGSI-LD (their ids are not URIs, one has no @context at all);
the node refuses them with 400 ``BadRequestData``, and nothing is stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from kizuna.app import create_app
from kizuna.config import Settings

BASE = "/ngsi-ld/v1"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
SDM = Path(__file__).parent / "data" / "smart-data-models"
LD = {"Content-Type": "application/ld+json"}
CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"
FIWARE_LEGACY_CONTEXT = "https://fiware.github.io/data-models/context.jsonld"
VALUE_MEMBER = {
    "Property": "value",
    "GeoProperty": "value",
    "Relationship": "object",
    "LanguageProperty": "languageMap",
    "VocabProperty": "vocab",
    "JsonProperty": "json",
    "ListProperty": "valueList",
    "ListRelationship": "objectList",
}
# Upstream examples that are not valid NGSI-LD, with what the node says about them.
INVALID = {
    "WifiNetwork/AccessPoint": "Entity id must be a URI",
    "WifiNetwork/WifiPointOfInterest": "must contain an @context",
}
EXAMPLES = sorted(p.parent.relative_to(SDM).as_posix() for p in SDM.glob("*/*/example-normalized.jsonld"))
VALID = [name for name in EXAMPLES if name not in INVALID]


def load_example(name: str) -> dict[str, Any]:
    return json.loads((SDM / name / "example-normalized.jsonld").read_bytes())


@pytest.fixture
def client(tmp_path: Path, any_store_url: str) -> Iterator[TestClient]:
    """Like conftest's ``client``, with the context map extended by an empty stand-in for the
    FIWARE legacy context (unreachable offline, not part of the shipped map)."""
    mapping = {
        url: str(SDM / file) for url, file in json.loads((SDM / "context-map.json").read_bytes()).items()
    }
    stub = tmp_path / "fiware-legacy-context.jsonld"
    stub.write_text('{"@context": {}}')
    mapping[FIWARE_LEGACY_CONTEXT] = str(stub)
    context_map = tmp_path / "context-map.json"
    context_map.write_text(json.dumps(mapping))
    settings = Settings(store=any_store_url, context_map=str(context_map))
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def entity_url(entity_id: str) -> str:
    return f"{BASE}/entities/{quote(entity_id, safe=':')}"


def create(client: TestClient, entity: dict[str, Any]) -> None:
    response = client.post(f"{BASE}/entities", content=json.dumps(entity), headers=LD)
    assert response.status_code == 201, response.text


def context_url(client: TestClient, example: dict[str, Any]) -> str:
    """One URL for the example's @context: itself, or the node-hosted copy of a list of several."""
    context = example["@context"]
    if isinstance(context, str):
        return context
    if len(context) == 1:
        return context[0]
    hosted = client.post(f"{BASE}/jsonldContexts", content=json.dumps({"@context": context}), headers=LD)
    assert hosted.status_code == 201, hosted.text
    return "http://testserver" + hosted.headers["location"]


def read(client: TestClient, entity_id: str, context: str, **params: str) -> dict[str, Any]:
    response = client.get(
        entity_url(entity_id),
        params=params,
        headers={"Accept": "application/ld+json", "Link": f'<{context}>; rel="{CONTEXT_REL}"'},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/ld+json"
    return response.json()


def typed(value: Any) -> Any:
    """The JSON value with every scalar tagged by its type, so that 1 != 1.0 != True."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def assert_same_json(got: Any, expected: Any) -> None:
    assert got == expected
    assert typed(got) == typed(expected), "equal values, but a number changed its JSON type"


def key_values(example: dict[str, Any], context: str) -> dict[str, Any]:
    """The keyValues projection of a normalized entity (one instance per attribute)."""
    out: dict[str, Any] = {"@context": context}
    for name, member in example.items():
        if name in ("id", "type", "scope"):
            out[name] = member
        elif name != "@context":
            assert isinstance(member, dict), f"{name}: these examples have one instance per attribute"
            out[name] = member[VALUE_MEMBER[member["type"]]]
    return out


def test_every_example_is_either_round_tripped_or_known_invalid() -> None:
    """The data folder is not empty, and each example is covered by one of the tests below."""
    assert len(VALID) >= 15
    assert set(INVALID) <= set(EXAMPLES)


@pytest.mark.parametrize("name", VALID)
def test_normalized_reads_back_exactly_as_created(client: TestClient, name: str) -> None:
    example = load_example(name)
    create(client, example)
    context = context_url(client, example)
    assert_same_json(read(client, example["id"], context), {**example, "@context": context})


@pytest.mark.parametrize("name", VALID)
def test_key_values_is_the_bare_value_of_each_attribute(client: TestClient, name: str) -> None:
    example = load_example(name)
    create(client, example)
    context = context_url(client, example)
    got = read(client, example["id"], context, options="keyValues")
    assert_same_json(got, key_values(example, context))


@pytest.mark.parametrize("name", VALID)
def test_concise_is_lossless(client: TestClient, name: str) -> None:
    """A concise rendering, posted back as a new entity, reads back as the original normalized one."""
    example = load_example(name)
    create(client, example)
    context = context_url(client, example)
    concise = read(client, example["id"], context, format="concise")
    assert concise["@context"] == context
    attributes = [member for name, member in concise.items() if name not in ("@context", "id", "type")]
    assert not any(isinstance(member, dict) and member.get("type") in VALUE_MEMBER for member in attributes)
    copy_id = example["id"] + ":concise-copy"
    create(client, {**concise, "id": copy_id})
    assert_same_json(read(client, copy_id, context), {**example, "@context": context, "id": copy_id})


@pytest.mark.parametrize("name", sorted(INVALID))
def test_examples_that_are_not_ngsi_ld_are_refused(client: TestClient, name: str) -> None:
    example = load_example(name)
    response = client.post(f"{BASE}/entities", content=json.dumps(example), headers=LD)
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"] == ERR + "BadRequestData"
    assert INVALID[name] in problem["detail"]
    assert client.get(entity_url(example["id"])).status_code in (400, 404)


def test_the_stubbed_fiware_context_changes_no_term() -> None:
    """Every example naming the FIWARE legacy context lists a domain context after it that defines
    every term the example uses, so the empty stand-in cannot change an expansion."""
    users = [name for name in VALID if FIWARE_LEGACY_CONTEXT in load_example(name)["@context"]]
    assert users == ["Environment/IndoorEnvironmentObserved"]
    for name in users:
        example = load_example(name)
        urls = example["@context"]
        later = urls[urls.index(FIWARE_LEGACY_CONTEXT) + 1 :]
        mapping = json.loads((SDM / "context-map.json").read_bytes())
        defined: set[str] = set()
        for url in later:
            if url in mapping:
                defined |= set(json.loads((SDM / mapping[url]).read_bytes())["@context"])
        assert used_terms(example) <= defined


def used_terms(example: dict[str, Any]) -> set[str]:
    """Entity type, attribute and sub-attribute names, and keys of compound values."""
    terms = {example["type"]} if isinstance(example["type"], str) else set(example["type"])
    for name, member in example.items():
        if name in ("id", "type", "@context"):
            continue
        terms.add(name)
        for key, item in member.items():
            if key == "value" and isinstance(item, dict) and member["type"] == "Property":
                terms |= set(item)
            elif isinstance(item, dict) and key not in VALUE_MEMBER.values():
                terms.add(key)
    return terms
