"""The verdict rules, scenario by scenario (the cases today's tools get wrong)."""

from __future__ import annotations

from datetime import timedelta

import hpcstate as h
from hpcstate import Absence, ExitStatus, JobStats, MarkerCode, Source, State

from .builders import at, obs, pending, queued, running, settling


def run_all(item: h.RunItem, *observations: h.Observation) -> tuple[h.RunItem, list[h.Event]]:
    events: list[h.Event] = []
    for observation in observations:
        step = h.advance(item, observation)
        item = step.item
        events.extend(step.events)
    return item, events


def accounting(seconds: float, state: State, **stats: object) -> h.Observation:
    return obs(seconds, state, source=Source.ACCOUNTING, final=True, stats=JobStats(**stats))  # type: ignore[arg-type]


def test_queue_completed_is_not_a_verdict() -> None:
    item, events = run_all(running(), obs(5, State.COMPLETED))
    assert item.state is State.SETTLING
    assert not any(isinstance(e, h.Finished) for e in events)
    assert item.stats.finished_at == at(5)
    assert item.stats.finished_at_approx


def test_accounting_overrules_a_queue_completed_with_the_real_failure() -> None:
    item, events = run_all(
        running(),
        obs(5, State.COMPLETED),
        accounting(6, State.FAILED, exit=ExitStatus.exited(3), finished_at=at(4)),
    )
    assert item.state is State.FAILED
    assert item.confirmed
    assert item.stats.exit == ExitStatus.exited(3)
    assert item.stats.finished_at == at(4)  # corrected by accounting
    assert not item.stats.finished_at_approx
    finished = [e for e in events if isinstance(e, h.Finished)]
    assert len(finished) == 1
    assert not finished[0].confirmed_success


def test_vanished_job_settles_and_accounting_confirms_success() -> None:
    item, events = run_all(
        running(),
        obs(5, absence=Absence.ABSENT),
        accounting(7, State.COMPLETED, exit=ExitStatus.exited(0)),
    )
    assert item.state is State.COMPLETED
    assert item.succeeded
    assert events[-1].confirmed_success


def test_accounting_lag_keeps_settling() -> None:
    item, _ = run_all(
        running(),
        obs(5, absence=Absence.ABSENT),
        obs(6, State.RUNNING, source=Source.ACCOUNTING),  # sacct still says RUNNING
        obs(7, absence=Absence.NO_RECORD, source=Source.ACCOUNTING),
    )
    assert item.state is State.SETTLING


def test_grace_fallback_is_unconfirmed_success_never_failure() -> None:
    item = settling()
    assert h.tick(item, now=at(3 + 599)).item is item
    step = h.tick(item, now=at(3 + 600))
    assert step.item.state is State.COMPLETED
    assert not step.item.confirmed
    assert not step.item.succeeded
    (marker,) = [m for m in step.item.markers if m.code == MarkerCode.UNCONFIRMED]
    assert "600 s" in marker.text
    assert not step.events[0].confirmed_success


def test_grace_is_configurable_and_restarts_while_the_queue_lists_the_job() -> None:
    item = settling()
    item = h.advance(item, obs(100, State.RUNNING)).item  # queue lags a self-report
    assert item.state is State.SETTLING
    assert h.grace_deadline(item, timedelta(seconds=60)) == at(160)
    assert h.tick(item, now=at(159), grace=timedelta(seconds=60)).item is item
    assert h.tick(item, now=at(160), grace=timedelta(seconds=60)).item.state is State.COMPLETED


def test_late_accounting_corrects_an_unconfirmed_verdict() -> None:
    item = h.tick(settling(), now=at(1000)).item
    step = h.advance(item, accounting(1001, State.FAILED, exit=ExitStatus.exited(2)))
    assert step.item.state is State.FAILED
    assert step.item.confirmed
    assert isinstance(step.events[0], h.Corrected)
    assert not step.item.has_marker(MarkerCode.UNCONFIRMED)


def test_unknown_to_everyone_is_gone_not_failed() -> None:
    # Adopted by id, never listed anywhere, no accounting record: gone, not failed.
    item, _ = run_all(queued(), obs(5, absence=Absence.ABSENT))
    assert item.state is State.SETTLING
    item = h.tick(item, now=at(5 + 600)).item
    assert item.state is State.GONE
    assert not item.failed
    assert not item.confirmed
    assert item.has_marker(MarkerCode.GONE)


