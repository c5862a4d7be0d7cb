"""An ODRL evaluator for the compact 2025-1 policy form: permissions, prohibitions and duties with
constraints on purpose, counterparty identity or membership, spatial region, date-time window,
elapsed time since the agreement, and access count.

Facts are what the node knows about one use of the data (:class:`Facts`). At negotiation time
usage facts (purpose, access count, elapsed time) are not known yet: those constraints are
*deferred* (they hold for now) and are enforced at every data access, where a missing fact fails
closed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from kizuna.errors import PolicyError
from kizuna.times import parse_instant

RULE_KEYS = ("permission", "prohibition", "obligation")
USAGE_OPERANDS = frozenset({"purpose", "count", "elapsedTime"})
LOGICAL = ("and", "or", "xone", "andSequence")

# Region membership for the spatial operand (ISO 3166-1 alpha-2 codes).
EU_MEMBERS = frozenset(
    {
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
    }
)
REGIONS: dict[str, frozenset[str]] = {"EU": EU_MEMBERS | {"EU"}, "JP": frozenset({"JP"})}

# Actions implied by a permitted action (ODRL: use includes the others).
ACTION_INCLUDES = {"use": frozenset({"use", "read", "reproduce", "display", "transfer"})}


@dataclass(slots=True)
class Facts:
    """What is known about the counterparty and this use of the data."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    assignee: str | None = None  # the counterparty's participant id
    memberships: frozenset[str] = frozenset()
    region: str | None = None  # ISO country code or region (EU, JP)
    purpose: str | None = None
    agreed_at: datetime | None = None
    access_count: int | None = None  # accesses before this one
    at_negotiation: bool = False  # defer usage constraints


@dataclass(slots=True)
class Decision:
    allowed: bool
    reasons: list[str] = field(default_factory=list)
    duties: list[str] = field(default_factory=list)  # actions the consumer has to perform

    def reason(self) -> str:
        return "; ".join(self.reasons) or "no permission grants this use"


def local_name(term: Any) -> str:
    """``odrl:purpose``, ``http://www.w3.org/ns/odrl/2/purpose`` and ``purpose`` alike."""
    text = term.get("@id", "") if isinstance(term, dict) else str(term)
    for sep in ("#", "/", ":"):
        if sep in text:
            text = text.rsplit(sep, 1)[1]
    return text


def rules_of(policy: dict[str, Any]) -> dict[str, Any]:
    """The normative part of a policy: its rules, in a canonical (sorted-key) JSON form."""
    return {k: policy[k] for k in RULE_KEYS if k in policy}


def same_rules(a: dict[str, Any], b: dict[str, Any]) -> bool:
    dump = lambda p: orjson.dumps(rules_of(p), option=orjson.OPT_SORT_KEYS)  # noqa: E731
    return dump(a) == dump(b)


def validate_policy(policy: Any) -> None:
    """Raise PolicyError unless every rule and constraint is one the evaluator understands."""
    if not isinstance(policy, dict):
        raise PolicyError("a policy must be a JSON object")
    if not any(policy.get(k) for k in ("permission", "prohibition")):
        raise PolicyError("a policy needs at least one permission or prohibition")
    for key in RULE_KEYS:
        rules = policy.get(key, [])
        if not isinstance(rules, list):
            raise PolicyError(f"{key} must be an array")
        for rule in rules:
            _check_rule(rule, key)


def _check_rule(rule: Any, where: str) -> None:
    if not isinstance(rule, dict) or not isinstance(rule.get("action"), str | dict):
        raise PolicyError(f"every {where} needs an action")
    for key in ("constraint", "duty"):
        if not isinstance(rule.get(key, []), list):
            raise PolicyError(f"{key} of a {where} must be an array")
    for c in rule.get("constraint", []):
        _check_constraint(c)
    for duty in rule.get("duty", []):
        _check_rule(duty, "duty")


# Every fact set, so that checking a constraint on them reads each of its operands.
_TRIAL = Facts(
    assignee="urn:trial",
    region="EU",
    purpose="trial",
    agreed_at=datetime.now(UTC),
    access_count=0,
)


