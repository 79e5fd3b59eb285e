"""Test builders: an item in any state, and an observation that means a given input."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from attrs import evolve

import hpcstate as h
from hpcstate import Input, Observation, RunItem, Source, State

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
NATIVE = "4242"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def obs(
    seconds: float,
    state: State | None = None,
    *,
    source: Source = Source.QUEUE,
    absence: h.Absence | None = None,
    final: bool = False,
    stats: h.JobStats = h.EMPTY_STATS,
    restarts: int | None = None,
    native_id: str = NATIVE,
) -> Observation:
    return Observation(
        native_id=native_id,
        source=source,
        observed_at=at(seconds),
        state=state,
        absence=absence,
        final=final,
        stats=stats,
        restarts=restarts,
    )


def pending() -> RunItem:
    return h.new_item(id="run1.0", run_id="run1", backend="test", now=T0)


def queued() -> RunItem:
    return h.submitted(pending(), native_id=NATIVE, at=at(1)).item


def running() -> RunItem:
    return h.advance(queued(), obs(2, State.RUNNING)).item


def settling() -> RunItem:
    return h.advance(running(), obs(3, State.COMPLETED)).item


def settling_vanished() -> RunItem:
    """Settling because the queue stopped listing it (not seen to complete)."""
    return h.advance(running(), obs(3, absence=h.Absence.ABSENT)).item


def terminal(state: State) -> RunItem:
    """A confirmed item in a terminal state (GONE: unconfirmed, it cannot be confirmed)."""
    if state is State.GONE:
        return h.advance(running(), obs(3, absence=h.Absence.UNKNOWN)).item
    record = obs(
        3,
        state,
        source=Source.ACCOUNTING,
        final=True,
        stats=h.JobStats(exit=h.ExitStatus.exited(0)),
    )
    return h.advance(running(), record).item


def item_in(state: State) -> RunItem:
    if state is State.PENDING:
        return pending()
    if state is State.QUEUED:
        return queued()
    if state is State.RUNNING:
        return running()
    if state is State.SETTLING:
        return settling()
    return terminal(state)


def unconfirmed_completed() -> RunItem:
    return h.tick(settling(), now=at(3 + 601)).item


CANCEL = h.Marker(code=h.MarkerCode.CANCEL_REQUESTED.value, text="cancel requested")


def with_cancel_requested(item: RunItem) -> RunItem:
    """The item as the tracker stores it after `hpcstate cancel` (from any process)."""
    return h.add_marker(item, CANCEL, at=item.updated_at).item


def observation_for(item: RunItem, input: Input) -> Observation | None:
    """An observation that classifies as ``input`` for this item (None: not made by advance)."""
    late = item.updated_at + timedelta(seconds=5)
    sec = (late - T0).total_seconds()
    if input is Input.SEEN_QUEUED:
        return obs(sec, State.QUEUED)
    if input is Input.SEEN_RUNNING:
        return obs(sec, State.RUNNING)
    if input is Input.SEEN_SUCCESS:
        return obs(sec, State.COMPLETED)
    if input is Input.SEEN_FAILURE and (item.confirmed or item.state not in h.TERMINAL):
        return obs(sec, State.FAILED)
    if input is Input.VANISHED:
        return obs(sec, absence=h.Absence.ABSENT)
    if input is Input.FORGOTTEN:
        return obs(sec, absence=h.Absence.UNKNOWN)
    if input is Input.NO_RECORD:
        return obs(sec, absence=h.Absence.NO_RECORD, source=Source.ACCOUNTING)
    if input is Input.ACCOUNTING_ACTIVE:
        return obs(sec, State.RUNNING, source=Source.ACCOUNTING)
    if input is Input.CONFIRMED and (item.confirmed or item.state not in h.TERMINAL):
        return obs(sec, State.TIMEOUT, source=Source.ACCOUNTING, final=True)
    if input is Input.LATE_CONFIRMATION and item.state in h.TERMINAL and not item.confirmed:
        return obs(sec, State.FAILED, source=Source.ACCOUNTING, final=True)
    if input is Input.SELF_REPORTED:
        return obs(
            sec,
            State.COMPLETED,
            source=Source.SELF_REPORT,
            stats=h.JobStats(exit=h.ExitStatus.exited(0)),
        )
    if input is Input.REQUEUED and (item.state not in h.TERMINAL or item.state in h.REOPENABLE):
        return obs(sec, State.QUEUED, restarts=item.restarts + 1)
    if (
        input is Input.VANISHED_AFTER_CANCEL
        and item.state in (State.QUEUED, State.RUNNING, State.SETTLING)
        and item.settling_cause != Input.SEEN_SUCCESS.value
        and item.has_marker(h.MarkerCode.CANCEL_REQUESTED.value)
    ):
        return obs(sec, absence=h.Absence.UNKNOWN)
    if input is Input.STALE:
        return evolve(obs(0, State.RUNNING), observed_at=item.updated_at - timedelta(seconds=1))
    return None
