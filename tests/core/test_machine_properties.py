"""Hypothesis: random observation sequences never break the machine's guarantees."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import hpcstate as h
from hpcstate import Absence, ExitStatus, JobStats, Reason, Source, State
from hpcstate.serial import item_to_dict

from .builders import CANCEL, NATIVE, T0, queued
from .test_verdict_reasons import check_agrees, reasons

OBSERVABLE = [s for s in State if s not in (State.PENDING, State.SETTLING, State.GONE)]
exits = st.one_of(
    st.none(),
    st.integers(0, 255).map(ExitStatus.exited),
    st.integers(1, 64).map(ExitStatus.killed),
    st.integers(0, 127).map(lambda c: ExitStatus.from_slurm(f"{c}:0", high_codes_lossy=True)),
)


class ItemMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.item = queued()
        self.now = 10.0
        self.events: list[h.Event] = []
        self.first_verdict: h.RunItem | None = None

    def _apply(self, observation: h.Observation) -> None:
        before = self.item
        # A serialized snapshot: `self.item == before` compares a record with itself.
        snapshot = item_to_dict(before)
        try:
            step = h.advance(before, observation)
        except h.IllegalTransition:
            assert item_to_dict(self.item) == snapshot
            return
        self._record(before, step)

    def _record(self, before: h.RunItem, step: h.Step) -> None:
        if before.terminal and step.item.state is not before.state:
            # Only a requeue of a reopenable state or a late confirmation may leave a verdict.
            assert before.state in h.REOPENABLE or not before.confirmed, (before, step.item)
        if before.confirmed and before.state is State.COMPLETED:
            assert step.item.state is State.COMPLETED
        self.item = step.item
        self.events.extend(step.events)

    @rule(
        delta=st.floats(min_value=-5, max_value=900),
        state=st.one_of(st.none(), st.sampled_from(OBSERVABLE)),
        absence=st.sampled_from(list(Absence)),
        source=st.sampled_from(
            [Source.QUEUE, Source.CONTROLLER, Source.ACCOUNTING, Source.SELF_REPORT]
        ),
        final=st.booleans(),
        exit=exits,
        restarts=st.one_of(st.none(), st.integers(0, 3)),
        reason=reasons.filter(lambda r: r is None or r.text != "Priority"),
    )
    def observe(
        self,
        delta: float,
        state: State | None,
        absence: Absence,
        source: Source,
        final: bool,
        exit: ExitStatus | None,
        restarts: int | None,
        reason: Reason | None,
    ) -> None:
        self.now += max(delta, 0.0)
        at = T0 + timedelta(seconds=self.now + min(delta, 0.0))
        observation = h.Observation(
            native_id=NATIVE,
            source=source,
            observed_at=at,
            state=state,
            absence=None if state is not None else absence,
            final=final and state is not None,
            stats=JobStats(
                exit=exit,
                # A pending reason on a waiting sighting; any reason on an end.
                reason=None
                if state is None or source is Source.SELF_REPORT
                else Reason.other("Priority")
                if state in (State.QUEUED, State.RUNNING)
                else reason,
            ),
            restarts=restarts,
        )
        self._apply(observation)

    @precondition(lambda self: self.item.state is State.SETTLING)
    @rule(delta=st.floats(min_value=0, max_value=2000))
    def wait(self, delta: float) -> None:
        self.now += delta
        before = self.item
        step = h.tick(before, now=T0 + timedelta(seconds=self.now))
        if step.item.terminal:
            if before.has_marker(h.MarkerCode.CANCEL_REQUESTED):
                assert step.item.state in (State.COMPLETED, State.GONE, State.CANCELLED)
            else:
                assert step.item.state in (State.COMPLETED, State.GONE)
            assert not step.item.confirmed
        self._record(before, step)

    @invariant()
    def sound(self) -> None:
        assert h.check_invariants(self.item) == ()

    @invariant()
    def events_are_consecutive(self) -> None:
        versions = [e.version for e in self.events]
        assert versions == list(range(2, 2 + len(versions)))  # queued() is version 1
        if self.events:
            assert versions[-1] == self.item.version

    @rule()
    def cancel_requested(self) -> None:
        # What `hpcstate cancel` stores, from this process or any other.
        before = self.item
        step = h.add_marker(before, CANCEL, at=before.updated_at)
        self._record(before, step)

    @invariant()
    def grace_never_fails(self) -> None:
        if self.item.has_marker(h.MarkerCode.UNCONFIRMED):
            assert self.item.state in (State.COMPLETED, State.CANCELLED)
            if self.item.state is State.CANCELLED:
                assert self.item.has_marker(h.MarkerCode.CANCEL_REQUESTED)

    @invariant()
    def a_verdicts_reason_agrees_with_it(self) -> None:
        if self.item.terminal:
            check_agrees(self.item.state, self.item.stats.exit, self.item.stats.reason)
            reason = self.item.stats.reason
            assert reason is None or reason.text != "Priority"  # only ever said while waiting


TestItemMachine = ItemMachine.TestCase