def test_purged_running_job_is_gone() -> None:
    item, _ = run_all(running(), obs(5, absence=Absence.UNKNOWN))
    assert item.state is State.GONE
    assert not item.failed


def test_queue_failure_states_are_verdicts_at_once() -> None:
    for state in (
        State.FAILED,
        State.TIMEOUT,
        State.OUT_OF_MEMORY,
        State.CANCELLED,
        State.DEADLINE,
    ):
        item, events = run_all(running(), obs(5, state))
        assert item.state is state
        assert item.confirmed
        assert isinstance(events[-1], h.Finished)


def test_polling_may_miss_running_entirely() -> None:
    item, events = run_all(queued(), accounting(9, State.COMPLETED, exit=ExitStatus.exited(0)))
    assert item.succeeded
    assert [type(e) for e in events] == [h.Finished]


def test_self_report_speeds_up_but_never_overrides_a_failure() -> None:
    report = obs(
        5, State.COMPLETED, source=Source.SELF_REPORT, stats=JobStats(exit=ExitStatus.exited(0))
    )
    item, _ = run_all(running(), report)
    assert item.state is State.SETTLING
    assert item.has_marker(MarkerCode.SELF_REPORTED)
    # then the scheduler kills it at its time limit: the verdict is TIMEOUT
    item, _ = run_all(item, obs(8, State.TIMEOUT, stats=JobStats(exit=ExitStatus.killed(15))))
    assert item.state is State.TIMEOUT
    assert item.stats.exit == ExitStatus.killed(15)
    assert item.stats.exit_source is Source.QUEUE
    # and a report after the verdict changes nothing
    late = obs(
        9, State.COMPLETED, source=Source.SELF_REPORT, stats=JobStats(exit=ExitStatus.exited(0))
    )
    assert h.advance(item, late).item.state is State.TIMEOUT


def test_lossless_controller_exit_beats_lossy_accounting() -> None:
    controller = obs(
        5, State.FAILED, source=Source.CONTROLLER, stats=JobStats(exit=ExitStatus.exited(137))
    )
    lossy = ExitStatus.from_slurm("9:0", high_codes_lossy=True)
    item, _ = run_all(running(), controller, accounting(9, State.FAILED, exit=lossy))
    assert item.stats.exit == ExitStatus.exited(137)
    assert item.stats.exit_source is Source.CONTROLLER
    assert not item.has_marker(MarkerCode.EXIT_AMBIGUOUS)


def test_lossy_accounting_alone_is_marked_ambiguous() -> None:
    lossy = ExitStatus.from_slurm("9:0", high_codes_lossy=True)
    item, _ = run_all(
        running(), obs(5, absence=Absence.ABSENT), accounting(9, State.FAILED, exit=lossy)
    )
    assert item.state is State.FAILED
    assert item.stats.exit == lossy
    (marker,) = [m for m in item.markers if m.code == MarkerCode.EXIT_AMBIGUOUS]
    assert "9 or 137" in marker.text


def test_exact_sources_that_disagree_are_marked() -> None:
    controller = obs(
        5, State.FAILED, source=Source.CONTROLLER, stats=JobStats(exit=ExitStatus.exited(2))
    )
    item, _ = run_all(running(), controller, accounting(9, State.FAILED, exit=ExitStatus.exited(3)))
    assert item.has_marker(MarkerCode.SOURCES_DISAGREE)


def test_step_failure_behind_a_zero_exit_is_marked() -> None:
    item, _ = run_all(
        running(),
        obs(5, State.COMPLETED),
        accounting(
            7, State.COMPLETED, exit=ExitStatus.exited(0), derived_exit=ExitStatus.exited(5)
        ),
    )
    assert item.state is State.COMPLETED
    assert item.stats.derived_exit == ExitStatus.exited(5)
    assert item.has_marker(MarkerCode.STEP_FAILED)


