"""Which context sources a request goes to, and how a write divides between them and the node.

Pure decisions on registrations (GS CIM 009 clause 4.3.6; the modes in
:mod:`kizuna.ngsild.forwarding`): no HTTP, no store, so each rule can be read and tested on
its own. :class:`~kizuna.ngsild.forwarding.Federation` acts on what they decide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kizuna import query as ql
from kizuna.ngsild import csources, model
from kizuna.ngsild.merging import attributes_of
from kizuna.ngsild.temporal import TemporalEntity
from kizuna.ngsild.temporal_params import TemporalParams, time_of
from kizuna.patterns import search
from kizuna.store import Entity
from kizuna.times import epoch, parse_instant

WRITES, BATCH_WRITES, DISCOVERY = csources.ENTITY_WRITES, csources.BATCH_WRITES, csources.DISCOVERY

# What each operation group of clause 5.5.x stands for (only the operations forwarded here).
READS = frozenset({"retrieveEntity", "queryEntity", "queryBatch", "retrieveTemporal", "queryTemporal"})
GROUPS: Mapping[str, frozenset[str]] = {
    "federationOps": READS | DISCOVERY,
    "retrieveOps": frozenset({"retrieveEntity", "queryEntity"}),
    "redirectionOps": WRITES | BATCH_WRITES | READS,
    "updateOps": frozenset({"updateEntity", "updateAttrs", "replaceEntity", "replaceAttrs"}),
}


# The order answers are merged in: the node's own data first, then the authoritative sources,
# then the additive ones, the auxiliary ones last (they only fill gaps).
MODE_RANK = {"exclusive": 0, "redirect": 0, "inclusive": 1, "auxiliary": 2}


@dataclass(frozen=True, slots=True)
class Target:
    """One registration that takes part in one request, with what it adds to the request."""

    reg: csources.Registration
    ids: tuple[str, ...]  # the entity ids the registration names for this request (may be empty)
    names: frozenset[str]  # registered attribute IRIs (empty: all attributes)

    @property
    def mode(self) -> str:
        return csources.mode_of(self.reg)


@dataclass(frozen=True, slots=True)
class Share:
    """What one registration's source gets of a write: a body (or ``None``) and the attribute
    IRIs it covers (empty for a whole-entity operation)."""

    target: Target
    body: Any
    names: frozenset[str]


@dataclass(frozen=True, slots=True)
class WritePlan:
    """How one write on one entity divides: ``local`` is the node's share (``None``: none)."""

    local: Share | None
    remote: list[Share]


def allows(reg: csources.Registration, operation: str) -> bool:
    """Do the registration's operations (or operation groups) include ``operation``?"""
    return any(op == operation or operation in GROUPS.get(op, ()) for op in csources.operations_of(reg))


def _expired(reg: csources.Registration, now: datetime) -> bool:
    expires = reg.get("expiresAt")
    return isinstance(expires, str) and parse_instant(expires) <= now


def _covers(
    info: Mapping[str, Any],
    ids: Sequence[str] | None,
    types: ql.TypeExpr | None,
    id_pattern: str | None,
) -> tuple[bool, tuple[str, ...]]:
    """Does one RegistrationInfo cover a request for ``ids`` / ``types`` / ``id_pattern``, and
    which entity ids does it name for it? Unlike discovery, a type-only EntityInfo answers a
    question by id: the source may hold that entity, and only it can say."""
    entities = info.get("entities")
    if not entities:
        return True, ()
    named: list[str] = []
    covered = False
    for entity_info in entities:
        if types is not None and not types.matches([entity_info["type"]]):
            continue
        reg_id, reg_pattern = entity_info.get("id"), entity_info.get("idPattern")
        if ids is not None:
            if reg_id is not None and reg_id not in ids:
                continue
            if reg_id is None and reg_pattern is not None and not any(search(reg_pattern, i) for i in ids):
                continue
        if id_pattern is not None and reg_id is not None and not search(id_pattern, reg_id):
            continue
        covered = True
        if reg_id is not None:
            named.append(reg_id)
    return covered, tuple(named)


def targets_for(
    regs: Iterable[csources.Registration],
    operation: str,
    *,
    ids: Sequence[str] | None = None,
    types: ql.TypeExpr | None = None,
    id_pattern: str | None = None,
    attrs: Iterable[str] | None = None,
) -> list[Target]:
    """The registrations a request takes to, best mode first."""
    wanted = None if attrs is None else frozenset(attrs)
    now = datetime.now(UTC)
    found: list[Target] = []
    for reg in regs:
        if not allows(reg, operation) or _expired(reg, now):
            continue
        reg_ids: list[str] = []
        names: set[str] = set()
        matched = unrestricted = False
        for info in reg.get("information", ()):
            covered, named = _covers(info, ids, types, id_pattern)
            info_names = set(info.get("propertyNames", ())) | set(info.get("relationshipNames", ()))
            if not covered or (wanted is not None and info_names and not info_names & wanted):
                continue
            matched = True
            reg_ids.extend(named)
            if info_names:
                names |= info_names
            else:
                unrestricted = True
        if matched:
            found.append(
                Target(reg, tuple(dict.fromkeys(reg_ids)), frozenset() if unrestricted else frozenset(names))
            )
    found.sort(key=lambda t: MODE_RANK.get(t.mode, 1))
    return found


