"""Unconfirmed verdicts (COMPLETED by the grace fallback, and GONE) are corrected by a
late accounting record, even after an accounting outage far longer than the grace.

The scripted fake backend stands in for a scheduler whose accounting is down for hours:
no real system here can produce that on demand.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

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
from hpcstate.backend import JobSpec
from hpcstate.runtime import Tracker

from .fakes import ScriptedBackend, VirtualClock

GRACE = timedelta(seconds=60)


def _seen(clock: VirtualClock, state: State | None, **kw: object) -> Observation:
    return Observation(
        native_id="101",
        source=kw.pop("source", Source.QUEUE),  # type: ignore[arg-type]
        observed_at=clock.now(),
        state=state,
        absence=kw.pop("absence", Absence.ABSENT if state is None else None),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def _record(clock: VirtualClock, state: State, code: int) -> Observation:
    return _seen(
        clock,
        state,
        source=Source.ACCOUNTING,
        final=True,
        stats=JobStats(exit=ExitStatus.exited(code)),
    )


def _tracker(db_path: Path, fake: ScriptedBackend, clock: VirtualClock, **kw: object) -> Tracker:
    return Tracker(
        store=db_path,
        backends={"fake": fake},
        clock=clock,
        grace=GRACE,
        max_interval=30.0,
        **kw,  # type: ignore[arg-type]
    )


async def _verdict_during_outage(
    tracker: Tracker, fake: ScriptedBackend, clock: VirtualClock, *, ran: bool
) -> str:
    """Submit one job; it runs (or is never seen) and leaves the queue while accounting
    is down; the grace runs out: an unconfirmed verdict. Returns the run id."""
    run = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    fake.accounting_fail_with = SchedulerUnavailable("slurmdbd is not responding")
    if ran:
        fake.queue_answers["101"] = _seen(clock, State.RUNNING)
        await tracker.poll_once()
    clock.advance(5)
    fake.queue_answers["101"] = _seen(clock, None)
    await tracker.poll_once()
    assert tracker.get_run(run.id).items[0].state is State.SETTLING
    clock.advance(GRACE.total_seconds() + 1)
    await tracker.poll_once()
    return run.id


async def _poll_for(tracker: Tracker, clock: VirtualClock, seconds: float, step: float) -> None:
    for _ in range(int(seconds / step)):
        clock.advance(step)
        await tracker.poll_once()


async def test_unconfirmed_completed_is_corrected_after_a_long_outage(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    tracker = _tracker(db_path, fake, clock)
    run_id = await _verdict_during_outage(tracker, fake, clock, ran=True)
    item = tracker.get_run(run_id).items[0]
    assert (item.state, item.confirmed) == (State.COMPLETED, False)
    # Accounting stays down for two hours (120 grace periods), polled every 5 s.
    await _poll_for(tracker, clock, 2 * 3600, 5)
    fake.accounting_fail_with = None
    fake.accounting_answers["101"] = _record(clock, State.FAILED, 2)
    await _poll_for(tracker, clock, 35, 5)
    item = tracker.get_run(run_id).items[0]
    assert (item.state, item.confirmed, item.exit) == (State.FAILED, True, ExitStatus.exited(2))
    assert not item.has_marker(MarkerCode.UNCONFIRMED.value)
    kinds = [type(s.event).__name__ for s in tracker.store.events(run_id=run_id)]
    assert kinds[-1] == "Corrected"
    await tracker.aclose()


async def test_gone_is_corrected_by_a_late_record(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    tracker = _tracker(db_path, fake, clock)
    run_id = await _verdict_during_outage(tracker, fake, clock, ran=False)
    item = tracker.get_run(run_id).items[0]
    assert (item.state, item.confirmed) == (State.GONE, False)  # never seen running
    await _poll_for(tracker, clock, 3600, 30)
    fake.accounting_fail_with = None
    fake.accounting_answers["101"] = _record(clock, State.COMPLETED, 0)
    await _poll_for(tracker, clock, 30, 30)
    item = tracker.get_run(run_id).items[0]
    assert (item.state, item.confirmed) == (State.COMPLETED, True)
    assert not item.has_marker(MarkerCode.GONE.value)
    await tracker.aclose()


async def test_late_checks_are_slow_batched_and_bounded(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    tracker = _tracker(db_path, fake, clock, late_check_window=timedelta(hours=3))
    run_id = await _verdict_during_outage(tracker, fake, clock, ran=True)
    verdict_at = tracker.get_run(run_id).items[0].updated_at
    # After the grace, polls every 5 s ask accounting at most once per 30 s.
    clock.advance(GRACE.total_seconds())
    fake.accounting_calls.clear()
    await _poll_for(tracker, clock, 600, 5)
    assert 18 <= len(fake.accounting_calls) <= 20
    assert all(q.native_ids == ("101",) for q in fake.accounting_calls)
    # Old unconfirmed verdicts do not keep the loop at its fast pace.
    assert tracker.next_interval() > 4 * tracker.fast_interval
    # After the window, it stops asking.
    clock.current = verdict_at + timedelta(hours=3, seconds=1)
    fake.accounting_calls.clear()
    await _poll_for(tracker, clock, 600, 30)
    assert fake.accounting_calls == []
    assert tracker.get_run(run_id).items[0].state is State.COMPLETED
    await tracker.aclose()


async def test_accounting_that_forgot_the_job_is_not_asked_again(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    tracker = _tracker(db_path, fake, clock)
    await _verdict_during_outage(tracker, fake, clock, ran=True)
    fake.accounting_fail_with = None
    fake.accounting_answers["101"] = _seen(
        clock, None, source=Source.ACCOUNTING, absence=Absence.UNKNOWN, detail="purged"
    )
    await _poll_for(tracker, clock, 30, 30)
    assert len(fake.accounting_calls) > 0
    fake.accounting_calls.clear()
    await _poll_for(tracker, clock, 600, 30)
    assert fake.accounting_calls == []
    await tracker.aclose()


async def test_a_job_the_queue_declares_purged_is_not_asked_about(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    # GONE because the scheduler said it will never know the job: nothing comes back.
    tracker = _tracker(db_path, fake, clock)
    run = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    fake.queue_answers["101"] = _seen(clock, None, absence=Absence.UNKNOWN, detail="purged")
    await tracker.poll_once()
    assert tracker.get_run(run.id).items[0].state is State.GONE
    await _poll_for(tracker, clock, 600, 30)
    assert fake.accounting_calls == []
    await tracker.aclose()


async def test_a_restarted_tracker_still_corrects_old_unconfirmed_verdicts(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    first = _tracker(db_path, fake, clock)
    run_id = await _verdict_during_outage(first, fake, clock, ran=True)
    await first.aclose()
    clock.advance(5 * 3600)  # far beyond the grace
    fake.accounting_fail_with = None
    fake.accounting_answers["101"] = _record(clock, State.TIMEOUT, 0)
    second = _tracker(db_path, fake, clock)
    await second.poll_once()
    item = second.get_run(run_id).items[0]
    assert (item.state, item.confirmed) == (State.TIMEOUT, True)
    await second.aclose()


async def test_backends_without_accounting_are_never_asked(
    db_path: Path, clock: VirtualClock
) -> None:
    fake = ScriptedBackend(accounting=False)
    tracker = _tracker(db_path, fake, clock)
    run = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    fake.queue_answers["101"] = _seen(clock, State.RUNNING)
    await tracker.poll_once()
    clock.advance(5)
    fake.queue_answers["101"] = _seen(clock, None)
    await _poll_for(tracker, clock, 120, 5)
    item = tracker.get_run(run.id).items[0]
    assert (item.state, item.confirmed) == (State.COMPLETED, False)
    assert fake.accounting_calls == []
    assert tracker.next_interval() > 4 * tracker.fast_interval
    await tracker.aclose()


async def test_old_verdicts_of_a_backend_this_tracker_lacks_are_not_errors(
    db_path: Path, fake: ScriptedBackend, clock: VirtualClock
) -> None:
    first = _tracker(db_path, fake, clock)
    await _verdict_during_outage(first, fake, clock, ran=True)
    await first.aclose()
    clock.advance(3600)
    # A tracker (a CLI command, say) configured for other backends only.
    other = Tracker(store=db_path, backends={}, clock=clock, grace=GRACE)
    for _ in range(10):
        report = await other.poll_once()
        assert report.errors == ()
        assert report.failures == ()
        clock.advance(30)
    assert other.next_interval() > 4 * other.fast_interval  # no error backoff, no fast pace
    assert other.backend_status("fake").reachable
    await other.aclose()
