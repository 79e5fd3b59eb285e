"""Golden tests: every recorded flux-core 0.88.0 case, verdicts written by hand.

The EXPECTED table below is written from what each job *did* (the case list in
tests/golden/flux/0.88.0/README.md: the command submitted, the signal sent), not from
the parser's output. A task killed by signal N is expected as ``killed(N)`` once the
exec eventlog has been read; job-list alone can only say "exit 128+N, ambiguous".
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from attrs import frozen
from flux_golden import (
    GOLDEN,
    OBSERVED_AT,
    case_dirs,
    evidence_output,
    jobid_f58,
    read,
    recorded,
)

from hpcstate import (
    Absence,
    ExitStatus,
    Finished,
    MarkerCode,
    Observation,
    ReasonKind,
    RunItem,
    Source,
    State,
    advance,
    new_item,
    submitted,
)
from hpcstate.backend import CommandResult, JobSpec
from hpcstate_flux import FluxDialect, parse_jobid
from hpcstate_flux._observe import job_observation
from hpcstate_flux._parse import parse_job, parse_jobs_json

DIALECT = FluxDialect()


@frozen
class Expected:
    """What a case's job did, as hpcstate must report it."""

    state: State
    exit: ExitStatus | None  # after the eventlogs were read
    reason: ReasonKind | None
    reason_detail: str = ""  # the fatal exception's type
    reason_text: str | None = None  # the exception's note (None: not checked)


def exited(code: int) -> ExitStatus:
    return ExitStatus.exited(code)


def killed(signal: int) -> ExitStatus:
    return ExitStatus.killed(signal)


AMBIGUOUS_143 = ExitStatus.exited(143, ambiguous="x")  # compared on code/signal/ambiguous only

NZ = ReasonKind.NON_ZERO_EXIT_CODE
SIG = ReasonKind.RAISED_SIGNAL

# case -> what the job did (hand-written from the case definitions).
EXPECTED: dict[str, Expected] = {
    # bash -c 'exit N'
    "exit_0": Expected(State.COMPLETED, exited(0), ReasonKind.NONE),
    "exit_13": Expected(State.FAILED, exited(13), NZ),
    "exit_137": Expected(State.FAILED, exited(137), NZ),  # a real exit 137, not SIGKILL
    "exit_200": Expected(State.FAILED, exited(200), NZ),
    # bash -c 'kill -SIG $$': the task dies by the signal
    "sigint": Expected(State.FAILED, killed(2), SIG),
    "sigsegv": Expected(State.FAILED, killed(11), SIG),
    "sigkill": Expected(State.FAILED, killed(9), SIG),
    "sigterm": Expected(State.FAILED, killed(15), SIG),
    "output_then_exit_5": Expected(State.FAILED, exited(5), NZ),
    # -t 5s sleep 60: the time limit's SIGALRM kills sleep
    "timeout": Expected(
        State.TIMEOUT, killed(14), ReasonKind.TIME_LIMIT, "timeout", "resource allocation expired"
    ),
    # flux cancel while running: SIGTERM kills sleep
    "cancel_running": Expected(State.CANCELLED, killed(15), ReasonKind.CANCELLED, "cancel", ""),
    "cancel_running_with_message": Expected(
        State.CANCELLED, killed(15), ReasonKind.CANCELLED, "cancel", "operator says stop"
    ),
    # cancelled before it ever ran: no exit status at all
    "cancel_pending_hold": Expected(State.CANCELLED, None, ReasonKind.CANCELLED, "cancel", ""),
    "cancel_pending_depend": Expected(State.CANCELLED, None, ReasonKind.CANCELLED, "cancel", ""),
    # afterok on a parent that failed: never runs, fails with a dependency exception
    "dependency_afterok_parent_fails": Expected(
        State.FAILED, None, ReasonKind.EXCEPTION, "dependency"
    ),
    # -n2: rank 0 exits 3, rank 1 exits 0
    "multi_task_3_0": Expected(State.FAILED, exited(3), NZ),
    # -n2: rank 0 exits 3, rank 1 SIGTERMs itself; the shell reports 143 and only rank
    # 0's exit is recorded: nothing says whether 143 is a signal. It stays ambiguous.
    "multi_task_sig_and_exit": Expected(State.FAILED, AMBIGUOUS_143, NZ),
    # flux batch: the script's own exit status (last step 2; set -e stops at 7)
    "batch_steps_7_3_2": Expected(State.FAILED, exited(2), NZ),
    "batch_set_e": Expected(State.FAILED, exited(7), NZ),
    "name_special_chars": Expected(State.COMPLETED, exited(0), ReasonKind.NONE),
    # /nonexistent/cmd: exec exception "start failed", shell exit 127: a launch failure
    "command_not_found": Expected(
        State.FAILED,
        exited(127),
        ReasonKind.JOB_LAUNCH_FAILURE,
        "exec",
        "task 0 (host vm): start failed: /nonexistent/cmd: No such file or directory",
    ),
    # -N2 on one node: alloc exception, never runs
    "unsatisfiable": Expected(
        State.FAILED,
        None,
        ReasonKind.EXCEPTION,
        "alloc",
        "unsatisfiable request: need 2 exclusive node(s), only 1 eligible",
    ),
    # flux job raise --type=mytype on a running sleep: fatal, tasks get SIGTERM
    "raise_exception": Expected(
        State.FAILED, killed(15), ReasonKind.EXCEPTION, "mytype", "custom note"
    ),
    # python under an address-space rlimit: MemoryError, exit 1 (no Flux enforcement)
    "mem_rlimit_as": Expected(State.FAILED, exited(1), NZ),
}