def _check_constraint(c: Any) -> None:
    if not isinstance(c, dict):
        raise PolicyError("a constraint must be an object")
    logical = [k for k in LOGICAL if k in c]
    if logical:
        if not isinstance(c[logical[0]], list):
            raise PolicyError(f"{logical[0]} must be an array of constraints")
        for inner in c[logical[0]]:
            _check_constraint(inner)
        return
    for operand in ("operator", "leftOperand"):
        if not isinstance(c.get(operand, ""), str | dict):
            raise PolicyError(f"{operand} must be a name")
    if local_name(c.get("operator", "")) not in OPERATORS:
        raise PolicyError(f"unsupported operator {c.get('operator')!r}")
    if local_name(c.get("leftOperand", "")) not in LEFT_OPERANDS:
        raise PolicyError(f"unsupported leftOperand {c.get('leftOperand')!r}")
    if "rightOperand" not in c:
        raise PolicyError("an atomic constraint needs a rightOperand")
    # Evaluated once now, so that a constraint that cannot be evaluated (a count that is not a
    # number, a date that is not one, an operator its operand has no meaning for) is refused
    # when the policy is written, not at every later access.
    try:
        _holds(c, _TRIAL, defer_holds=True)
    except PolicyError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
        raise PolicyError(f"constraint {_show(c)} cannot be evaluated: {error}") from None


def evaluate(policy: dict[str, Any], facts: Facts, action: str = "use") -> Decision:
    """Whether ``action`` is allowed: some permission for it holds (its constraints and duties),
    and no prohibition for it holds."""
    decision = Decision(allowed=False)
    for permission in policy.get("permission", []):
        if not _covers(permission, action):
            continue
        failed = _failed_constraints(permission.get("constraint", []), facts)
        for duty in [*permission.get("duty", []), *policy.get("obligation", [])]:
            failed += [
                f"duty {local_name(duty['action'])}: {r}"
                for r in _failed_constraints(duty.get("constraint", []), facts)
            ]
        if not failed:
            decision.allowed = True
            decision.duties = [
                local_name(d["action"]) for d in [*permission.get("duty", []), *policy.get("obligation", [])]
            ]
            decision.reasons = []
            break
        decision.reasons.extend(failed)
    if not decision.allowed and not decision.reasons:
        decision.reasons.append(f"no permission grants {action}")
    if decision.allowed:
        for prohibition in policy.get("prohibition", []):
            if _covers(prohibition, action) and not _failed_constraints(
                prohibition.get("constraint", []), facts, defer_holds=False
            ):
                decision.allowed = False
                decision.reasons.append(f"prohibited: {local_name(prohibition['action'])}")
    return decision


def _covers(rule: dict[str, Any], action: str) -> bool:
    name = local_name(rule.get("action", ""))
    return action == name or action in ACTION_INCLUDES.get(name, ())


def _failed_constraints(
    constraints: Iterable[dict[str, Any]], facts: Facts, defer_holds: bool = True
) -> list[str]:
    failed: list[str] = []
    for c in constraints:
        ok, why = _holds(c, facts, defer_holds)
        if not ok:
            failed.append(why)
    return failed


def _holds(c: dict[str, Any], facts: Facts, defer_holds: bool) -> tuple[bool, str]:
    for op in LOGICAL:
        if op in c:
            results = [_holds(inner, facts, defer_holds) for inner in c[op]]
            oks = [ok for ok, _ in results]
            whys = [why for ok, why in results if not ok]
            if op in ("and", "andSequence"):
                return all(oks), " and ".join(whys)
            if op == "or":
                return any(oks), " or ".join(whys)
            return sum(oks) == 1, f"exactly one of {len(oks)} constraints must hold"
    left = local_name(c["leftOperand"])
    operator = local_name(c["operator"])
    right = c["rightOperand"]
    if facts.at_negotiation and left in USAGE_OPERANDS:
        return defer_holds, f"{left} is checked at use"
    ok = LEFT_OPERANDS[left](operator, right, facts)
    return ok, "" if ok else f"{left} {operator} {_show(right)} does not hold"


