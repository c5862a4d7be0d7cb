"""Every valid and invalid transition of both DSP state machines, for both roles."""

from __future__ import annotations

import itertools

import pytest

from kizuna.dataspace import negotiation as cn
from kizuna.dataspace import transfer as tp

CN_MESSAGES = [cn.REQUEST, cn.OFFER, cn.ACCEPT, cn.AGREEMENT_MSG, cn.VERIFY, cn.FINALIZE, cn.TERMINATE]
TP_MESSAGES = [tp.REQUEST, tp.START, tp.SUSPEND, tp.COMPLETE, tp.TERMINATE]
ROLES = ["provider", "consumer"]

# The specification's figures, written out independently of the implementation's table.
CN_EXPECTED = {
    (None, cn.REQUEST, "consumer"): "REQUESTED",
    (None, cn.OFFER, "provider"): "OFFERED",
    ("REQUESTED", cn.OFFER, "provider"): "OFFERED",
    ("REQUESTED", cn.AGREEMENT_MSG, "provider"): "AGREED",
    ("REQUESTED", cn.TERMINATE, "provider"): "TERMINATED",
    ("REQUESTED", cn.TERMINATE, "consumer"): "TERMINATED",
    ("OFFERED", cn.REQUEST, "consumer"): "REQUESTED",
    ("OFFERED", cn.ACCEPT, "consumer"): "ACCEPTED",
    ("OFFERED", cn.TERMINATE, "provider"): "TERMINATED",
    ("OFFERED", cn.TERMINATE, "consumer"): "TERMINATED",
    ("ACCEPTED", cn.AGREEMENT_MSG, "provider"): "AGREED",
    ("ACCEPTED", cn.TERMINATE, "provider"): "TERMINATED",
    ("AGREED", cn.VERIFY, "consumer"): "VERIFIED",
    ("AGREED", cn.TERMINATE, "consumer"): "TERMINATED",
    ("VERIFIED", cn.FINALIZE, "provider"): "FINALIZED",
    ("VERIFIED", cn.TERMINATE, "provider"): "TERMINATED",
}
TP_EXPECTED = {(None, tp.REQUEST, "consumer"): "REQUESTED", ("REQUESTED", tp.START, "provider"): "STARTED"}
for _by in ROLES:
    TP_EXPECTED.update(
        {
            ("REQUESTED", tp.TERMINATE, _by): "TERMINATED",
            ("STARTED", tp.COMPLETE, _by): "COMPLETED",
            ("STARTED", tp.SUSPEND, _by): "SUSPENDED",
            ("STARTED", tp.TERMINATE, _by): "TERMINATED",
            ("SUSPENDED", tp.START, _by): "STARTED",
            ("SUSPENDED", tp.TERMINATE, _by): "TERMINATED",
        }
    )


@pytest.mark.parametrize(
    ("state", "message", "sender"), list(itertools.product([None, *cn.STATES], CN_MESSAGES, ROLES))
)
def test_negotiation_transition(state, message, sender):
    expected = CN_EXPECTED.get((state, message, sender))
    receiver = "consumer" if sender == "provider" else "provider"
    assert cn.next_state(sender, state, message, receiving=False) == expected
    assert cn.next_state(receiver, state, message, receiving=True) == expected
    # A role never receives what only it may send.
    if expected is not None and (state, message, receiver) not in CN_EXPECTED:
        assert cn.next_state(sender, state, message, receiving=True) is None


@pytest.mark.parametrize(
    ("state", "message", "sender"), list(itertools.product([None, *tp.STATES], TP_MESSAGES, ROLES))
)
def test_transfer_transition(state, message, sender):
    expected = TP_EXPECTED.get((state, message, sender))
    receiver = "consumer" if sender == "provider" else "provider"
    assert tp.next_state(sender, state, message, receiving=False) == expected
    assert tp.next_state(receiver, state, message, receiving=True) == expected


def test_terminal_states_have_no_exit():
    for state in ("FINALIZED", "TERMINATED"):
        assert not [k for k in cn.TRANSITIONS if k[0] == state]
    for state in ("COMPLETED", "TERMINATED"):
        assert not [k for k in tp.TRANSITIONS if k[0] == state]
