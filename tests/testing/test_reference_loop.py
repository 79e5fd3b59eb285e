"""The reference poll loop (hpcstate.testing.loop) keeps the Tracker's poll rules, and the
conformance suite's ability checks catch backends that break the declared contract.

Expected values are written by hand from the rules in the loop's module docstring.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta, timezone

import pytest

from hpcstate import (
    Absence,
    ExitStatus,
    JobStats,
    MarkerCode,
    Observation,
    SchedulerUnavailable,
    Source,
    State,
)
from hpcstate.backend import AccountingQuery, Capabilities, JobSpec, Submission
from hpcstate.testing import NotSettled, ReferenceLoop, Scenario, VirtualClock
from hpcstate.testing.conformance import BackendConformance

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


class Scripted:
    """A backend answering from per-id scripts: ``states[id]`` is what the queue says
    (None: absent), ``records[id]`` accounting's final (state, exit code) or None."""

    name = "scripted"

    def __init__(self, clock: VirtualClock, capabilities: Capabilities | None = None) -> None:
        self.clock = clock
        self.capabilities = capabilities or Capabilities(accounting=True)
        self.states: dict[str, State | None] = {}
        self.records: dict[str, tuple[State, int] | None] = {}
        self.queries: list[AccountingQuery] = []
        self.calls: list[str] = []
        self.fail: set[str] = set()  # methods that raise SchedulerUnavailable
        self.next_id = 100

    async def submit(self, spec: JobSpec) -> Submission:
        self.calls.append("submit")
        if "submit" in self.fail:
            raise SchedulerUnavailable("submit: no answer")
        self.next_id += 1
        self.states[str(self.next_id)] = State.QUEUED
        # The scheduler's submit time, a moment before the item is made.
        at = self.clock.now() - timedelta(seconds=5)
        return Submission(native_id=str(self.next_id), submitted_at=at)

    async def queue(self, native_ids: Sequence[str]) -> Sequence[Observation]:
        self.calls.append("queue")
        if "queue" in self.fail:
            raise SchedulerUnavailable("squeue: timed out")
        now = self.clock.now()
        found = []
        for native_id in native_ids:
            state = self.states.get(native_id)
            if state is None:
                found.append(
                    Observation(
                        native_id=native_id,
                        source=Source.QUEUE,
                        observed_at=now,
                        absence=Absence.ABSENT,
                    )
                )
            else:
                found.append(
                    Observation(
                        native_id=native_id, source=Source.QUEUE, observed_at=now, state=state
                    )
                )
        return found

    async def accounting(self, query: AccountingQuery) -> Sequence[Observation]:
        self.calls.append("accounting")
        self.queries.append(query)
        if "accounting" in self.fail:
            raise SchedulerUnavailable("sacct: slurmdbd down")
        now = self.clock.now()
        found = []
        for native_id in query.native_ids:
            record = self.records.get(native_id)
            if record is None:
                found.append(
                    Observation(
                        native_id=native_id,
                        source=Source.ACCOUNTING,
                        observed_at=now,
                        absence=Absence.NO_RECORD,
                    )
                )
            else:
                state, code = record
                found.append(
                    Observation(
                        native_id=native_id,
                        source=Source.ACCOUNTING,
                        observed_at=now,
                        state=state,
                        final=True,
                        stats=JobStats(exit=ExitStatus.exited(code)),
                    )
                )
        return found

    async def cancel(self, native_ids: Sequence[str]) -> None:
        self.calls.append("cancel")
        if "cancel" in self.fail:
            raise SchedulerUnavailable("scancel: timed out")

    async def close(self) -> None:
        pass


class Finding(Scripted):
    """Has find_submission, declared or not (see the capabilities given)."""

    def __init__(self, clock: VirtualClock, capabilities: Capabilities) -> None:
        super().__init__(clock, capabilities)
        self.found: Submission | None = None

    async def find_submission(self, tag: str) -> Submission | None:
        self.calls.append("find_submission")
        return self.found