def test_node_failure_then_requeue_tracks_the_new_run() -> None:
    item, _ = run_all(running(), obs(5, State.NODE_FAIL))
    assert item.state is State.NODE_FAIL
    item, events = run_all(item, obs(20, State.RUNNING, restarts=1))
    assert [type(e) for e in events] == [h.Requeued, h.Started]
    assert item.state is State.RUNNING
    assert item.restarts == 1
    # a record of the earlier run arriving late is stale
    old = obs(21, State.NODE_FAIL, source=Source.ACCOUNTING, final=True, restarts=0)
    assert h.advance(item, old).item.state is State.RUNNING
    item, _ = run_all(item, accounting(30, State.COMPLETED, exit=ExitStatus.exited(0)))
    assert item.succeeded


def test_requeue_clears_the_old_run() -> None:
    item = h.advance(running(), obs(5, State.QUEUED, restarts=1)).item
    assert item.state is State.QUEUED
    assert item.handle is None
    assert item.stats.started_at is None
    assert item.stats.exit is None


def test_requeue_forgets_the_earlier_runs_self_report() -> None:
    # The first run reported 0 and settled; the node failed and Slurm started it over.
    # The new run's report must be read again (the tracker skips items marked reported).
    report = obs(
        5, State.COMPLETED, source=Source.SELF_REPORT, stats=JobStats(exit=ExitStatus.exited(0))
    )
    item = h.advance(running(), report).item
    assert item.state is State.SETTLING
    assert item.has_marker(MarkerCode.SELF_REPORTED)
    item = h.advance(item, obs(20, State.RUNNING, restarts=1)).item
    assert item.state is State.RUNNING
    assert item.restarts == 1
    assert not item.has_marker(MarkerCode.SELF_REPORTED)
    assert item.has_marker(MarkerCode.REQUEUED)


def test_completed_job_reappearing_as_queued_is_a_recycled_id_not_the_job() -> None:
    item, _ = run_all(running(), accounting(5, State.COMPLETED, exit=ExitStatus.exited(0)))
    after, events = run_all(item, obs(50, State.QUEUED), obs(60, State.RUNNING))
    assert after.state is State.COMPLETED
    assert not events


def test_stale_snapshot_changes_nothing() -> None:
    item = running()
    step = h.advance(item, obs(1.5, State.QUEUED))  # older than the item's last update
    assert step.item is item
    assert not step.events


def test_repeated_observation_emits_nothing() -> None:
    item = running()
    step = h.advance(item, obs(10, State.RUNNING))
    assert not step.events
    assert step.item.version == item.version


def test_events_are_ordered_by_version() -> None:
    item, events = run_all(
        queued(),
        obs(2, State.RUNNING),
        obs(3, State.COMPLETED),
        accounting(4, State.COMPLETED, exit=ExitStatus.exited(0), max_rss_bytes=1024),
        accounting(5, State.COMPLETED, exit=ExitStatus.exited(0), max_rss_bytes=2048),
    )
    versions = [e.version for e in events]
    assert versions == sorted(versions) == list(range(versions[0], versions[0] + len(versions)))
    assert isinstance(events[-1], h.StatsUpdated)
    assert item.stats.max_rss_bytes == 2048


def test_submit_rejected_is_a_confirmed_failure() -> None:
    step = h.submit_rejected(
        h.new_item(id="a", run_id="r", backend="b", now=at(0)), at=at(1), message="no"
    )
    assert step.item.state is State.FAILED
    assert step.item.confirmed
    assert step.item.stats.reason is not None
    assert step.item.stats.reason.kind is h.ReasonKind.SUBMIT_REJECTED


def test_run_aggregates_items() -> None:
    items = (running(),)
    settle = settling()
    done = h.advance(running(), accounting(9, State.COMPLETED, exit=ExitStatus.exited(0))).item
    failed = h.advance(running(), accounting(9, State.FAILED, exit=ExitStatus.exited(1))).item
    run = h.Run(id="r", backend="test", created_at=at(0), items=(items[0], settle, done, failed))
    assert run.status is State.RUNNING
    assert run.running_count == 2  # settling counts as running (concurrency caps)
    assert run.completed_count == 2  # settling does not count as done
    assert run.progress == 0.5
    finished = h.Run(id="r", backend="test", created_at=at(0), items=(done, failed))
    assert finished.status is State.FAILED
    assert finished.confirmed
    pending_and_done = h.Run(id="r", backend="t", created_at=at(0), items=(pending(), done))
    assert pending_and_done.status is State.RUNNING
    unconfirmed = h.tick(settling(), now=at(5000)).item
    assert not h.Run(id="r", backend="t", created_at=at(0), items=(done, unconfirmed)).confirmed
    all_done = h.Run(id="r", backend="test", created_at=at(0), items=(done, done))
    assert all_done.status is State.COMPLETED
    assert all_done.confirmed


