"""Every (state, input) pair: either what the table says, or IllegalTransition and no change."""

from __future__ import annotations

from itertools import product

import pytest
from attrs import evolve

import hpcstate as h
from hpcstate import TRANSITIONS, Input, State, Target
from hpcstate.serial import item_to_dict

from .builders import (
    at,
    item_in,
    observation_for,
    settling_vanished,
    unconfirmed_completed,
    with_cancel_requested,
)

# Inputs that only the tracker's own functions produce (not advance()).
TRACKER_INPUTS = {
    Input.SUBMITTED,
    Input.SUBMIT_REJECTED,
    Input.CANCEL_BEFORE_SUBMIT,
    Input.GRACE_EXPIRED,
    Input.GRACE_EXPIRED_UNSEEN,
}


def _expected(state: State, input: Input, observed: State | None) -> State | str | None:
    if (state, input) not in TRANSITIONS:
        return "illegal"
    target = TRANSITIONS[state, input]
    if target is Target.SAME:
        return state
    if target is Target.OBSERVED:
        return observed
    return target


@pytest.mark.parametrize(
    ("state", "input"),
    [p for p in product(State, Input) if p[1] not in TRACKER_INPUTS],
    ids=lambda v: str(v),
)
def test_every_observation_pair(state: State, input: Input) -> None:
    item = item_in(state)
    if input is Input.LATE_CONFIRMATION and state in (State.COMPLETED,):
        item = unconfirmed_completed()
    if input is Input.VANISHED_AFTER_CANCEL and state is not State.PENDING:
        item = with_cancel_requested(settling_vanished() if state is State.SETTLING else item)
    observation = observation_for(item, input)
    if observation is None:
        pytest.skip(
            f"no observation means {input} for a {'confirmed ' if item.confirmed else ''}{state} item"
        )
    if state is not State.PENDING:
        assert h.classify(item, observation) is input
    expected = _expected(state, input, observation.state)
    # A snapshot, not the record itself: `item == item` could never fail.
    before = item_to_dict(item)
    if expected == "illegal" or state is State.PENDING:
        with pytest.raises(h.IllegalTransition):
            h.advance(item, observation)
        assert item_to_dict(item) == before  # nothing changed
        return
    step = h.advance(item, observation)
    if input is Input.REQUEUED:
        assert step.item.state is State.QUEUED
        assert step.item.restarts == item.restarts + 1
        assert isinstance(step.events[0], h.Requeued)
    else:
        assert step.item.state is expected
    assert h.check_invariants(step.item) == ()
    for event in step.events:
        assert event.version <= step.item.version
    if step.events:
        assert step.item.version == item.version + len(step.events)
    else:
        assert step.item.version == item.version


@pytest.mark.parametrize("state", list(State), ids=str)
def test_tracker_inputs_in_every_state(state: State) -> None:
    item = item_in(state)
    now = at(10_000)
    # submitted / rejected / cancelled-before-submit: only from PENDING
    for function, kwargs in (
        (h.submitted, {"native_id": "1", "at": now}),
        (h.submit_rejected, {"at": now, "message": "Invalid partition"}),
        (h.cancel_before_submit, {"at": now}),
    ):
        if state is State.PENDING:
            step = function(item, **kwargs)  # type: ignore[operator]
            assert h.check_invariants(step.item) == ()
            assert len(step.events) == 1
        else:
            with pytest.raises(h.IllegalTransition):
                function(item, **kwargs)  # type: ignore[operator]
    # tick: only a settling item changes, and never to FAILED
    step = h.tick(item, now=now)
    if state is State.SETTLING:
        assert step.item.state is State.COMPLETED
        assert not step.item.confirmed
    else:
        assert step.item is item
        assert not step.events


def test_table_only_names_known_targets() -> None:
    for (state, input), target in TRANSITIONS.items():
        assert isinstance(state, State)
        assert isinstance(input, Input)
        assert isinstance(target, State | Target)
        if target is Target.OBSERVED:
            assert input in (Input.SEEN_FAILURE, Input.CONFIRMED, Input.LATE_CONFIRMATION)


def test_terminal_states_absorb_everything_but_requeue_and_late_confirmation() -> None:
    for (state, input), target in TRANSITIONS.items():
        if state in h.TERMINAL and target is not Target.SAME:
            assert (input is Input.REQUEUED and state in h.REOPENABLE) or (
                input is Input.LATE_CONFIRMATION
            ), (state, input, target)


def test_no_path_turns_a_grace_expiry_into_failure() -> None:
    assert TRANSITIONS[State.SETTLING, Input.GRACE_EXPIRED] is State.COMPLETED
    assert TRANSITIONS[State.SETTLING, Input.GRACE_EXPIRED_UNSEEN] is State.GONE


def test_observation_for_another_job_is_refused() -> None:
    item = item_in(State.RUNNING)
    other = evolve(observation_for(item, Input.SEEN_RUNNING), native_id="999")  # type: ignore[type-var]
    with pytest.raises(h.IllegalTransition, match="999"):
        h.advance(item, other)