def _loop(backend: Scripted, **kw: object) -> ReferenceLoop:
    return ReferenceLoop(backend, clock=backend.clock, **kw)  # type: ignore[arg-type]


async def test_one_queue_then_one_accounting_call_per_poll() -> None:
    backend = Scripted(VirtualClock(T0))
    loop = _loop(backend)
    a, b = (
        (await loop.submit(JobSpec(command=["x"])))[0],
        (await loop.submit(JobSpec(command=["y"])))[0],
    )
    await loop.poll_once()
    assert backend.calls == ["submit", "submit", "queue"]  # nothing settling: no accounting
    backend.states[a] = None  # a left the queue
    backend.records[a] = (State.FAILED, 3)
    await loop.poll_once()
    assert backend.calls[3:] == ["queue", "accounting"]
    assert [list(q.native_ids) for q in backend.queries] == [[a]]
    assert (loop.item(a).state, loop.item(a).confirmed) == (State.FAILED, True)
    assert loop.item(b).state is State.QUEUED
    assert loop.calls_per_poll == [(1, 0), (1, 1)]


async def test_no_accounting_when_the_queue_did_not_answer() -> None:
    clock = VirtualClock(T0)
    backend = Scripted(clock)
    loop = _loop(backend)
    (a,) = await loop.submit(JobSpec(command=["x"]))
    backend.states[a] = None
    await loop.poll_once()  # a is settling
    backend.fail.add("queue")
    before = len(backend.calls)
    await loop.poll_once()
    assert backend.calls[before:] == ["queue"]
    assert loop.unavailable == 1
    assert loop.errors == ["queue: SchedulerUnavailable: squeue: timed out"]
    assert loop.item(a).state is State.SETTLING  # an error is never a verdict


async def test_the_accounting_window_is_the_earliest_submit() -> None:
    clock = VirtualClock(T0)
    backend = Scripted(clock)
    loop = _loop(backend)
    (a,) = await loop.submit(JobSpec(command=["x"]))
    clock.advance(60)
    (b,) = await loop.submit(JobSpec(command=["y"]))
    adopted = loop.track("555")  # no submit time: when it was tracked
    backend.states.update({a: None, b: None, "555": None})
    clock.advance(60)
    await loop.poll_once()
    (query,) = backend.queries
    assert sorted(query.native_ids) == sorted([a, b, "555"])
    assert query.submitted_after == T0 - timedelta(seconds=5)  # a's submit, not its item
    assert adopted.created_at == T0 + timedelta(seconds=60)


async def test_the_grace_fallback_and_the_late_record() -> None:
    clock = VirtualClock(T0)
    backend = Scripted(clock)
    loop = _loop(backend, grace=timedelta(seconds=100))
    (a,) = await loop.submit(JobSpec(command=["x"]))
    await loop.poll_once()
    backend.states[a] = None
    await loop.poll_once()  # settling, accounting has nothing
    clock.advance(101)
    await loop.poll_once()
    first = loop.first_verdicts[a]
    assert (first.state, first.confirmed) == (State.GONE, False)  # never seen running
    backend.records[a] = (State.COMPLETED, 0)
    await loop.poll_once()  # an unconfirmed verdict is still asked about
    assert (loop.item(a).state, loop.item(a).confirmed) == (State.COMPLETED, True)


async def test_without_grace_settling_waits() -> None:
    clock = VirtualClock(T0)
    backend = Scripted(clock)
    loop = _loop(backend, grace=None)
    (a,) = await loop.submit(JobSpec(command=["x"]))
    backend.states[a] = None
    await loop.poll_once()
    clock.advance(10 * 86400)
    await loop.poll_once()
    assert loop.item(a).state is State.SETTLING