def _same_exit(actual: ExitStatus | None, expected: ExitStatus | None) -> bool:
    if actual is None or expected is None:
        return actual is expected
    return (actual.code, actual.signal, actual.exact) == (
        expected.code,
        expected.signal,
        expected.exact,
    )


def _listed_exit(expected: ExitStatus | None) -> tuple[int | None, bool]:
    """What job-list alone can say: the shell's code, ambiguous when 128 < code <= 192."""
    if expected is None:
        return None, False
    code = expected.shell_code
    assert code is not None
    return code, 128 < code <= 192


def _queue(case: str) -> Observation:
    native = str(parse_jobid(jobid_f58(case)))
    result = recorded(case, "jobs_json", "flux", "jobs", "--json", native)
    (observation,) = DIALECT.parse_queue(result, native_ids=[native], observed_at=OBSERVED_AT)
    return observation


def _with_evidence(observation: Observation, case: str) -> Observation:
    requests = DIALECT.evidence_requests([observation])
    if not requests:
        return observation
    command = DIALECT.evidence_command(requests)
    assert command is not None
    stdout = evidence_output(requests, {parse_jobid(observation.native_id): case})
    result = CommandResult(argv=command.argv, returncode=0, stdout=stdout)
    assert not DIALECT.evidence_is_transient(result)
    evidence = DIALECT.parse_evidence(result)
    (applied,) = DIALECT.apply_evidence([observation], evidence)
    return applied


def _submitted_item(native: str) -> RunItem:
    item = new_item(id="item-1", run_id="run-1", backend="flux", now=OBSERVED_AT - timedelta(1))
    return submitted(item, native_id=native, at=OBSERVED_AT - timedelta(hours=1)).item