def test_observation_markers_reach_the_item_once() -> None:
    note = h.Marker(code="exit_made_up", text="the kubelet synthesized 137")
    observation = h.Observation(
        native_id="4242",
        source=Source.QUEUE,
        observed_at=at(5),
        state=State.FAILED,
        markers=(note,),
    )
    item = h.advance(running(), observation).item
    assert item.markers.count(note) == 1
    again = h.advance(item, observation)
    assert again.item.markers.count(note) == 1
    assert not again.events


def test_a_later_runs_record_confirms_an_unconfirmed_verdict() -> None:
    # Requeued job + accounting outage longer than the grace: the grace verdict is
    # unconfirmed; the new run's final record (restart count 1) corrects it.
    item = h.tick(settling(), now=at(1000)).item
    record = obs(
        1001,
        State.COMPLETED,
        source=Source.ACCOUNTING,
        final=True,
        restarts=1,
        stats=JobStats(exit=ExitStatus.exited(0)),
    )
    step = h.advance(item, record)
    assert step.item.succeeded
    assert step.item.restarts == 1
    assert isinstance(step.events[0], h.Corrected)


def test_self_report_never_overrides_the_schedulers_exit() -> None:
    # Review finding: the job says 0, sacct (22.05) says "9 or 137": the verdict keeps the
    # scheduler's ambiguous value, never the job's own word as exact fact.
    report = obs(
        5, State.COMPLETED, source=Source.SELF_REPORT, stats=JobStats(exit=ExitStatus.exited(0))
    )
    lossy = ExitStatus.from_slurm("9:0", high_codes_lossy=True)
    item, _ = run_all(running(), report, accounting(9, State.FAILED, exit=lossy))
    assert item.state is State.FAILED
    assert item.stats.exit == lossy
    assert item.stats.exit_source is Source.ACCOUNTING
    assert item.has_marker(MarkerCode.EXIT_AMBIGUOUS)


def test_sightings_after_a_verdict_do_not_touch_its_stats() -> None:
    done, _ = run_all(
        running(), accounting(5, State.COMPLETED, exit=ExitStatus.exited(0), nodes=("n1",))
    )
    recycled = obs(
        50,
        State.FAILED,
        source=Source.CONTROLLER,
        stats=JobStats(exit=ExitStatus.exited(1), nodes=("other",)),
    )
    step = h.advance(done, recycled)
    assert step.item is done
    assert not step.events


def test_a_requeued_jobs_old_record_without_restart_count_is_stale() -> None:
    item, _ = run_all(running(), obs(5, State.NODE_FAIL), obs(20, State.RUNNING, restarts=1))
    old = obs(15, State.NODE_FAIL, source=Source.ACCOUNTING, final=True)  # restarts unknown
    assert h.advance(item, old).item.state is State.RUNNING


def test_grace_after_a_reported_failure_is_not_success() -> None:
    report = obs(
        5, State.FAILED, source=Source.SELF_REPORT, stats=JobStats(exit=ExitStatus.exited(3))
    )
    item, _ = run_all(running(), report)
    item = h.tick(item, now=at(5 + 600)).item
    assert item.state is State.GONE
    assert not item.failed
    assert "reported exit 3" in next(m.text for m in item.markers if m.code == MarkerCode.GONE)


def test_grace_for_a_job_never_seen_running_is_gone_not_success() -> None:
    item, _ = run_all(queued(), obs(2, State.QUEUED), obs(5, absence=Absence.ABSENT))
    item = h.tick(item, now=at(5 + 600)).item
    assert item.state is State.GONE
    assert "never seen running" in next(m.text for m in item.markers if m.code == MarkerCode.GONE)


def test_queue_listing_completed_does_not_restart_the_grace() -> None:
    item = settling()  # the queue said COMPLETED at t=3
    for t in range(10, 700, 60):
        item = h.advance(item, obs(t, State.COMPLETED)).item
    assert h.grace_deadline(item, timedelta(seconds=600)) == at(3 + 600)