async def test_await_final_record_asks_accounting_after_a_controller_verdict() -> None:
    clock = VirtualClock(T0)
    backend = Scripted(clock)
    loop = _loop(backend, await_final_record=True)
    (a,) = await loop.submit(JobSpec(command=["x"]))
    backend.states[a] = State.FAILED  # the controller states a failure: a verdict
    await loop.poll_once()
    assert loop.item(a).state is State.FAILED
    assert not loop.done(a)  # no final record yet
    backend.records[a] = (State.FAILED, 3)
    await loop.poll_once()
    assert backend.calls[-1] == "accounting"
    assert loop.done(a)
    assert a in loop.final_seen


async def test_answers_that_do_not_match_the_ids_asked_are_problems() -> None:
    clock = VirtualClock(T0)
    backend = Scripted(clock)
    loop = _loop(backend)
    (a,) = await loop.submit(JobSpec(command=["x"]))

    async def forgetful(native_ids: Sequence[str]) -> Sequence[Observation]:
        return [
            Observation(
                native_id="999", source=Source.QUEUE, observed_at=clock.now(), state=State.RUNNING
            )
        ]

    backend.queue = forgetful  # type: ignore[method-assign]
    await loop.poll_once()
    assert loop.problems == [f"queue asked ['{a}'], answered ['999']"]
    assert loop.item(a).state is State.QUEUED


async def test_cancel_marks_the_items_as_the_tracker_does() -> None:
    clock = VirtualClock(T0)
    backend = Scripted(clock)
    loop = _loop(backend)
    a, b = [(await loop.submit(JobSpec(command=[c])))[0] for c in "xy"]
    await loop.cancel([a])
    assert loop.item(a).has_marker(MarkerCode.CANCEL_REQUESTED.value)
    assert not loop.item(a).has_marker(MarkerCode.CANCEL_FAILED.value)
    backend.fail.add("cancel")
    await loop.cancel([b])  # transient: written down, not raised
    assert loop.item(b).has_marker(MarkerCode.CANCEL_REQUESTED.value)
    assert loop.item(b).has_marker(MarkerCode.CANCEL_FAILED.value)
    assert loop.errors == ["cancel: SchedulerUnavailable: scancel: timed out"]


async def test_a_lost_submit_is_looked_up_only_through_a_declared_finder() -> None:
    clock = VirtualClock(T0)
    spec = JobSpec(command=["x"], tag="t-1")
    undeclared = Finding(clock, Capabilities(accounting=True, idempotent_submit=False))
    undeclared.fail.add("submit")
    with pytest.raises(SchedulerUnavailable):
        await _loop(undeclared).submit(spec)
    assert "find_submission" not in undeclared.calls

    declared = Finding(clock, Capabilities(accounting=True, idempotent_submit=True))
    declared.fail.add("submit")
    declared.found = Submission(native_id="4242", submitted_at=T0)
    loop = _loop(declared)
    assert await loop.submit(spec) == ["4242"]
    assert declared.calls == ["submit", "find_submission"]

    untagged = Finding(clock, Capabilities(accounting=True, idempotent_submit=True))
    untagged.fail.add("submit")
    with pytest.raises(SchedulerUnavailable):
        await _loop(untagged).submit(JobSpec(command=["x"]))
    assert untagged.calls == ["submit"]


async def test_run_until_raises_not_settled_naming_the_open_items() -> None:
    clock = VirtualClock(T0)
    backend = Scripted(clock)
    loop = _loop(backend)
    (a,) = await loop.submit(JobSpec(command=["x"]))
    with pytest.raises(NotSettled, match=f"after 3 polls: {{'{a}': 'queued'}}"):
        await loop.run_until(max_polls=3, interval=30, timeout=None)
    assert clock.now() == T0 + timedelta(seconds=90)


# -- the conformance suite's ability checks have teeth --------------------------------


def _scenario() -> Scenario:
    return Scenario(name="plain", spec=JobSpec(command=["x"]), state=State.COMPLETED)


def _fails(coro: object) -> str:
    with pytest.raises(pytest.fail.Exception) as caught:
        asyncio.run(coro)  # type: ignore[arg-type]
    return str(caught.value)


