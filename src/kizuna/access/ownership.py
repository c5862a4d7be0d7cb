"""Who may see and change the node's own resources: subscriptions, registrations, csource
subscriptions and hosted @contexts belong to the subject that created them.

The owner is kept in the resource's internal ``_owner`` member (members starting with ``_``
are never rendered). Admins of the tenant see and change everything except what the node owns
itself (push-transfer subscriptions of the connector), which only the node changes. A resource
written before access control has no owner: only admins see it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kizuna.access.subject import ANONYMOUS, NODE, Subject, participant
from kizuna.errors import AccessDenied, NotAuthenticated

OWNER = "_owner"
OWNER_RIGHTS = "_ownerRights"  # the owner's groups and roles when it created the resource
READS_AS = "_readsAs"  # a push-transfer subscription's reader: the consumer, under its agreement


def require_creator(subject: Subject, tenant: str, what: str) -> None:
    """Raise unless ``subject`` may create ``what`` (a plural noun) in ``tenant``."""
    if not subject.authenticated:
        raise NotAuthenticated(f"Creating {what} needs credentials")
    if not subject.may_create(tenant):
        raise AccessDenied(f"Creating {what} needs the kizuna-creator role")


def owned(resource: dict[str, Any], subject: Subject, reads_as: Subject | None = None) -> dict[str, Any]:
    """``resource`` with ``subject`` as its owner, and the owner's rights as they are now (what
    a subscription notifies is what its owner may read, also when no request of it is running).
    With ``reads_as`` (a participant under an agreement), the resource reads as that subject
    instead: the node owns a push transfer's subscription, but it carries what the agreement
    grants, no more."""
    rights = {"groups": sorted(subject.groups), "roles": sorted(subject.roles)}
    owned = {**resource, OWNER: subject.id, OWNER_RIGHTS: rights}
    if reads_as is not None and reads_as.id is not None and reads_as.agreement is not None:
        owned[READS_AS] = {"participant": reads_as.id, "agreement": reads_as.agreement}
    return owned


def owner_of(resource: Mapping[str, Any]) -> Subject:
    """The subject that owns ``resource``; anonymous for one written before access control."""
    owner = resource.get(OWNER)
    if owner is None:
        return ANONYMOUS
    if owner == NODE.id:
        return NODE
    rights = resource.get(OWNER_RIGHTS) or {}
    return Subject(owner, frozenset(rights.get("groups", ())), frozenset(rights.get("roles", ())))


def reader_of(resource: Mapping[str, Any]) -> Subject:
    """The subject whose read rights bound what ``resource`` (a subscription) notifies."""
    reads_as = resource.get(READS_AS)
    if isinstance(reads_as, dict):
        return participant(reads_as["participant"], reads_as["agreement"])
    return owner_of(resource)


def sees(subject: Subject, tenant: str, resource: Mapping[str, Any]) -> bool:
    """Whether ``subject`` may see ``resource`` at all (others' resources answer 404)."""
    if subject.is_admin(tenant):
        return True
    return subject.authenticated and resource.get(OWNER) == subject.id


def require_change(subject: Subject, tenant: str, resource: Mapping[str, Any], what: str) -> None:
    """Raise unless ``subject`` may change ``resource`` (call after :func:`sees` held)."""
    if resource.get(OWNER) == NODE.id and not subject.node:
        raise AccessDenied(f"{what} is managed by the node's connector and changes only with its transfer")


def require_node_admin(subject: Subject, what: str) -> None:
    """Raise unless ``subject`` administers the whole node (what no single tenant owns)."""
    if not subject.authenticated:
        raise NotAuthenticated(f"{what} needs credentials")
    if not subject.administers_node:
        raise AccessDenied(f"{what} needs the kizuna-admin role")
