"""Nothing one bad item, row or backend does escapes ``Tracker.poll_once``: it is logged,
counted in ``PollReport.failures``, and the rest of the poll goes on.

A scripted fake backend is used because the situations (a backend that raises a bug, a
lost answer to an array submit) cannot be produced on demand by a real scheduler here.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import hpcstate as h
from hpcstate import Observation, Source, State
from hpcstate.backend import JobSpec, Submission
from hpcstate.runtime import Change, Store, Tracker

from .fakes import ScriptedBackend, VirtualClock


def _running(native_id: str, clock: VirtualClock) -> Observation:
    return Observation(
        native_id=native_id, source=Source.QUEUE, observed_at=clock.now(), state=State.RUNNING
    )


def _in_doubt_array(db_path: Path, clock: VirtualClock, size: int) -> list[str]:
    """A whole-array run whose tracker claimed every task under one tag, submitted it,
    and died before storing the answer (10 minutes ago)."""
    now = clock.now() - timedelta(minutes=10)
    items = [
        h.new_item(id=f"rA.{i}", run_id="rA", backend="fake", now=now, array_index=i)
        for i in range(1, size + 1)
    ]
    with Store(db_path) as store:
        store.create_run(
            h.Run(id="rA", backend="fake", created_at=now, items=items),
            spec=JobSpec(command=["task"], array=f"1-{size}"),
            options={"whole_array": True},
        )
        for item in items:
            assert store.claim_submit(item.id, version=0, tag="hpcstate-rA", at=now)
    return [item.id for item in items]


async def test_resolving_an_in_doubt_array_submit_settles_every_task_once(
    db_path: Path, clock: VirtualClock
) -> None:
    # Resolving the first task's claim stores the answer for all tasks (their claims are
    # cleared while the loop over claims is still running): no TypeError, no resubmit.
    fake = ScriptedBackend(array_jobs=True)
    fake.tagged["hpcstate-rA"] = Submission(
        native_id="500", array_task_ids=("500_1", "500_2", "500_3")
    )
    ids = _in_doubt_array(db_path, clock, 3)
    tracker = Tracker(store=db_path, backends={"fake": fake}, clock=clock)
    report = await tracker.poll_once()
    assert report.failures == ()
    assert fake.submits == []  # found by its tag: never submitted again
    assert fake.lookups == ["hpcstate-rA"]  # one lookup answers the whole array
    items = tracker.get_run("rA").items
    assert [i.id for i in items] == ids
    assert [(i.state, i.native_id) for i in items] == [
        (State.QUEUED, "500_1"),
        (State.QUEUED, "500_2"),
        (State.QUEUED, "500_3"),
    ]
    await tracker.aclose()


async def test_a_backend_bug_in_submit_keeps_the_claim_and_spares_other_backends(
    db_path: Path, clock: VirtualClock
) -> None:
    bad = ScriptedBackend(name="bad")
    good = ScriptedBackend(name="good")
    tracker = Tracker(store=db_path, backends={"bad": bad, "good": good}, clock=clock)
    bad.submit_fail_with = RuntimeError("bug in the plugin")
    bad_run = await tracker.submit(JobSpec(command=["x"]), backend="bad")
    good_run = await tracker.submit(JobSpec(command=["x"]), backend="good")
    assert tracker.failures == 1  # submit() itself does not raise either
    good.queue_answers["101"] = _running("101", clock)
    report = await tracker.poll_once()
    assert tracker.get_run(good_run.id).items[0].state is State.RUNNING
    # The job may or may not exist: never a verdict; the claim stays for a tag lookup.
    (row,) = [tracker.store.get_item_row(bad_run.items[0].id)]
    assert row.item.state is State.PENDING
    assert row.submit_started_at is not None
    # The submit call's failure is reported by the next poll; the claim is fresh, so
    # this poll tried nothing more.
    assert [f.rsplit(": ", 1)[1] for f in report.failures] == ["bug in the plugin"]
    clock.advance(600)
    bad.submit_fail_with = None
    report = await tracker.poll_once()
    assert bad.lookups == [f"hpcstate-{bad_run.items[0].id}"]  # looked up, then submitted
    assert tracker.get_run(bad_run.id).items[0].state is State.QUEUED
    await tracker.aclose()


async def test_a_malformed_queue_answer_is_a_failure_not_a_crash(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    tracker = Tracker(store=db_path, backends={"fake": fake}, clock=clock)
    run = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    fake.queue_answers["101"] = "not an observation"  # type: ignore[assignment]
    report = await tracker.poll_once()
    assert len(report.failures) == 1
    assert "polling backend fake" in report.failures[0]
    assert report.errors  # the backend's poll counts as failed (backs off)
    assert tracker.get_run(run.id).items[0].state is State.QUEUED  # unchanged
    clock.advance(1)
    fake.queue_answers["101"] = _running("101", clock)
    report = await tracker.poll_once()
    assert report.failures == ()
    assert tracker.get_run(run.id).items[0].state is State.RUNNING
    await tracker.aclose()


async def test_a_corrupt_spec_row_does_not_stop_other_submits(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    tracker = Tracker(store=db_path, backends={"fake": fake}, clock=clock, concurrency={"fake": 0})
    broken = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    fine = await tracker.submit(JobSpec(command=["y"]), backend="fake")
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE runs SET spec = '{not json' WHERE id = ?", (broken.id,))
    tracker.concurrency["fake"] = 10
    report = await tracker.poll_once()
    assert len(report.failures) == 1
    assert broken.id in report.failures[0]
    assert tracker.get_run(broken.id).items[0].state is State.PENDING
    assert tracker.get_run(fine.id).items[0].state is State.QUEUED
    assert [s.command for s in fake.submits] == [("y",)]
    await tracker.aclose()


async def test_a_corrupt_event_row_is_skipped_for_subscribers(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    tracker = Tracker(store=db_path, backends={"fake": fake}, clock=clock)
    seen: list[h.Event] = []
    tracker.subscribe(seen.append)
    run = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    # Another process writes an event; then its row gets damaged.
    with Store(db_path, sweep=False) as other:
        item = other.get_item(run.items[0].id)
        step = h.add_marker(item, h.Marker(code="note", text="hi"), at=clock.now())
        other.commit([Change(item=step.item, expected_version=item.version, events=step.events)])
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE events SET doc = 'garbage' WHERE seq = (SELECT MAX(seq) FROM events)")
    clock.advance(1)
    fake.queue_answers["101"] = _running("101", clock)
    report = await tracker.poll_once()  # does not raise CorruptRow
    assert report.failures == ()
    assert tracker.get_run(run.id).items[0].state is State.RUNNING
    assert [type(e).__name__ for e in seen][-1] == "Started"
    await tracker.aclose()