def test_a_declared_ability_without_its_method_is_caught() -> None:
    backend = Scripted(VirtualClock(T0), Capabilities(idempotent_submit=True))
    said = _fails(BackendConformance().test_declared_abilities_are_implemented(backend))
    assert "idempotent_submit" in said
    assert "find_submission" in said


def test_a_finder_that_does_not_find_the_submit_is_caught() -> None:
    backend = Finding(VirtualClock(T0), Capabilities(idempotent_submit=True))
    backend.found = None
    with pytest.raises(AssertionError, match="found nothing after the submit"):
        asyncio.run(
            BackendConformance().test_a_declared_finder_finds_a_tagged_submit(backend, _scenario())
        )
    backend.found = Submission(native_id="1")
    with pytest.raises(AssertionError, match="found 1, the submit said 102"):
        asyncio.run(
            BackendConformance().test_a_declared_finder_finds_a_tagged_submit(backend, _scenario())
        )


class Watcher(Scripted):
    def __init__(self, clock: VirtualClock, answer: str) -> None:
        super().__init__(clock, Capabilities(push=True))
        self.answer = answer

    async def watch(self, native_ids: Sequence[str]) -> AsyncIterator[Observation]:
        yield Observation(
            native_id=self.answer,
            source=Source.QUEUE,
            observed_at=self.clock.now(),
            state=State.RUNNING,
        )


def test_a_watch_about_another_job_is_caught() -> None:
    suite = BackendConformance()
    good = Watcher(VirtualClock(T0), answer="101")
    asyncio.run(suite.test_a_declared_watch_yields_an_observation(good, _scenario()))
    bad = Watcher(VirtualClock(T0), answer="7")
    with pytest.raises(AssertionError, match=r"watch\(\['101'\]\) yielded 7"):
        asyncio.run(suite.test_a_declared_watch_yields_an_observation(bad, _scenario()))


class Sharing(Scripted):
    def __init__(self, clock: VirtualClock, *, strict: bool) -> None:
        super().__init__(clock, Capabilities(accounting=True, shares_facts=True))
        self.version: str | None = None
        self.strict = strict

    def facts(self) -> dict[str, str]:
        return {} if self.version is None else {"version": self.version}

    def adopt_facts(self, facts: dict[str, str]) -> None:
        value = facts.get("version")
        if value is None:
            return
        if not value.replace(".", "").isdigit():
            if self.strict:
                raise ValueError(f"bad version {value!r}")
            return
        self.version = value

    async def queue(self, native_ids: Sequence[str]) -> Sequence[Observation]:
        self.version = "22.05.11"  # learned on the first call
        return await super().queue(native_ids)


def test_facts_that_raise_on_a_bad_value_are_caught() -> None:
    suite = BackendConformance()
    asyncio.run(
        suite.test_declared_facts_are_shared(Sharing(VirtualClock(T0), strict=False), _scenario())
    )
    with pytest.raises(ValueError, match="bad version"):
        asyncio.run(
            suite.test_declared_facts_are_shared(
                Sharing(VirtualClock(T0), strict=True), _scenario()
            )
        )


def test_the_spy_sees_an_undeclared_ability_looked_up() -> None:
    from hpcstate.testing.conformance import _AbilitySpy

    backend = Finding(VirtualClock(T0), Capabilities(idempotent_submit=False))
    spy = _AbilitySpy(backend)
    assert spy.name == "scripted"  # the Backend's own names pass through unseen
    assert not spy.touched
    getattr(spy, "find_submission", None)  # what a probing loop would do
    assert spy.touched == {"find_submission"}


def test_the_example_in_the_docs_runs() -> None:
    """docs/api/testing.md's reference-loop example, as written."""
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "api" / "testing.md"
    (code,) = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    namespace: dict[str, object] = {}
    exec(compile(code, str(doc), "exec"), namespace)
    asyncio.run(namespace["example"]())  # type: ignore[operator]
