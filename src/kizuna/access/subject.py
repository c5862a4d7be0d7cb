"""Who is asking: the subject every request is tied to, whatever proved it (token, key, DSP).

A subject is a value, resolved once at the edge and passed down to the services, which never
look at credentials themselves. Its ``assignees`` are the names a permission may be assigned to
that match it: itself, its groups, and the two pseudo-subjects of Stellio's model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PUBLIC = "urn:ngsi-ld:Subject:public"
AUTHENTICATED = "urn:ngsi-ld:Subject:authenticated"

ADMIN_ROLE = "kizuna-admin"
CREATOR_ROLE = "kizuna-creator"


@dataclass(frozen=True)
class Subject:
    """``id`` is None for an anonymous request; ``node`` marks the node acting for itself
    (push transfers, forwarding), which no credential can claim; ``agreement`` marks a
    participant reading through the data plane under that agreement, which only a transfer
    token the data plane verified can claim."""

    id: str | None
    groups: frozenset[str] = field(default_factory=frozenset)
    roles: frozenset[str] = field(default_factory=frozenset)
    node: bool = False
    agreement: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.id is not None

    @property
    def local(self) -> bool:
        """An authenticated subject acting on its own rights (what it owns, what a
        specificAccessPolicy opens), not a participant confined to one agreement."""
        return self.id is not None and self.agreement is None

    @property
    def assignees(self) -> frozenset[str]:
        if self.id is None:
            return frozenset({PUBLIC})
        return self.groups | {self.id, AUTHENTICATED, PUBLIC}

    def has_role(self, role: str, tenant: str) -> bool:
        """A role holds node-wide, or for one tenant in its ``TENANT:role`` form."""
        return role in self.roles or f"{tenant}:{role}" in self.roles

    def is_admin(self, tenant: str) -> bool:
        return self.node or self.has_role(ADMIN_ROLE, tenant)

    @property
    def administers_node(self) -> bool:
        """Node-wide admin: the connector and what spans tenants are not a tenant admin's."""
        return self.node or ADMIN_ROLE in self.roles

    def may_create(self, tenant: str) -> bool:
        """Creating entities, subscriptions, registrations and @contexts; the creator owns them."""
        return self.is_admin(tenant) or self.has_role(CREATOR_ROLE, tenant)


def participant(participant_id: str, agreement_id: str) -> Subject:
    """A counterparty reading under one agreement: it holds what that agreement grants."""
    return Subject(participant_id, agreement=agreement_id)


ANONYMOUS = Subject(None)
NODE = Subject("urn:kizuna:node", node=True)