def plan_write(
    regs: Sequence[csources.Registration],
    operation: str,
    entity_id: str,
    body: Any,
    expand: Callable[[str], str] | None,
    attrs: Sequence[str] | None,
    types: Sequence[str] | None,
) -> WritePlan | None:
    """How a write on ``entity_id`` divides between the node and the sources (``None``: it
    stays on the node). What an exclusive or redirect registration covers goes to its source
    only (all of it, when it registers the whole entity); what an inclusive one covers goes to
    its source and stays here too; auxiliary sources never take writes (clause 4.3.6.3).
    ``types`` (IRIs) are the entity's, where known."""
    type_expr = None if not types else any_of(types)
    targets = [
        t for t in targets_for(regs, operation, ids=[entity_id], types=type_expr) if t.mode != "auxiliary"
    ]
    if not targets:
        return None
    model.check_entity_id(entity_id)
    members = _attribute_members(body, expand)
    touched = frozenset(members.values()) if members else frozenset(attrs or ())
    remote: list[Share] = []
    claimed: set[str] = set()
    whole = False
    for target in targets:
        names = touched if not target.names else touched & target.names
        if target.names and touched and not names:
            continue  # the source holds other attributes of the entity than those written
        remote.append(Share(target, _share(body, members, names if target.names else None), names))
        if target.mode != "inclusive":
            whole = whole or not target.names
            claimed |= names
    if not remote:
        return None
    left = touched - claimed
    local = None
    if not whole and (left or not touched):
        local_body = _share(body, members, left) if claimed else body
        local = Share(targets[0], local_body, frozenset(left))
    return WritePlan(local, remote)


def merge(into: Entity, incoming: Entity, mode: str) -> None:
    """Merge a source's canonical entity into ``into`` by the rules of ``mode`` (module doc)."""
    for entity_type in incoming.get("type", ()):
        if entity_type not in into.setdefault("type", []):
            into["type"].append(entity_type)
    for iri, instances in attributes_of(incoming).items():
        current = into.get(iri)
        if not current:
            into[iri] = instances
            continue
        if mode == "auxiliary":
            continue
        for instance in instances:
            index = next(
                (i for i, c in enumerate(current) if c.get("datasetId") == instance.get("datasetId")), None
            )
            if index is None:
                current.append(instance)
            elif mode != "inclusive" or instance.get("observedAt", "") > current[index].get("observedAt", ""):
                current[index] = instance


def merge_history(into: TemporalEntity, incoming: TemporalEntity, mode: str, timeproperty: str) -> None:
    """Merge a source's temporal entity into ``into`` by the rules of ``mode``, as :func:`merge`
    does for entities, attribute by attribute: an exclusive or redirect source's history of an
    attribute replaces the node's, an auxiliary one's only fills an attribute the node has no
    history of, an inclusive one's instances join the node's. Either way the instances of an
    attribute end up ordered by ``timeproperty``, oldest first (as the node reads them), and one
    instance is kept of those of one datasetId recorded at one time (the same observation,
    reached twice: the node's copy or the first source's)."""
    for entity_type in incoming.core.get("type", ()):
        if entity_type not in into.core.setdefault("type", []):
            into.core["type"].append(entity_type)
    for iri, kind in incoming.kinds.items():
        into.kinds.setdefault(iri, kind)
    for iri, instances in incoming.attributes.items():
        current = into.attributes.get(iri)
        if not current or mode in ("exclusive", "redirect"):
            into.attributes[iri] = sorted(instances, key=lambda i: _when(i, timeproperty))
            continue
        if mode == "auxiliary":
            continue
        seen = {(i.get("datasetId"), _when(i, timeproperty)) for i in current}
        added = [i for i in instances if (i.get("datasetId"), _when(i, timeproperty)) not in seen]
        into.attributes[iri] = sorted([*current, *added], key=lambda i: _when(i, timeproperty))


def _when(instance: dict[str, Any], timeproperty: str) -> float:
    """When an instance was recorded, as POSIX seconds (0 for one without a valid time), so that
    instances of sources that write their times differently (fractions, offsets) sort alike."""
    text = time_of(instance, timeproperty)
    return epoch(text) if model.is_datetime(text) else 0.0


def any_of(types: Sequence[str]) -> ql.TypeExpr:
    """A type expression that one of ``types`` (IRIs) satisfies."""
    return ql.TypeOr(tuple(ql.TypeName(t) for t in types))


def _attribute_members(body: Any, expand: Callable[[str], str] | None) -> dict[str, str]:
    """The attribute members of an entity or fragment body: name as given -> IRI."""
    if not isinstance(body, dict) or expand is None:
        return {}
    return {name: expand(name) for name in body if name not in model.ENTITY_MEMBERS}


def _share(body: Any, members: Mapping[str, str], names: set[str] | frozenset[str] | None) -> Any:
    """The part of ``body`` with the attributes ``names`` (IRIs; ``None``: all) and every
    non-attribute member (id, type, @context, ...)."""
    if names is None or not isinstance(body, dict):
        return body
    return {k: v for k, v in body.items() if k not in members or members[k] in names}


def merge_histories(
    merged: dict[str, TemporalEntity],
    targets: Sequence[Target],
    answers: Sequence[list[TemporalEntity]],
    params: TemporalParams,
    keep: Callable[[TemporalEntity], bool] = lambda _: True,
) -> None:
    """Each source's temporal entities into ``merged`` (by id), best mode first, keeping of
    each only the attributes its registration covers; lastN applies to the merged history."""
    timeproperty = params.history.timeproperty
    for target, answer in zip(targets, answers, strict=True):
        for remote in answer:
            if not keep(remote):
                continue
            if target.names:
                remote.attributes = {k: v for k, v in remote.attributes.items() if k in target.names}
            held = merged.get(remote.core["id"])
            if held is None:
                held = merged[remote.core["id"]] = TemporalEntity(dict(remote.core))
            merge_history(held, remote, target.mode, timeproperty)
    last_n = params.history.last_n
    if last_n is not None:
        for entity in merged.values():
            entity.attributes = {k: v[-last_n:] for k, v in entity.attributes.items()}