def test_every_recorded_case_has_a_hand_written_expectation() -> None:
    assert set(EXPECTED) == set(case_dirs())


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_job_list_alone(case: str) -> None:
    expected = EXPECTED[case]
    observation = _queue(case)
    assert observation.state is expected.state
    assert observation.final is True
    assert observation.source is Source.ACCOUNTING
    code, ambiguous = _listed_exit(expected.exit)
    status = observation.stats.exit
    if code is None:
        assert status is None
    else:
        assert status is not None
        assert (status.code, status.signal, not status.exact) == (code, None, ambiguous)
    # job-list alone already knows every fatal exception
    reason = observation.stats.reason
    if expected.reason_detail:
        assert reason is not None
        assert (reason.kind, reason.detail) == (expected.reason, expected.reason_detail)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_verdict_after_eventlogs(case: str) -> None:
    expected = EXPECTED[case]
    observation = _with_evidence(_queue(case), case)
    assert observation.state is expected.state
    assert _same_exit(observation.stats.exit, expected.exit), observation.stats.exit
    reason = observation.stats.reason
    if expected.reason is None:
        assert reason is None
    else:
        assert reason is not None
        assert reason.kind is expected.reason
        assert reason.detail == expected.reason_detail
        if expected.reason_text is not None:
            assert reason.text == expected.reason_text
        if reason.kind is ReasonKind.RAISED_SIGNAL:
            assert expected.exit is not None
            assert reason.signal == expected.exit.signal


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_first_verdict_through_the_state_machine(case: str) -> None:
    expected = EXPECTED[case]
    native = str(parse_jobid(jobid_f58(case)))
    step = advance(_submitted_item(native), _with_evidence(_queue(case), case))
    item = step.item
    assert item.state is expected.state
    assert item.confirmed is True
    assert item.stats.confirmed_by is Source.ACCOUNTING
    assert _same_exit(item.exit, expected.exit)
    (event,) = step.events
    assert isinstance(event, Finished)
    assert event.confirmed is True
    assert event.confirmed_success is (expected.state is State.COMPLETED)
    ambiguous = expected.exit is not None and not expected.exit.exact
    assert item.has_marker(MarkerCode.EXIT_AMBIGUOUS.value) is ambiguous


def test_dependency_note_names_the_parent() -> None:
    parent = read("dependency_afterok_parent_fails", "parent_jobid.f58").strip()
    reason = _queue("dependency_afterok_parent_fails").stats.reason
    assert reason is not None
    assert reason.text == f"dependency after-success={parent} can never be satisfied"


def test_multi_task_ambiguity_says_what_is_known() -> None:
    observation = _with_evidence(_queue("multi_task_sig_and_exit"), "multi_task_sig_and_exit")
    status = observation.stats.exit
    assert status is not None
    assert status.ambiguous is not None
    assert "rank 0: exit 3" in status.ambiguous
    assert "143" in status.ambiguous


def test_eventlogs_asked_for_ambiguous_codes_and_failures() -> None:
    requests = {
        case: DIALECT.evidence_requests([_queue(case)]).get(parse_jobid(jobid_f58(case)))
        or frozenset()
        for case in EXPECTED
    }
    # the exec eventlog: job-list's code was 129-192
    assert {case for case, kinds in requests.items() if "exec" in kinds} == {
        "exit_137",
        "sigint",
        "sigsegv",
        "sigkill",
        "sigterm",
        "timeout",
        "cancel_running",
        "cancel_running_with_message",
        "multi_task_sig_and_exit",
        "raise_exception",
    }
    # the oom check: every job that ran and failed, whatever its code (not the ones that
    # never ran: dependency_afterok_parent_fails, unsatisfiable)
    assert {case for case, kinds in requests.items() if "output" in kinds} == {
        "exit_13",
        "exit_137",
        "exit_200",
        "sigint",
        "sigsegv",
        "sigkill",
        "sigterm",
        "output_then_exit_5",
        "multi_task_3_0",
        "multi_task_sig_and_exit",
        "batch_steps_7_3_2",
        "batch_set_e",
        "command_not_found",
        "raise_exception",
        "mem_rlimit_as",
    }
    assert requests["raise_exception"] == frozenset({"exec", "main", "output"})
    assert requests["sigkill"] == frozenset({"exec", "output"})
    assert requests["exit_13"] == frozenset({"output"})
    assert requests["exit_0"] == frozenset()


def test_stats_come_from_the_record() -> None:
    observation = _queue("exit_13")
    raw = json.loads(read("exit_13", "jobs_json.out"))
    stats = observation.stats
    assert stats.submitted_at is not None
    assert stats.submitted_at.timestamp() == pytest.approx(raw["t_submit"])
    assert stats.started_at is not None
    assert stats.started_at.timestamp() == pytest.approx(raw["t_run"])
    assert stats.finished_at is not None
    assert stats.finished_at.timestamp() == pytest.approx(raw["t_cleanup"])
    assert stats.elapsed_s == pytest.approx(raw["runtime"])
    assert stats.nodes == ("vm",)
    never_ran = _queue("cancel_pending_hold").stats
    assert (never_ran.started_at, never_ran.elapsed_s, never_ran.nodes) == (None, None, ())