def test_accounting_running_counts_as_seen_but_not_active() -> None:
    item, _ = run_all(
        queued(), obs(5, absence=Absence.ABSENT), obs(6, State.RUNNING, source=Source.ACCOUNTING)
    )
    assert item.last_seen_at == at(6)
    assert item.last_active_at is None
    assert h.grace_deadline(item, timedelta(seconds=600)) == at(5 + 600)


def test_a_queue_failure_corrects_an_unconfirmed_success() -> None:
    item = h.tick(settling(), now=at(1000)).item
    step = h.advance(
        item,
        obs(
            1001, State.FAILED, source=Source.CONTROLLER, stats=JobStats(exit=ExitStatus.exited(1))
        ),
    )
    assert step.item.state is State.FAILED
    assert step.item.confirmed
    assert isinstance(step.events[0], h.Corrected)


def test_a_queued_sighting_of_a_running_job_is_not_a_requeue() -> None:
    # Kubernetes suspends a Job; Flux glitches: without a higher restart count, no requeue.
    item, events = run_all(running(), obs(5, State.QUEUED))
    assert item.state is State.RUNNING
    assert not any(isinstance(e, h.Requeued) for e in events)
    item, events = run_all(settling(), obs(5, State.QUEUED))
    assert item.state is State.SETTLING
    assert item.last_active_at == at(5)


def test_a_lossless_controller_listing_resolves_an_ambiguous_confirmed_exit() -> None:
    # Slurm 22.05: the self-report made the tracker ask sacct first ("9 or 137", final);
    # squeue -O then still lists the job FAILED with the raw wait status of exit 137.
    lossy = ExitStatus.from_slurm("9:0", high_codes_lossy=True)
    item, _ = run_all(
        running(), obs(5, absence=Absence.ABSENT), accounting(6, State.FAILED, exit=lossy)
    )
    assert not item.stats.exit.exact  # type: ignore[union-attr]
    controller = obs(
        7, State.FAILED, source=Source.CONTROLLER, stats=JobStats(exit=ExitStatus.exited(137))
    )
    step = h.advance(item, controller)
    assert step.item.stats.exit == ExitStatus.exited(137)
    assert not step.item.has_marker(MarkerCode.EXIT_AMBIGUOUS)
    assert isinstance(step.events[0], h.StatsUpdated)
    # ...but not a value the ambiguous one does not admit, nor another state (recycled id)
    other = obs(
        7, State.FAILED, source=Source.CONTROLLER, stats=JobStats(exit=ExitStatus.exited(3))
    )
    assert h.advance(item, other).item is item
    timeout = obs(
        7, State.TIMEOUT, source=Source.CONTROLLER, stats=JobStats(exit=ExitStatus.exited(137))
    )
    assert h.advance(item, timeout).item is item


def test_admits() -> None:
    lossy = ExitStatus.from_slurm("9:0", high_codes_lossy=True)
    assert lossy.admits(ExitStatus.exited(137))
    assert lossy.admits(ExitStatus.exited(9))
    assert not lossy.admits(ExitStatus.killed(9))
    shell = ExitStatus.from_shell_code(137)
    assert shell.admits(ExitStatus.killed(9))
    assert not shell.admits(ExitStatus.exited(9))
    assert not ExitStatus.exited(9).admits(ExitStatus.exited(137))


def test_the_jobs_exact_report_settles_an_ambiguity_it_is_admitted_by() -> None:
    lossy = ExitStatus.from_slurm("9:0", high_codes_lossy=True)
    report = obs(
        5, State.FAILED, source=Source.SELF_REPORT, stats=JobStats(exit=ExitStatus.exited(137))
    )
    item, _ = run_all(running(), report, accounting(9, State.FAILED, exit=lossy))
    assert item.stats.exit == ExitStatus.exited(137)
    assert item.confirmed
    assert not item.has_marker(MarkerCode.EXIT_AMBIGUOUS)
    # a report the scheduler's value does not admit changes nothing
    wrong = obs(
        5, State.FAILED, source=Source.SELF_REPORT, stats=JobStats(exit=ExitStatus.exited(3))
    )
    item, _ = run_all(running(), wrong, accounting(9, State.FAILED, exit=lossy))
    assert item.stats.exit == lossy
