"""The tracker over the real local backend and a real SQLite file. A scripted fake
backend appears only where no real system here can produce the situation (a job
that stays settling, an accounting lag, an outage)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

from attrs import evolve

import hpcstate as h
from hpcstate import (
    Absence,
    Event,
    ExitStatus,
    JobStats,
    MarkerCode,
    Observation,
    SchedulerUnavailable,
    Source,
    State,
)
from hpcstate.backend import JobSpec
from hpcstate.runtime import (
    ErrorPattern,
    Store,
    SyncTracker,
    Tracker,
)
from hpcstate.runtime._store import Change
from hpcstate.runtime.local import LocalBackend

from .fakes import ScriptedBackend, VirtualClock

PY = sys.executable


def local_tracker(db_path: Path, local: LocalBackend, **options: object) -> Tracker:
    return Tracker(store=db_path, backends={"local": local}, fast_interval=0.05, **options)  # type: ignore[arg-type]


# -- the local backend, end to end -----------------------------------------------------------


async def test_submit_and_wait_gives_the_confirmed_verdict(
    db_path: Path, local: LocalBackend
) -> None:
    async with local_tracker(db_path, local) as tracker:
        run = await tracker.submit(JobSpec(command=["sh", "-c", "exit 3"]), name="three")
        assert run.items[0].state in (State.QUEUED, State.RUNNING)
        done = await tracker.wait(run.id, timeout=30)
    (item,) = done.items
    assert item.state is State.FAILED
    assert item.confirmed
    assert item.exit == ExitStatus.exited(3)
    assert item.stats.exit_source is Source.PROCESS
    assert done.name == "three"


async def test_array_runs_one_process_per_task(db_path: Path, local: LocalBackend) -> None:
    spec = JobSpec(command=["sh", "-c", 'exit "$HPCSTATE_ARRAY_INDEX"'], array="0-2")
    async with local_tracker(db_path, local) as tracker:
        run = await tracker.submit(spec)
        done = await tracker.wait(run.id, timeout=30)
    assert [i.array_index for i in done.items] == [0, 1, 2]
    assert [i.exit for i in done.items] == [ExitStatus.exited(n) for n in (0, 1, 2)]
    assert [i.state for i in done.items] == [State.COMPLETED, State.FAILED, State.FAILED]
    assert len({i.native_id for i in done.items}) == 3


async def test_array_throttle_limits_running_tasks(db_path: Path, local: LocalBackend) -> None:
    spec = JobSpec(command=["sleep", "0.3"], array="0-3%1")
    async with local_tracker(db_path, local) as tracker:
        run = await tracker.submit(spec)
        assert sum(1 for i in run.items if i.state is not State.PENDING) == 1
        done = await tracker.wait(run.id, timeout=30)
    assert {i.state for i in done.items} == {State.COMPLETED}
    starts = sorted(i.stats.started_at for i in done.items if i.stats.started_at)
    ends = sorted(i.stats.finished_at for i in done.items if i.stats.finished_at)
    assert all(ends[n] <= starts[n + 1] for n in range(3))  # never two at once


async def test_cancel_running_and_pending(db_path: Path, local: LocalBackend) -> None:
    async with local_tracker(db_path, local, concurrency={"local": 1}) as tracker:
        first = await tracker.submit(JobSpec(command=["sleep", "30"]))
        second = await tracker.submit(JobSpec(command=["sleep", "30"]))
        assert second.items[0].state is State.PENDING  # the cap holds it back
        await tracker.cancel(second.id)
        await tracker.cancel(first.id)
        first_done = await tracker.wait(first.id, timeout=30)
        second_done = tracker.get_run(second.id)
    (item,) = first_done.items
    assert item.state is State.CANCELLED
    assert item.has_marker(MarkerCode.CANCEL_REQUESTED.value)
    assert item.exit == ExitStatus.killed(signal.SIGTERM)
    assert second_done.items[0].state is State.CANCELLED
    assert second_done.items[0].native_id is None  # never reached the backend


async def test_adopt_a_job_by_native_id(db_path: Path, local: LocalBackend) -> None:
    job = await local.submit(JobSpec(command=["sh", "-c", "exit 5"]))
    async with local_tracker(db_path, local) as tracker:
        run = await tracker.track("local", job.native_id, name="adopted")
        done = await tracker.wait(run.id, timeout=30)
    assert done.items[0].exit == ExitStatus.exited(5)
    assert done.items[0].native_id == job.native_id


# -- events --------------------------------------------------------------------------------


async def test_watch_delivers_each_event_once_in_order(db_path: Path, local: LocalBackend) -> None:
    async with local_tracker(db_path, local) as tracker:
        run = await tracker.submit(JobSpec(command=["sleep", "0.2"], array="0-2"))
        seen_callback: list[Event] = []
        tracker.subscribe(seen_callback.append, run_id=run.id)

        async def collect() -> list[Event]:
            return [event async for event in tracker.watch(run.id)]

        first, second = await asyncio.wait_for(asyncio.gather(collect(), collect()), 30)
        await tracker.wait(run.id, timeout=30)
        stored = [s.event for s in tracker.store.events(run_id=run.id)]
    assert first == second == stored  # history replayed, then live, nothing twice
    keys = [(e.item_id, e.version) for e in first]
    assert len(keys) == len(set(keys))
    for item in run.items:
        versions = [e.version for e in first if e.item_id == item.id]
        assert versions == sorted(versions)
        assert [type(e).__name__ for e in first if e.item_id == item.id][-1] == "Finished"
    # The callback saw the live part, in the same order.
    assert seen_callback == stored[len(stored) - len(seen_callback) :]


# -- crash and resume ----------------------------------------------------------------------

_CRASHING_TRACKER = textwrap.dedent(
    """
    import asyncio, sys
    from hpcstate.backend import JobSpec
    from hpcstate.runtime import Tracker
    from hpcstate.runtime.local import LocalBackend

    async def main():
        backend = LocalBackend(root=sys.argv[2], kill_grace=0.5)
        tracker = Tracker(store=sys.argv[1], backends={"local": backend},
                          concurrency={"local": 2}, fast_interval=0.05)
        async with tracker:
            run = await tracker.submit(JobSpec(command=["sleep", "1"], array="0-4"))
            print(run.id, flush=True)
            await asyncio.sleep(3600)   # killed here, mid-run

    asyncio.run(main())
    """
)


async def test_tracker_killed_mid_run_resumes_without_loss_or_resubmit(
    db_path: Path, tmp_path: Path
) -> None:
    root = tmp_path / "jobs"
    proc = subprocess.Popen(
        [PY, "-c", _CRASHING_TRACKER, str(db_path), str(root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert run_id
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    with Store(db_path) as store:
        before = store.get_run(run_id)
    # Killed with the cap reached: some tasks submitted (their jobs run on), some pending.
    submitted_before = {i.id: i.native_id for i in before.items if i.native_id}
    assert 1 <= len(submitted_before) < 5
    backend = LocalBackend(root=root, kill_grace=0.5)
    async with Tracker(
        store=db_path, backends={"local": backend}, concurrency={"local": 2}, fast_interval=0.05
    ) as tracker:
        done = await tracker.wait(run_id, timeout=60)
    assert [i.state for i in done.items] == [State.COMPLETED] * 5
    assert all(i.confirmed for i in done.items)
    # The jobs submitted before the crash are the same jobs now (not submitted again)...
    for item in done.items:
        if item.id in submitted_before:
            assert item.native_id == submitted_before[item.id]
    # ...and exactly one process ran per task: no lost item, no duplicate.
    job_dirs = [d for d in root.iterdir() if d.name != "tags"]
    assert len(job_dirs) == 5
    assert {i.native_id for i in done.items} == {d.name for d in job_dirs}


async def test_submit_in_doubt_is_looked_up_by_tag_before_submitting(
    db_path: Path, local: LocalBackend
) -> None:
    # A tracker claimed the item, the job started, and the tracker died before it
    # stored the answer: the store has a PENDING item with a submit tag.
    now = h.new_item(id="x", run_id="x", backend="local", now=VirtualClock().now()).created_at
    with Store(db_path) as store:
        item = h.new_item(id="r9.0", run_id="r9", backend="local", now=now)
        spec = JobSpec(command=["sh", "-c", "exit 6"])
        store.create_run(h.Run(id="r9", backend="local", created_at=now, items=[item]), spec=spec)
        stale = now - timedelta(hours=1)
        assert store.claim_submit("r9.0", version=0, tag="hpcstate-r9.0", at=stale)
    job = await local.submit(JobSpec(command=["sh", "-c", "exit 6"], tag="hpcstate-r9.0"))
    async with local_tracker(db_path, local) as tracker:
        done = await tracker.wait("r9", timeout=30)
    assert done.items[0].native_id == job.native_id
    assert done.items[0].exit == ExitStatus.exited(6)
    assert len([d for d in local.root.iterdir() if d.name != "tags"]) == 1  # not re-submitted


# -- self-report ---------------------------------------------------------------------------

_REPORT = "from hpcstate.runtime import report; report({code})"


async def test_self_report_never_overrides_a_time_limit(db_path: Path, local: LocalBackend) -> None:
    # The job reports success, then overruns its time limit and is killed.
    script = f'{PY} -c "{_REPORT.format(code=0)}"; sleep 30'
    spec = JobSpec(command=["sh", "-c", script], time_limit=timedelta(seconds=2))
    async with local_tracker(db_path, local) as tracker:
        run = await tracker.submit(spec)
        done = await tracker.wait(run.id, timeout=30)
        events = [s.event for s in tracker.store.events(run_id=run.id)]
    (item,) = done.items
    assert item.state is State.TIMEOUT
    assert item.confirmed
    assert item.stats.exit_source is Source.PROCESS
    assert not any(e.confirmed_success for e in events)  # no success hook ever fired


async def test_self_report_settles_then_the_process_confirms(
    db_path: Path, local: LocalBackend
) -> None:
    script = f'{PY} -c "{_REPORT.format(code=0)}"; sleep 1.5'
    async with local_tracker(db_path, local) as tracker:
        run = await tracker.submit(JobSpec(command=["sh", "-c", script]))
        states = [event.state async for event in tracker.watch(run.id)]
        done = tracker.get_run(run.id)
    assert State.SETTLING in states  # the report moved it before the process ended
    (item,) = done.items
    assert item.state is State.COMPLETED
    assert item.confirmed
    assert item.has_marker(MarkerCode.SELF_REPORTED.value)


async def test_self_report_of_success_loses_to_a_failing_exit(
    db_path: Path, local: LocalBackend
) -> None:
    script = f'{PY} -c "{_REPORT.format(code=0)}"; exit 3'
    async with local_tracker(db_path, local) as tracker:
        run = await tracker.submit(JobSpec(command=["sh", "-c", script]))
        done = await tracker.wait(run.id, timeout=30)
    assert done.items[0].state is State.FAILED
    assert done.items[0].exit == ExitStatus.exited(3)


# -- output checks ---------------------------------------------------------------------------


async def test_error_pattern_fails_and_cancels_the_job(db_path: Path, local: LocalBackend) -> None:
    script = "echo starting; echo 'Traceback (most recent call last):'; sleep 30"
    async with local_tracker(db_path, local) as tracker:
        run = await tracker.submit(
            JobSpec(command=["sh", "-c", script]),
            output_checks=[ErrorPattern(patterns=["^Traceback"])],
        )
        done = await tracker.wait(run.id, timeout=30)
    (item,) = done.items
    assert item.state is State.FAILED
    assert item.stats.confirmed_by is Source.OUTPUT_CHECK
    assert item.has_marker(MarkerCode.OUTPUT_CHECK.value)
    # The job itself was stopped, not left hanging.
    for _ in range(200):
        (obs,) = await local.queue([item.native_id or ""])
        if obs.final:
            break
        await asyncio.sleep(0.05)
    assert obs.state is State.CANCELLED


# -- the sync facade ---------------------------------------------------------------------------


def test_sync_tracker(db_path: Path, local: LocalBackend) -> None:
    with SyncTracker(store=str(db_path), backends={"local": local}, fast_interval=0.05) as tracker:
        run = tracker.submit(JobSpec(command=["true"]))
        done = tracker.wait(run.id, timeout=30)
    assert done.items[0].succeeded


# -- situations only a scripted backend can produce ---------------------------------------------


def _queue(native_id: str, clock: VirtualClock, state: State | None, **kw: object) -> Observation:
    absence = Absence.ABSENT if state is None else None
    return Observation(
        native_id=native_id,
        source=kw.pop("source", Source.QUEUE),  # type: ignore[arg-type]
        observed_at=clock.now(),
        state=state,
        absence=absence,
        **kw,  # type: ignore[arg-type]
    )


def fake_tracker(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock, **kw: object
) -> Tracker:
    return Tracker(store=db_path, backends={"fake": fake}, clock=clock, **kw)  # type: ignore[arg-type]


async def test_one_queue_call_and_accounting_only_for_those_who_need_it(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    tracker = fake_tracker(db_path, fake, clock)
    runs = [await tracker.submit(JobSpec(command=["x"]), backend="fake") for _ in range(3)]
    ids = [r.items[0].native_id for r in runs]
    assert ids == ["101", "102", "103"]
    fake.queue_answers = {
        "101": _queue("101", clock, State.RUNNING),
        "102": _queue("102", clock, None),
    }
    fake.queue_answers["103"] = _queue("103", clock, State.QUEUED)
    report = await tracker.poll_once()
    assert report.queue_calls == 1
    assert fake.queue_calls == [("101", "102", "103")]
    # 102 left the queue this very moment: its record is rarely complete yet.
    assert report.accounting_calls == 0
    assert report.settling == 1
    clock.advance(tracker.accounting_lag)
    report = await tracker.poll_once()
    # Only 102 left the queue: only it is asked of accounting, in one call.
    assert report.accounting_calls == 1
    assert [q.native_ids for q in fake.accounting_calls] == [("102",)]
    assert fake.accounting_calls[0].submitted_after is not None
    await tracker.aclose()


async def test_grace_fallback_then_late_confirmation(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    tracker = fake_tracker(db_path, fake, clock, grace=timedelta(seconds=60))
    run = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    fake.queue_answers["101"] = _queue("101", clock, State.RUNNING)
    await tracker.poll_once()
    clock.advance(5)
    fake.queue_answers["101"] = _queue("101", clock, None)  # left the queue; accounting lags
    fake.accounting_answers["101"] = _queue("101", clock, None, source=Source.ACCOUNTING)
    fake.accounting_answers["101"] = Observation(
        native_id="101",
        source=Source.ACCOUNTING,
        observed_at=clock.now(),
        absence=Absence.NO_RECORD,
    )
    await tracker.poll_once()
    assert tracker.get_run(run.id).items[0].state is State.SETTLING
    clock.advance(61)
    await tracker.poll_once()
    item = tracker.get_run(run.id).items[0]
    assert (item.state, item.confirmed) == (State.COMPLETED, False)
    assert item.has_marker(MarkerCode.UNCONFIRMED.value)
    # The record appears late: it corrects the verdict (a failure, here).
    clock.advance(5)
    fake.accounting_answers["101"] = Observation(
        native_id="101",
        source=Source.ACCOUNTING,
        observed_at=clock.now(),
        state=State.FAILED,
        final=True,
        stats=JobStats(exit=ExitStatus.exited(2)),
    )
    await tracker.poll_once()
    item = tracker.get_run(run.id).items[0]
    assert (item.state, item.confirmed, item.exit) == (State.FAILED, True, ExitStatus.exited(2))
    kinds = [type(s.event).__name__ for s in tracker.store.events(run_id=run.id)]
    assert kinds[-1] == "Corrected"
    await tracker.aclose()


async def test_concurrency_cap_counts_settling_items(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    tracker = fake_tracker(db_path, fake, clock, concurrency={"fake": 1})
    first = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    second = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    assert second.items[0].state is State.PENDING
    # The first leaves the queue but accounting has no record: it settles...
    fake.queue_answers["101"] = _queue("101", clock, None)
    fake.accounting_answers["101"] = Observation(
        native_id="101",
        source=Source.ACCOUNTING,
        observed_at=clock.now(),
        absence=Absence.NO_RECORD,
    )
    await tracker.poll_once()
    clock.advance(1)
    await tracker.poll_once()
    assert tracker.get_run(first.id).items[0].state is State.SETTLING
    assert tracker.get_run(second.id).items[0].state is State.PENDING  # still holds the slot
    assert len(fake.submits) == 1
    # ...until its verdict is confirmed (accounting asked again no sooner than
    # accounting_interval after the last call); then the next one is submitted.
    clock.advance(tracker.accounting_interval)
    fake.accounting_answers["101"] = Observation(
        native_id="101",
        source=Source.ACCOUNTING,
        observed_at=clock.now(),
        state=State.COMPLETED,
        final=True,
        stats=JobStats(exit=ExitStatus.exited(0)),
    )
    await tracker.poll_once()
    assert tracker.get_run(first.id).items[0].succeeded
    await tracker.poll_once()
    assert tracker.get_run(second.id).items[0].state is State.QUEUED
    assert len(fake.submits) == 2
    await tracker.aclose()


async def test_unreachable_backend_never_changes_a_verdict(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    tracker = fake_tracker(db_path, fake, clock)
    run = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    fake.queue_answers["101"] = _queue("101", clock, State.RUNNING)
    await tracker.poll_once()
    fake.fail_with = SchedulerUnavailable("slurmctld: connection refused")
    for _ in range(3):
        clock.advance(10)
        report = await tracker.poll_once()
        assert report.errors
    item = tracker.get_run(run.id).items[0]
    assert item.state is State.RUNNING  # not failed, not gone, not settling
    assert item.has_marker(MarkerCode.UNREACHABLE.value)
    status = tracker.backend_status("fake")
    assert not status.reachable
    assert status.consecutive_failures == 3
    assert tracker.next_interval() > 4 * tracker.fast_interval  # it backs off
    fake.fail_with = None
    clock.advance(10)
    fake.queue_answers["101"] = _queue("101", clock, State.RUNNING)
    await tracker.poll_once()
    item = tracker.get_run(run.id).items[0]
    assert item.state is State.RUNNING
    assert not item.has_marker(MarkerCode.UNREACHABLE.value)
    assert tracker.backend_status("fake").reachable
    await tracker.aclose()


async def test_illegal_transition_is_counted_not_fatal(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    # A settling row that lost its settling_since, in a store opened without the sweep:
    # applying anything to it would break an invariant, which the machine refuses.
    tracker = fake_tracker(db_path, fake, clock, sweep=False)
    run = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    fake.queue_answers["101"] = _queue("101", clock, State.COMPLETED)
    fake.accounting_answers["101"] = Observation(
        native_id="101",
        source=Source.ACCOUNTING,
        observed_at=clock.now(),
        absence=Absence.NO_RECORD,
    )
    await tracker.poll_once()
    settling = tracker.get_run(run.id).items[0]
    assert settling.state is State.SETTLING
    with Store(db_path, sweep=False) as other:
        broken = evolve(settling, settling_since=None, version=settling.version + 1)
        other.commit([Change(item=broken, expected_version=settling.version)])
    clock.advance(1)
    fake.queue_answers["101"] = _queue(
        "101", clock, State.RUNNING, stats=JobStats(nodes=("node7",))
    )
    report = await tracker.poll_once()
    assert report.illegal == 1
    assert tracker.illegal_transitions == 1
    item = tracker.get_run(run.id).items[0]
    assert item == broken  # left exactly as it was, and the tracker goes on
    assert (await tracker.poll_once()).errors == ()
    await tracker.aclose()


async def test_a_concurrent_writer_wins_and_the_tracker_rereads(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    tracker = fake_tracker(db_path, fake, clock)
    run = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    await tracker.poll_once()
    # Another process (a CLI) adds a marker behind the tracker's back, bumping the version.
    with Store(db_path, sweep=False) as other:
        item = other.get_item(run.items[0].id)
        step = h.add_marker(item, h.Marker(code="note", text="hi"), at=clock.now())
        other.commit([Change(item=step.item, expected_version=item.version, events=step.events)])
    clock.advance(1)
    fake.queue_answers["101"] = _queue("101", clock, State.RUNNING)
    await tracker.poll_once()
    item = tracker.get_run(run.id).items[0]
    assert item.state is State.RUNNING
    assert item.has_marker("note")  # the other writer's change survived
    await tracker.aclose()


async def test_poll_interval_is_fast_after_submit_and_backs_off(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    tracker = fake_tracker(db_path, fake, clock, fast_interval=1.0, max_interval=30.0, seed=1)
    await tracker.submit(JobSpec(command=["x"]), backend="fake")
    fake.queue_answers["101"] = _queue("101", clock, State.RUNNING)
    await tracker.poll_once()
    assert tracker.next_interval() <= 1.2
    intervals = []
    for _ in range(20):
        clock.advance(60)
        fake.queue_answers["101"] = _queue("101", clock, State.RUNNING)
        await tracker.poll_once()
        intervals.append(tracker.next_interval())
    assert intervals[-1] >= 0.8 * 30.0
    assert max(intervals) <= 1.2 * 30.0
    await tracker.aclose()


async def test_add_marker_is_a_compare_and_set_with_its_event(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    tracker = fake_tracker(db_path, fake, clock)
    seen: list[Event] = []
    tracker.subscribe(seen.append)
    run = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    item_id = run.items[0].id
    # Another process changes the item first: the marker lands on top of its change.
    with Store(db_path, sweep=False) as other:
        item = other.get_item(item_id)
        step = h.add_marker(item, h.Marker(code="note", text="theirs"), at=clock.now())
        other.commit([Change(item=step.item, expected_version=item.version, events=step.events)])
    mine = h.Marker(code=MarkerCode.ALREADY_DONE.value, text="already there: out.txt")
    marked = await tracker.add_marker(item_id, mine)
    assert marked.has_marker("note")
    assert marked.has_marker(MarkerCode.ALREADY_DONE.value)
    assert marked.state is State.QUEUED  # never the state
    assert tracker.store.get_item(item_id) == marked
    assert seen[-1].version == marked.version
    again = await tracker.add_marker(item_id, mine)  # already there: nothing written
    assert again == marked
    # The tracker's cache holds the new version: its next write is not a conflict.
    clock.advance(1)
    fake.queue_answers["101"] = _queue("101", clock, State.RUNNING)
    report = await tracker.poll_once()
    assert report.conflicts == 0
    assert tracker.get_run(run.id).items[0].has_marker(MarkerCode.ALREADY_DONE.value)
    await tracker.aclose()