def _show(value: Any) -> str:
    return orjson.dumps(value).decode() if not isinstance(value, str) else value


# -- operators -------------------------------------------------------------------------------------


def _values(right: Any) -> list[Any]:
    if isinstance(right, list):
        return [v.get("@value", v.get("@id")) if isinstance(v, dict) else v for v in right]
    if isinstance(right, dict):
        return [right.get("@value", right.get("@id"))]
    return [right]


def _compare(operator: str, left: Any, right: Any) -> bool:
    if left is None:
        return False
    if operator == "eq":
        return left == right
    if operator == "neq":
        return left != right
    if operator == "lt":
        return left < right
    if operator in ("lteq", "term-lteq"):
        return left <= right
    if operator == "gt":
        return left > right
    if operator == "gteq":
        return left >= right
    raise PolicyError(f"operator {operator} does not compare values")


def _set_test(operator: str, have: set[str], right: list[str]) -> bool:
    wanted = set(right)
    if operator in ("eq", "isA", "isPartOf", "isAnyOf"):
        return bool(have & wanted)
    if operator == "isAllOf" or operator == "hasPart":
        return wanted <= have
    if operator in ("neq", "isNoneOf"):
        return not have & wanted
    raise PolicyError(f"operator {operator} does not apply to names")


def _purpose(operator: str, right: Any, facts: Facts) -> bool:
    if facts.purpose is None:
        return False
    return _set_test(operator, {local_name(facts.purpose)}, [local_name(v) for v in _values(right)])


def _identity(operator: str, right: Any, facts: Facts) -> bool:
    if facts.assignee is None:
        return False
    return _set_test(operator, {facts.assignee}, [str(v) for v in _values(right)])


def _membership(operator: str, right: Any, facts: Facts) -> bool:
    return _set_test(operator, set(facts.memberships), [str(v) for v in _values(right)])


def _spatial(operator: str, right: Any, facts: Facts) -> bool:
    if facts.region is None:
        return False
    region = local_name(facts.region).upper()
    # A region contains itself and its members: "DE" is part of "EU".
    have = {region} | {name for name, members in REGIONS.items() if region in members}
    return _set_test(operator, have, [local_name(v).upper() for v in _values(right)])


def _date_time(operator: str, right: Any, facts: Facts) -> bool:
    return _compare(operator, facts.now, parse_instant(str(_values(right)[0])))


_DURATION = re.compile(
    r"^P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """ISO 8601 durations; a year counts 365 days and a month 30 (xsd:duration has no calendar)."""
    m = _DURATION.match(text)
    if not m or text in ("P", "PT"):
        raise PolicyError(f"{text!r} is not an ISO 8601 duration")
    g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return timedelta(
        days=g["y"] * 365 + g["mo"] * 30 + g["w"] * 7 + g["d"], hours=g["h"], minutes=g["mi"], seconds=g["s"]
    )


def _elapsed(operator: str, right: Any, facts: Facts) -> bool:
    if facts.agreed_at is None:
        return False
    return _compare(operator, facts.now - facts.agreed_at, parse_duration(str(_values(right)[0])))


def _count(operator: str, right: Any, facts: Facts) -> bool:
    if facts.access_count is None:
        return False
    # This access is the (count + 1)-th one.
    return _compare(operator, facts.access_count + 1, int(_values(right)[0]))


LEFT_OPERANDS = {
    "purpose": _purpose,
    "identity": _identity,
    "assignee": _identity,
    "membership": _membership,
    "partner": _membership,
    "spatial": _spatial,
    "dateTime": _date_time,
    "elapsedTime": _elapsed,
    "count": _count,
}
OPERATORS = frozenset(
    {
        "eq",
        "neq",
        "lt",
        "lteq",
        "gt",
        "gteq",
        "term-lteq",
        "isA",
        "isAllOf",
        "isAnyOf",
        "isNoneOf",
        "isPartOf",
        "hasPart",
    }
)
