"""Every (state, input) pair: either what the table says, or IllegalTransition and no change."""

from __future__ import annotations

from itertools import product

import pytest
from attrs import evolve

import hpcstate as h
from hpcstate import TRANSITIONS, Input, State, Target
from hpcstate._machine import CANCEL_LIVE
from hpcstate.serial import item_to_dict

from .builders import (
    at,
    item_in,
    obs,
    observation_for,
    settling_vanished,
    unconfirmed_completed,
    with_cancel_requested,
)


def cancel_seen_live(item: h.RunItem) -> h.RunItem:
    """A cancel requested, then the queue still listing the job (queued or running)."""
    asked = with_cancel_requested(item)
    seconds = (asked.updated_at - at(0)).total_seconds() + 1
    seen = h.advance(asked, obs(seconds, item.state)).item
    assert seen.has_marker(CANCEL_LIVE)
    return seen


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
    if input is Input.VANISHED_AFTER_CANCEL and state in (State.QUEUED, State.RUNNING):
        item = cancel_seen_live(item)
    if input is Input.VANISHED_AFTER_CANCEL and state is State.SETTLING:
        # A job that already left the queue may have ended on its own before the cancel
        # reached it: its vanish is FORGOTTEN (gone), never the cancel's doing.
        item = with_cancel_requested(settling_vanished())
        assert h.classify(item, obs(3600, absence=h.Absence.UNKNOWN)) is Input.FORGOTTEN
        assert (state, input) not in TRANSITIONS
        return
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


def test_vanished_after_cancel_rows_by_hand() -> None:
    # Written by hand (issue 13 and the race found after it): only a job that vanishes
    # straight from the queue's live view, after the queue listed it live past the cancel
    # request, is cancelled (unconfirmed); a record corrects it. Never from SETTLING.
    rows = {
        (state, input): target
        for (state, input), target in TRANSITIONS.items()
        if input is Input.VANISHED_AFTER_CANCEL
        or (state, input) == (State.CANCELLED, Input.LATE_CONFIRMATION)
    }
    assert rows == {
        (State.QUEUED, Input.VANISHED_AFTER_CANCEL): State.CANCELLED,
        (State.RUNNING, Input.VANISHED_AFTER_CANCEL): State.CANCELLED,
        (State.CANCELLED, Input.LATE_CONFIRMATION): Target.OBSERVED,
    }
