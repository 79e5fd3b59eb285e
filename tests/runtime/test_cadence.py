"""The tracker's cadence: queue calls, report reads and accounting calls, on a virtual clock.

The backend is scripted (tests/runtime/fakes.py) because what is tested is WHEN the tracker
asks, not what a scheduler answers; the Slurm bench (bench/slurm_short_jobs.py) measures the
same cadence on the real loopback cluster.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from hpcstate import (
    Absence,
    ConfigError,
    ExitStatus,
    JobStats,
    MarkerCode,
    Observation,
    Source,
    State,
)
from hpcstate.backend import Capabilities, JobSpec
from hpcstate.runtime import SelfReport, Tracker

from .fakes import ScriptedBackend, VirtualClock

REPORTING = JobSpec(command=["x"], options={"report": "yes"}, stdout="/out/job.log")
SILENT = JobSpec(command=["x"], stdout="/out/job.log")


class ReportingBackend(ScriptedBackend):
    """Jobs whose spec says so write a report file; the test puts it in ``files``."""

    def __init__(self) -> None:
        super().__init__()
        self.capabilities = Capabilities(
            accounting=True, self_report=True, report_files=True, idempotent_submit=True
        )
        self.files: dict[str, str] = {}
        self.reads: list[tuple[str, ...]] = []

    def reports_itself(self, spec: JobSpec) -> bool:
        return spec.options.get("report") == "yes"

    async def read_text_files(self, paths: Sequence[str]) -> Mapping[str, str]:
        self.reads.append(tuple(paths))
        return {path: self.files[path] for path in paths if path in self.files}


@pytest.fixture
def backend() -> ReportingBackend:
    return ReportingBackend()


def _tracker(db_path: Path, backend: ReportingBackend, clock: VirtualClock, **kw: float) -> Tracker:
    return Tracker(store=db_path, backends={"fake": backend}, clock=clock, seed=1, **kw)  # type: ignore[arg-type]


def _seen(native_id: str, clock: VirtualClock, state: State) -> Observation:
    return Observation(
        native_id=native_id, source=Source.QUEUE, observed_at=clock.now(), state=state
    )


def _report(tracker: Tracker, backend: ReportingBackend, run_id: str, code: int) -> None:
    """The job writes its report file (as the Slurm wrapper does) when its payload ends."""
    row = tracker.store.get_item_row(f"{run_id}.0")
    report = SelfReport(
        run_id=run_id,
        item_id=f"{run_id}.0",
        exit=ExitStatus.exited(code),
        reported_at=tracker.clock.now(),
    )
    backend.files[row.extra["report_file"]] = json.dumps(report.to_dict())


def _confirm(backend: ReportingBackend, clock: VirtualClock, native_id: str, code: int) -> None:
    backend.accounting_answers[native_id] = Observation(
        native_id=native_id,
        source=Source.ACCOUNTING,
        observed_at=clock.now(),
        state=State.COMPLETED if code == 0 else State.FAILED,
        final=True,
        stats=JobStats(exit=ExitStatus.exited(code), finished_at=clock.now()),
    )


async def test_reporting_jobs_are_watched_through_files_and_the_queue_is_a_safety_net(
    db_path: Path, backend: ReportingBackend, clock: VirtualClock
) -> None:
    tracker = _tracker(db_path, backend, clock, queue_interval=60)
    run = await tracker.submit(REPORTING, backend="fake")
    native = run.items[0].native_id
    assert native is not None
    backend.queue_answers[native] = _seen(native, clock, State.RUNNING)
    first = await tracker.poll_once()
    assert first.queue_calls == 1  # the first poll asks the queue
    for _ in range(5):
        clock.advance(1)
        report = await tracker.poll_once()
        assert report.queue_calls == 0  # ... then the report file is what is watched
    assert len(backend.reads) == 6  # one read per poll, for the one reporting item
    # The job ends and reports 3: it settles at once, without any queue call.
    _report(tracker, backend, run.id, 3)
    clock.advance(1)
    report = await tracker.poll_once()
    assert report.queue_calls == 0
    assert tracker.get_run(run.id).items[0].state is State.SETTLING
    assert report.accounting_calls == 0  # the record is rarely complete at the job's end
    _confirm(backend, clock, native, 3)
    clock.advance(tracker.accounting_lag)
    report = await tracker.poll_once()
    assert report.accounting_calls == 1
    assert report.queue_calls == 0
    (item,) = tracker.get_run(run.id).items
    assert item.state is State.FAILED
    assert item.confirmed
    assert item.exit == ExitStatus.exited(3)
    assert len(backend.queue_calls) == 1  # one squeue for the whole life of the job


async def test_the_safety_net_finds_a_job_killed_before_it_could_report(
    db_path: Path, backend: ReportingBackend, clock: VirtualClock
) -> None:
    tracker = _tracker(db_path, backend, clock, queue_interval=30)
    run = await tracker.submit(REPORTING, backend="fake")
    native = run.items[0].native_id
    assert native is not None
    backend.queue_answers[native] = _seen(native, clock, State.RUNNING)
    await tracker.poll_once()
    clock.advance(10)
    backend.queue_answers[native] = _seen(native, clock, State.OUT_OF_MEMORY)  # no report
    assert (await tracker.poll_once()).queue_calls == 0
    assert tracker.get_run(run.id).items[0].state is State.RUNNING
    clock.advance(20)  # queue_interval since the last queue call
    report = await tracker.poll_once()
    assert report.queue_calls == 1
    assert tracker.get_run(run.id).items[0].state is State.OUT_OF_MEMORY


async def test_any_job_that_does_not_report_keeps_the_queue_asked_every_poll(
    db_path: Path, backend: ReportingBackend, clock: VirtualClock
) -> None:
    tracker = _tracker(db_path, backend, clock, queue_interval=60)
    reporting = await tracker.submit(REPORTING, backend="fake")
    silent = await tracker.submit(SILENT, backend="fake")
    for run in (reporting, silent):
        native = run.items[0].native_id
        assert native is not None
        backend.queue_answers[native] = _seen(native, clock, State.RUNNING)
    calls = []
    for _ in range(3):
        calls.append((await tracker.poll_once()).queue_calls)
        clock.advance(1)
    assert calls == [1, 1, 1]
    # The silent one ends; from then on only reporting jobs are active: the queue rests.
    silent_native = silent.items[0].native_id
    assert silent_native is not None
    backend.queue_answers[silent_native] = _seen(silent_native, clock, State.FAILED)
    assert (await tracker.poll_once()).queue_calls == 1
    assert tracker.get_run(silent.id).items[0].state is State.FAILED
    clock.advance(1)
    assert (await tracker.poll_once()).queue_calls == 0


async def test_a_cancel_request_brings_the_queue_back(
    db_path: Path, backend: ReportingBackend, clock: VirtualClock
) -> None:
    tracker = _tracker(db_path, backend, clock, queue_interval=60)
    run = await tracker.submit(REPORTING, backend="fake")
    native = run.items[0].native_id
    assert native is not None
    backend.queue_answers[native] = _seen(native, clock, State.RUNNING)
    await tracker.poll_once()
    clock.advance(1)
    assert (await tracker.poll_once()).queue_calls == 0
    await tracker.cancel(run.id)
    assert tracker.get_run(run.id).items[0].has_marker(MarkerCode.CANCEL_REQUESTED.value)
    backend.queue_answers[native] = _seen(native, clock, State.CANCELLED)
    clock.advance(1)
    assert (await tracker.poll_once()).queue_calls == 1  # a killed job writes no report
    assert tracker.get_run(run.id).items[0].state is State.CANCELLED


async def test_a_queued_job_that_reports_settles_without_being_seen_running(
    db_path: Path, backend: ReportingBackend, clock: VirtualClock
) -> None:
    # With a slow queue, a short job goes from pending to done between two queue calls.
    tracker = _tracker(db_path, backend, clock, queue_interval=60)
    run = await tracker.submit(REPORTING, backend="fake")
    native = run.items[0].native_id
    assert native is not None
    backend.queue_answers[native] = _seen(native, clock, State.QUEUED)
    await tracker.poll_once()
    assert tracker.get_run(run.id).items[0].state is State.QUEUED
    _report(tracker, backend, run.id, 0)
    clock.advance(1)
    await tracker.poll_once()
    item = tracker.get_run(run.id).items[0]
    assert item.state is State.SETTLING
    assert not item.succeeded  # the job's own word is never the verdict


async def test_accounting_is_batched_and_rate_limited(
    db_path: Path, backend: ReportingBackend, clock: VirtualClock
) -> None:
    tracker = _tracker(
        db_path, backend, clock, queue_interval=60, accounting_lag=1, accounting_interval=5
    )
    runs = [await tracker.submit(REPORTING, backend="fake") for _ in range(3)]
    natives = [run.items[0].native_id or "" for run in runs]
    for native in natives:
        backend.queue_answers[native] = _seen(native, clock, State.RUNNING)
    await tracker.poll_once()
    # The first job reports; accounting has no record yet when first asked.
    _report(tracker, backend, runs[0].id, 0)
    backend.accounting_answers[natives[0]] = Observation(
        native_id=natives[0], source=Source.ACCOUNTING, observed_at=clock.now(),
        absence=Absence.NO_RECORD,
    )  # fmt: skip
    clock.advance(1)
    await tracker.poll_once()  # settles
    clock.advance(1)
    assert (await tracker.poll_once()).accounting_calls == 1  # lag passed: asked
    # Two more report within the next seconds: no call before accounting_interval...
    _report(tracker, backend, runs[1].id, 1)
    _report(tracker, backend, runs[2].id, 2)
    counts = []
    for _ in range(4):
        clock.advance(1)
        counts.append((await tracker.poll_once()).accounting_calls)
    assert counts == [0, 0, 0, 0]
    for native, code in zip(natives, (0, 1, 2), strict=True):
        _confirm(backend, clock, native, code)
    clock.advance(1)
    report = await tracker.poll_once()
    # ...then ONE call for all three.
    assert report.accounting_calls == 1
    assert sorted(backend.accounting_calls[-1].native_ids) == sorted(natives)
    states = [tracker.get_run(run.id).items[0].state for run in runs]
    assert states == [State.COMPLETED, State.FAILED, State.FAILED]


async def test_next_interval_follows_the_work(
    db_path: Path, backend: ReportingBackend, clock: VirtualClock
) -> None:
    tracker = _tracker(
        db_path, backend, clock, fast_interval=1, max_interval=30, accounting_interval=5
    )
    run = await tracker.submit(REPORTING, backend="fake")
    native = run.items[0].native_id
    assert native is not None
    backend.queue_answers[native] = _seen(native, clock, State.RUNNING)
    clock.advance(100)  # long after the submit
    for _ in range(10):
        await tracker.poll_once()  # nothing changes: quiet polls
    assert tracker.next_interval() <= 1.2  # a reporting job is watched at the fast pace
    _report(tracker, backend, run.id, 0)
    await tracker.poll_once()
    await tracker.poll_once()
    clock.advance(1)
    await tracker.poll_once()  # accounting asked (no answer): next call in 5 s
    assert tracker.get_run(run.id).items[0].state is State.SETTLING
    assert 0.8 * 5 <= tracker.next_interval() <= 1.2 * 5


@pytest.mark.parametrize(
    "knob", ["fast_interval", "queue_interval", "accounting_lag", "accounting_interval"]
)
@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_bad_cadence_knobs_are_refused(db_path: Path, knob: str, value: float) -> None:
    with pytest.raises(ConfigError, match=knob):
        Tracker(store=db_path, **{knob: value})  # type: ignore[arg-type]


async def _run_loop_for(tracker: Tracker, clock: VirtualClock, seconds: float) -> int:
    """Poll as the loop would (each next_interval), for ``seconds`` of virtual time."""
    polls = 0
    end = clock.now() + timedelta(seconds=seconds)
    while clock.now() < end:
        await tracker.poll_once()
        polls += 1
        clock.advance(tracker.next_interval())
    return polls


async def test_a_reporting_job_does_not_make_the_other_queues_fast(
    db_path: Path, backend: ReportingBackend, clock: VirtualClock
) -> None:
    # One wrapped job keeps the loop at 1 s to read its file; the other jobs (a script on
    # the same backend, a job on another backend) keep their own backing-off pace.
    other = ScriptedBackend(name="other")
    tracker = Tracker(
        store=db_path, backends={"fake": backend, "other": other}, clock=clock, seed=3
    )
    runs = [
        await tracker.submit(REPORTING, backend="fake"),
        await tracker.submit(SILENT, backend="fake"),
        await tracker.submit(SILENT, backend="other"),
    ]
    for run, answers in zip(
        runs, (backend.queue_answers, backend.queue_answers, other.queue_answers), strict=True
    ):
        native = run.items[0].native_id
        assert native is not None
        answers[native] = _seen(native, clock, State.RUNNING)
    clock.advance(60)  # past the fast pace that follows a submit
    polls = await _run_loop_for(tracker, clock, 600)
    assert polls >= 500  # the reporting job is watched every second...
    assert len(backend.reads) >= 500
    # ...but the queues back off to max_interval (30 s): 600 s -> about 20-30 calls each.
    assert len(backend.queue_calls) <= 40
    assert len(other.queue_calls) <= 40
    assert len(other.queue_calls) >= 15  # and are still asked


async def test_a_backend_that_cannot_be_reached_is_marked_and_backed_off(
    db_path: Path, backend: ReportingBackend, clock: VirtualClock
) -> None:
    tracker = _tracker(db_path, backend, clock, queue_interval=60)
    run = await tracker.submit(REPORTING, backend="fake")
    native = run.items[0].native_id
    assert native is not None
    backend.queue_answers[native] = _seen(native, clock, State.RUNNING)
    await tracker.poll_once()
    clock.advance(30)

    async def unreachable(paths: Sequence[str]) -> Mapping[str, str]:
        raise OSError("ssh: connect to host login1 port 22: Connection refused")

    backend.read_text_files = unreachable  # type: ignore[method-assign]
    report = await tracker.poll_once()
    assert report.queue_calls == 0  # not due: the report read is the only call
    assert report.errors  # and its failure is this poll's error
    assert "reading report files" in report.errors[0]
    assert not tracker.backend_status("fake").reachable
    (item,) = tracker.get_run(run.id).items
    assert item.has_marker(MarkerCode.UNREACHABLE.value)
    await tracker.poll_once()
    assert tracker.next_interval() > 2 * 1.2  # backing off, not 1 s


async def test_reports_itself_without_report_reading_is_not_trusted(
    db_path: Path, clock: VirtualClock
) -> None:
    # A backend that says its jobs report but does not declare capabilities.self_report:
    # their files would never be read while they run, so the queue stays the source.
    backend = ReportingBackend()
    backend.capabilities = Capabilities(
        accounting=True, self_report=False, report_files=True, idempotent_submit=True
    )
    tracker = _tracker(db_path, backend, clock, queue_interval=60)
    run = await tracker.submit(REPORTING, backend="fake")
    assert tracker.store.get_item_row(run.items[0].id).extra["self_reports"] is False
    native = run.items[0].native_id
    assert native is not None
    backend.queue_answers[native] = _seen(native, clock, State.RUNNING)
    calls = []
    for _ in range(3):
        calls.append((await tracker.poll_once()).queue_calls)
        clock.advance(1)
    assert calls == [1, 1, 1]


async def test_a_grace_about_to_run_out_asks_queue_and_accounting_whatever_the_pace(
    db_path: Path, backend: ReportingBackend, clock: VirtualClock
) -> None:
    tracker = Tracker(
        store=db_path,
        backends={"fake": backend},
        clock=clock,
        seed=1,
        grace=timedelta(seconds=20),
        queue_interval=60,
        accounting_interval=30,
    )
    run = await tracker.submit(REPORTING, backend="fake")
    native = run.items[0].native_id
    assert native is not None
    backend.queue_answers[native] = _seen(native, clock, State.RUNNING)
    await tracker.poll_once()
    _report(tracker, backend, run.id, 0)
    backend.accounting_answers[native] = Observation(
        native_id=native, source=Source.ACCOUNTING, observed_at=clock.now(),
        absence=Absence.NO_RECORD,
    )  # fmt: skip
    clock.advance(1)
    await tracker.poll_once()  # settles on the report
    clock.advance(2)
    await tracker.poll_once()  # accounting asked once (no record); next call not before 30 s
    queue_before, accounting_before = len(backend.queue_calls), len(backend.accounting_calls)
    # The loop wakes before the grace (20 s from t=1) runs out, jitter or not...
    assert all(tracker.next_interval() <= 21 - 3 - 1.5 for _ in range(50))
    clock.advance(16)  # ...here 19 s into it: the queue still lists it (COMPLETING)
    await tracker.poll_once()
    assert len(backend.queue_calls) == queue_before + 1
    assert len(backend.accounting_calls) == accounting_before + 1
    item = tracker.get_run(run.id).items[0]
    assert item.state is State.SETTLING  # the queue's sighting restarted the grace
    assert not item.terminal


async def test_the_loop_wakes_when_accounting_becomes_due_not_a_poll_later(
    db_path: Path, backend: ReportingBackend, clock: VirtualClock
) -> None:
    # A reporting job keeps the pace at fast_interval; another one's accounting falls due
    # between two of those polls: the loop wakes for it then (issue 17: every verdict
    # would otherwise wait up to one more interval).
    tracker = _tracker(
        db_path, backend, clock, fast_interval=1, accounting_lag=1, accounting_interval=4
    )
    ended = await tracker.submit(REPORTING, backend="fake")
    running = await tracker.submit(REPORTING, backend="fake")
    for run in (ended, running):
        native = run.items[0].native_id or ""
        backend.queue_answers[native] = _seen(native, clock, State.RUNNING)
    await tracker.poll_once()
    _report(tracker, backend, ended.id, 0)
    clock.advance(1)
    await tracker.poll_once()  # the report is read: settling from now
    assert tracker.get_run(ended.id).items[0].state is State.SETTLING
    clock.advance(0.5)
    assert (await tracker.poll_once()).accounting_calls == 0  # settled 0.5 s of 1
    assert 0.5 <= tracker.next_interval() <= 0.52
    clock.advance(tracker.next_interval())
    assert (await tracker.poll_once()).accounting_calls == 1