# -- active snapshots -------------------------------------------------------------------

ACTIVE = {
    ("timeout", "active_running_jobs_json"): State.RUNNING,
    ("cancel_running", "active_running_jobs_json"): State.RUNNING,
    ("cancel_pending_hold", "active_pending_held_jobs_json"): State.QUEUED,
    ("cancel_pending_depend", "active_pending_depend_jobs_json"): State.QUEUED,
    ("dependency_afterok_parent_fails", "active_pending_depend_afterok_jobs_json"): State.QUEUED,
}


@pytest.mark.parametrize(("case", "stem"), sorted(ACTIVE))
def test_active_snapshot_then_final_record(case: str, stem: str) -> None:
    native = str(parse_jobid(jobid_f58(case)))
    result = recorded(case, stem, "flux", "jobs", "--json", native)
    (active,) = DIALECT.parse_queue(result, native_ids=[native], observed_at=OBSERVED_AT)
    assert active.state is ACTIVE[case, stem]
    assert active.final is False
    assert active.source is Source.QUEUE
    assert active.stats.exit is None
    assert DIALECT.evidence_requests([active]) == {}
    item = advance(_submitted_item(native), active).item
    assert item.state is ACTIVE[case, stem]
    assert (item.stats.started_at is not None) is (item.state is State.RUNNING)
    final = _with_evidence(_queue(case), case)
    later = advance(item, _observed_later(final)).item
    assert later.state is EXPECTED[case].state
    assert later.confirmed is True


def _observed_later(observation: Observation) -> Observation:
    from attrs import evolve

    return evolve(observation, observed_at=OBSERVED_AT + timedelta(minutes=1))


def test_cleanup_is_running_not_final() -> None:
    # job-list dicts recorded by polling one job: SCHED, RUN, CLEANUP (waitstatus set,
    # no result), INACTIVE (exit 4, FAILED).
    recorded_run = json.loads((GOLDEN / "_window_check" / "window_experiments.json").read_text())
    polls = recorded_run["E_state_progression_seen_by_polling"]["distinct_observations"]
    observations = [
        job_observation(parse_job(poll["job_list"]), native_id="1", observed_at=OBSERVED_AT)
        for poll in polls
    ]
    assert [o.state for o in observations] == [
        State.QUEUED,
        State.RUNNING,
        State.RUNNING,
        State.FAILED,
    ]
    assert [o.final for o in observations] == [False, False, False, True]
    cleanup, final = observations[2], observations[3]
    assert cleanup.stats.exit is None  # the waitstatus of CLEANUP is not a verdict yet
    assert "CLEANUP" in cleanup.detail
    assert final.stats.exit == ExitStatus.exited(4)


# -- many ids in one call, and the purged job --------------------------------------------


def test_one_call_for_every_job_agrees_with_the_single_id_records() -> None:
    listing = read("_all_jobs", "jobs_a_json.out")
    jobs = {job.id: job for job in parse_jobs_json(listing)}
    assert len(jobs) == len(json.loads(listing)["jobs"])
    natives = [str(parse_jobid(jobid_f58(case))) for case in sorted(EXPECTED)]
    result = CommandResult(argv=("flux", "jobs"), returncode=0, stdout=listing)
    observations = DIALECT.parse_queue(result, native_ids=natives, observed_at=OBSERVED_AT)
    for case, observation in zip(sorted(EXPECTED), observations, strict=True):
        single = _queue(case)
        assert observation.native_id == single.native_id
        assert (observation.state, observation.stats.exit) == (single.state, single.stats.exit)


def test_purged_job_is_gone_never_failed() -> None:
    for purge in ("manual_purge", "inactive_age_limit_10s"):
        folder = f"_retention/{purge}"
        native = str(parse_jobid(read(folder, "jobid.f58").strip()))
        result = recorded(folder, "after_jobs_json", "flux", "jobs", "--json", native)
        assert result.returncode == 1  # every asked id was unknown
        (observation,) = DIALECT.parse_queue(result, native_ids=[native], observed_at=OBSERVED_AT)
        assert observation.absence is Absence.UNKNOWN
        assert observation.state is None
        # seen running, then purged before any poll saw its verdict: gone, unconfirmed
        running = Observation(
            native_id=native,
            source=Source.QUEUE,
            observed_at=OBSERVED_AT - timedelta(minutes=5),
            state=State.RUNNING,
        )
        item = advance(_submitted_item(native), running).item
        step = advance(item, observation)
        assert step.item.state is State.GONE
        assert step.item.confirmed is False
        assert step.item.has_marker(MarkerCode.GONE.value)
        (event,) = step.events
        assert isinstance(event, Finished)
        assert event.confirmed is False


