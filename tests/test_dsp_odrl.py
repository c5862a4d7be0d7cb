"""The ODRL evaluator: permissions, prohibitions, duties, and each constraint kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kizuna.dataspace import odrl
from kizuna.dataspace.odrl import Facts, evaluate
from kizuna.errors import PolicyError

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def permit(*constraints, **extra):
    return {"permission": [{"action": "use", "constraint": list(constraints), **extra}]}


def c(left, op, right):
    return {"leftOperand": left, "operator": op, "rightOperand": right}


RESEARCH = permit(
    c("purpose", "eq", "research"),
    c("spatial", "isAnyOf", ["EU", "JP"]),
    c("elapsedTime", "lteq", "P1Y"),
    c("count", "lteq", "1000"),
)


def facts(**kw):
    base = dict(now=NOW, assignee="riken", region="JP", purpose="research", agreed_at=NOW, access_count=0)
    base.update(kw)
    return Facts(**base)


@pytest.mark.parametrize(
    ("changes", "allowed"),
    [
        ({}, True),
        ({"purpose": "marketing"}, False),
        ({"purpose": None}, False),
        ({"region": "DE"}, True),  # Germany is in the EU
        ({"region": "US"}, False),
        ({"region": None}, False),
        ({"now": NOW + timedelta(days=364)}, True),
        ({"now": NOW + timedelta(days=366)}, False),
        ({"access_count": 999}, True),  # the 1,000th access
        ({"access_count": 1000}, False),
    ],
)
def test_research_policy(changes, allowed):
    decision = evaluate(RESEARCH, facts(**changes))
    assert decision.allowed is allowed, decision.reasons
    if not allowed:
        assert decision.reason()


def test_negotiation_defers_usage_constraints():
    f = facts(purpose=None, access_count=None, agreed_at=None, at_negotiation=True)
    assert evaluate(RESEARCH, f).allowed
    assert not evaluate(RESEARCH, facts(region="US", at_negotiation=True)).allowed


def test_identity_and_membership():
    p = permit(c("identity", "isAnyOf", ["riken", "kyoto"]))
    assert evaluate(p, facts()).allowed
    assert not evaluate(p, facts(assignee="acme")).allowed
    m = permit(c("membership", "eq", "research-institute"))
    assert evaluate(m, facts(memberships=frozenset({"research-institute"}))).allowed
    assert not evaluate(m, facts()).allowed


def test_date_time_window():
    p = permit(c("dateTime", "gteq", "2026-01-01T00:00:00Z"), c("dateTime", "lt", "2027-01-01T00:00:00Z"))
    assert evaluate(p, facts()).allowed
    assert not evaluate(p, facts(now=datetime(2027, 2, 1, tzinfo=UTC))).allowed
    assert not evaluate(p, facts(now=datetime(2025, 2, 1, tzinfo=UTC))).allowed


def test_prohibition_wins():
    p = {**permit(), "prohibition": [{"action": "use", "constraint": [c("spatial", "eq", "US")]}]}
    assert evaluate(p, facts()).allowed
    assert not evaluate(p, facts(region="US")).allowed
    other = {**permit(), "prohibition": [{"action": "distribute"}]}
    assert evaluate(other, facts()).allowed
    assert not evaluate(other, facts(), action="distribute").allowed


def test_duties():
    p = permit(duty=[{"action": "delete", "constraint": [c("elapsedTime", "lteq", "P30D")]}])
    d = evaluate(p, facts())
    assert d.allowed and d.duties == ["delete"]
    assert not evaluate(p, facts(now=NOW + timedelta(days=31))).allowed
    obligation = {**permit(), "obligation": [{"action": "attribute"}]}
    assert evaluate(obligation, facts()).duties == ["attribute"]


def test_logical_constraints():
    either = permit({"or": [c("spatial", "eq", "EU"), c("spatial", "eq", "JP")]})
    assert evaluate(either, facts()).allowed
    assert not evaluate(either, facts(region="US")).allowed
    one = permit({"xone": [c("spatial", "eq", "JP"), c("purpose", "eq", "research")]})
    assert not evaluate(one, facts()).allowed
    both = permit({"and": [c("spatial", "eq", "JP"), c("purpose", "eq", "research")]})
    assert evaluate(both, facts()).allowed


def test_prefixed_terms_and_validation():
    p = permit(c("odrl:purpose", "odrl:eq", "http://example.org/purpose/research"))
    assert evaluate(p, facts()).allowed
    odrl.validate_policy(RESEARCH)
    with pytest.raises(PolicyError):
        odrl.validate_policy(permit(c("purpose", "sortOf", "x")))
    with pytest.raises(PolicyError):
        odrl.validate_policy({"obligation": [{"action": "pay"}]})
    assert odrl.parse_duration("P1Y") == timedelta(days=365)
    assert odrl.same_rules(RESEARCH, {"@id": "x", **RESEARCH}) and not odrl.same_rules(RESEARCH, permit())