def test_never_seen_id_flux_calls_unknown_is_gone_at_once() -> None:
    # Flux keeps no record besides job-list (no accounting to wait for): "unknown" is
    # definitive even for a job no poll ever saw (purged before the first poll, or
    # submitted to another instance). No settling, no grace period.
    folder = "_retention/manual_purge"
    native = str(parse_jobid(read(folder, "jobid.f58").strip()))
    result = recorded(folder, "after_jobs_json", "flux", "jobs", "--json", native)
    (unknown,) = DIALECT.parse_queue(result, native_ids=[native], observed_at=OBSERVED_AT)
    step = advance(_submitted_item(native), unknown)
    assert step.item.state is State.GONE
    assert step.item.confirmed is False
    assert step.item.has_marker(MarkerCode.GONE.value)
    (event,) = step.events
    assert isinstance(event, Finished)


def test_purge_after_the_verdict_keeps_the_verdict() -> None:
    native = str(parse_jobid(read("_retention/manual_purge", "jobid.f58").strip()))
    failed = Observation(
        native_id=native,
        source=Source.ACCOUNTING,
        observed_at=OBSERVED_AT - timedelta(minutes=5),
        state=State.FAILED,
        final=True,
    )
    item = advance(_submitted_item(native), failed).item
    result = recorded("_retention/manual_purge", "after_jobs_json")
    (gone,) = DIALECT.parse_queue(result, native_ids=[native], observed_at=OBSERVED_AT)
    after = advance(item, gone).item
    assert (after.state, after.confirmed) == (State.FAILED, True)


def test_known_and_purged_ids_in_one_call() -> None:
    purged = read("_retention/manual_purge", "jobid.f58").strip()
    stderr = read("_retention/manual_purge", "after_jobs_json.err")
    natives = [str(parse_jobid(jobid_f58("exit_0"))), str(parse_jobid(purged))]
    result = CommandResult(
        argv=("flux", "jobs"),
        returncode=0,  # exit 1 only when ALL ids are unknown
        stdout=read("_all_jobs", "jobs_a_json.out"),
        stderr=stderr,
    )
    done, gone = DIALECT.parse_queue(result, native_ids=natives, observed_at=OBSERVED_AT)
    assert (done.state, gone.absence) == (State.COMPLETED, Absence.UNKNOWN)


# -- submit -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_submit_output_gives_the_decimal_id(case: str) -> None:
    result = recorded(case, "submit", "flux", "submit")
    spec = JobSpec(command=("true",))
    submission = DIALECT.parse_submit(result, spec)
    assert submission.native_id == str(parse_jobid(jobid_f58(case)))
    assert submission.native_id.isdigit()
    ascii_form = result.stdout.replace("\u0192", "f")  # what a non-UTF-8 locale prints
    again = DIALECT.parse_submit(
        CommandResult(argv=result.argv, returncode=0, stdout=ascii_form), spec
    )
    assert again == submission


REJECTED = [
    "batch_missing_resources",
    "submit_afterok_on_failed_parent",
    "submit_afterok_on_unknown_job",
    "submit_bad_duration",
    "submit_unknown_queue",
]


@pytest.mark.parametrize("stem", REJECTED)
def test_rejected_submission_is_a_failed_command_not_transient(stem: str) -> None:
    from hpcstate import CommandFailed

    result = recorded("submit_rejected", stem, "flux", "submit")
    assert result.returncode == 1
    assert DIALECT.is_transient(result) is False
    with pytest.raises(CommandFailed) as raised:
        DIALECT.parse_submit(result, JobSpec(command=("true",)))
    assert raised.value.stderr == result.stderr
