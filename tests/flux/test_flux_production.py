"""Golden tests over every production recording of flux-core 0.88.0.

tests/golden/flux/0.88.0-production holds what the backend's OWN commands printed on a
real flux-core 0.88.0 (README.md there). Each command the dialect builds here must be
EXACTLY a recorded one (argv, environment, stdin), and its recorded answer must parse
to the verdict written below BY HAND from the README's case table ("true outcome"):
never from the parser's output.

A ``flux batch`` job's one task is its Flux instance's broker, which exits 128+N when
the script dies of signal N (README, "What flux 0.88.0 printed", item 2): nothing the
backend reads tells that from ``exit 128+N``, so those exits are expected ambiguous,
admitting the true outcome. Only a signal that killed the broker itself
(``flux job kill -s 9``) is exact.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from attrs import frozen
from flux_production import PRODUCTION, case_dirs, case_json, commands, jobid, matching, read, spec

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
from hpcstate.backend import CommandResult
from hpcstate_flux import FluxDialect
from hpcstate_flux._commands import FIND_SCRIPT

DIALECT = FluxDialect()  # dialect_from_options({}): what the recordings were made with
OBSERVED_AT = datetime(2026, 12, 6, 15, 30, tzinfo=timezone.utc)


@frozen
class Expected:
    state: State
    #: the exit hpcstate shows; ``ambiguous`` here means "must be marked ambiguous"
    shown: ExitStatus | None
    #: what the job really did (the README's "true outcome"): the shown exit admits it
    truth: ExitStatus | None
    reason: ReasonKind
    reason_detail: str = ""
    reason_text: str | None = None


def exited(code: int) -> ExitStatus:
    return ExitStatus.exited(code)


def killed(signal: int) -> ExitStatus:
    return ExitStatus.killed(signal)


def ambiguous(code: int) -> ExitStatus:
    return ExitStatus.exited(code, ambiguous="expected ambiguous")


NZ = ReasonKind.NON_ZERO_EXIT_CODE
SIG = ReasonKind.RAISED_SIGNAL
NONE = ReasonKind.NONE
ALLOC_EXPIRED = "resource allocation expired"

# Written by hand from tests/golden/flux/0.88.0-production/README.md, "Cases".
EXPECTED: dict[str, Expected] = {
    # flux submit of a command: the exec eventlog's shell.task-exit is lossless
    "exit_0": Expected(State.COMPLETED, exited(0), exited(0), NONE),
    "exit_3": Expected(State.FAILED, exited(3), exited(3), NZ),
    "exit_137": Expected(State.FAILED, exited(137), exited(137), NZ),  # a plain code
    "exit_200": Expected(State.FAILED, exited(200), exited(200), NZ),
    "sigterm": Expected(State.FAILED, killed(15), killed(15), SIG),
    "sigsegv": Expected(State.FAILED, killed(11), killed(11), SIG),
    # flux kills the task at the limit with SIGALRM
    "timeout": Expected(
        State.TIMEOUT, killed(14), killed(14), ReasonKind.TIME_LIMIT, "timeout", ALLOC_EXPIRED
    ),
    # flux cancel: SIGTERM to the task
    "cancel_running": Expected(
        State.CANCELLED, killed(15), killed(15), ReasonKind.CANCELLED, "cancel", ""
    ),
    # cancelled while held: never ran, no exit status
    "cancel_pending_hold": Expected(State.CANCELLED, None, None, ReasonKind.CANCELLED, "cancel"),
    # exec exception "start failed": the task never started; the shell exits 127
    "command_not_found": Expected(
        State.FAILED,
        exited(127),
        exited(127),
        ReasonKind.JOB_LAUNCH_FAILURE,
        "exec",
        "task 0 (host node1): start failed: hpcstate_no_such_command_xyz: "
        "No such file or directory",
    ),
    "multi_task_rank1_exit_3": Expected(State.FAILED, exited(3), exited(3), NZ),
    # rank 0 SIGSEGV first (the only task-exit recorded), rank 1 SIGTERM sets 143
    "multi_task_segv_then_term": Expected(State.FAILED, ambiguous(143), killed(15), NZ),
    "kill_9": Expected(State.FAILED, killed(9), killed(9), SIG),
    "name_special_chars": Expected(State.FAILED, exited(4), exited(4), NZ),
    "tagged_submission": Expected(State.COMPLETED, exited(0), exited(0), NONE),
    # flux batch: the script's exit code, through the instance's broker
    "batch_exit_0": Expected(State.COMPLETED, exited(0), exited(0), NONE),
    "batch_exit_3": Expected(State.FAILED, exited(3), exited(3), NZ),
    "batch_exit_137": Expected(State.FAILED, ambiguous(137), exited(137), NZ),
    "batch_exit_200": Expected(State.FAILED, exited(200), exited(200), NZ),
    # the script died of a signal; the broker EXITED 128+N: never an exact exit code
    "batch_sigterm": Expected(State.FAILED, ambiguous(143), killed(15), NZ),
    "batch_sigsegv": Expected(State.FAILED, ambiguous(139), killed(11), NZ),
    "batch_timeout": Expected(
        State.TIMEOUT,
        ambiguous(142),
        killed(14),
        ReasonKind.TIME_LIMIT,
        "timeout",
        ALLOC_EXPIRED,
    ),
    "batch_cancel_running": Expected(
        State.CANCELLED, ambiguous(143), killed(15), ReasonKind.CANCELLED, "cancel", ""
    ),
    "batch_cancel_pending_hold": Expected(
        State.CANCELLED, None, None, ReasonKind.CANCELLED, "cancel"
    ),
    # the script's sh exits 127: an ordinary exit of the script, no exception
    "batch_command_not_found": Expected(State.FAILED, exited(127), exited(127), NZ),
    # flux job kill -s 9 kills the broker itself: a real, recorded signal
    "batch_kill_9": Expected(State.FAILED, killed(9), killed(9), SIG),
    "batch_name_special_chars": Expected(State.FAILED, exited(4), exited(4), NZ),
    "batch_tagged_submission": Expected(State.COMPLETED, exited(0), exited(0), NONE),
}


def _check_exit(actual: ExitStatus | None, expected: Expected) -> None:
    if expected.shown is None:
        assert actual is None
        return
    assert actual is not None
    assert (actual.code, actual.signal) == (expected.shown.code, expected.shown.signal), actual
    assert actual.exact is expected.shown.exact, actual
    assert expected.truth is not None
    assert actual.admits(expected.truth)


def _queue(case: str, stem: str = "jobs_json") -> Observation:
    native = jobid(case)
    command = DIALECT.queue_command([native])
    recorded = commands(case)[stem]
    assert recorded.ran(command), (command, recorded.argv)
    (observation,) = DIALECT.parse_queue(
        recorded.result, native_ids=[native], observed_at=OBSERVED_AT
    )
    return observation


def _with_evidence(case: str, observation: Observation) -> Observation:
    """Run the eventlog step as FluxBackend does, answered by the recording whose
    argv is exactly the one the dialect builds (``evidence`` or ``evidence_all``)."""
    requests = DIALECT.evidence_requests([observation])
    if not requests:
        return observation
    command = DIALECT.evidence_command(requests)
    assert command is not None
    recorded = matching(case, command, ("evidence", "evidence_all"))
    assert recorded is not None, f"no recording of {command.argv[4:]} for {case}"
    assert DIALECT.evidence_transient_error(recorded.result) is None
    evidence = DIALECT.parse_evidence(recorded.result)
    (applied,) = DIALECT.apply_evidence([observation], evidence)
    return applied


def _item(native: str) -> RunItem:
    item = new_item(id="i", run_id="r", backend="flux", now=OBSERVED_AT - timedelta(hours=1))
    return submitted(item, native_id=native, at=OBSERVED_AT - timedelta(minutes=30)).item


def test_every_recorded_case_has_a_hand_written_expectation() -> None:
    assert set(EXPECTED) == set(case_dirs())
    assert {case: case_json(case)["jobid"] for case in EXPECTED} == {
        case: jobid(case) for case in EXPECTED
    }


# -- the exact argv ------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_submit_is_the_recorded_command(case: str) -> None:
    command = DIALECT.submit_command(spec(case))
    recorded = commands(case)["submit"]
    assert recorded.ran(command), (command.argv, recorded.argv)
    submission = DIALECT.parse_submit(recorded.result, spec(case))
    assert submission.native_id == jobid(case)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_every_queue_poll_is_the_recorded_command(case: str) -> None:
    recorded = commands(case)
    polls = [stem for stem in recorded if stem.startswith("jobs_json")]
    assert "jobs_json" in polls
    command = DIALECT.queue_command([jobid(case)])
    for stem in polls:
        assert recorded[stem].ran(command), stem
    assert DIALECT.accounting_command  # the same query answers accounting


@pytest.mark.parametrize("case", sorted(c for c in EXPECTED if "cancel" in commands(c)))
def test_cancel_is_the_recorded_command(case: str) -> None:
    recorded = commands(case)["cancel"]
    assert recorded.ran(DIALECT.cancel_command([jobid(case)]))
    DIALECT.check_cancel(recorded.result)  # rc 0: no error


def test_cancel_of_an_ended_job_is_not_an_error() -> None:
    recorded = commands("exit_0")["cancel_ended"]
    assert recorded.ran(DIALECT.cancel_command([jobid("exit_0")]))
    assert recorded.result.returncode == 1
    DIALECT.check_cancel(recorded.result)  # "job is inactive": what cancel wanted


# -- verdicts ------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_final_verdict(case: str) -> None:
    expected = EXPECTED[case]
    observation = _with_evidence(case, _queue(case))
    assert observation.state is expected.state
    assert observation.final is True
    assert observation.source is Source.ACCOUNTING
    _check_exit(observation.stats.exit, expected)
    reason = observation.stats.reason
    assert reason is not None
    assert reason.kind is expected.reason, reason
    assert reason.detail == expected.reason_detail
    if expected.reason_text is not None:
        assert reason.text == expected.reason_text
    if expected.reason is SIG:
        assert expected.shown is not None
        assert reason.signal == expected.shown.signal


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_first_verdict_through_the_state_machine(case: str) -> None:
    expected = EXPECTED[case]
    native = jobid(case)
    step = advance(_item(native), _with_evidence(case, _queue(case)))
    assert (step.item.state, step.item.confirmed) == (expected.state, True)
    _check_exit(step.item.exit, expected)
    (event,) = step.events
    assert isinstance(event, Finished)
    is_ambiguous = expected.shown is not None and not expected.shown.exact
    assert step.item.has_marker(MarkerCode.EXIT_AMBIGUOUS.value) is is_ambiguous


@pytest.mark.parametrize(
    "case", sorted(c for c in EXPECTED if c.startswith("batch_") and EXPECTED[c].truth)
)
def test_a_batch_signal_death_is_never_an_exact_exit_code(case: str) -> None:
    truth = EXPECTED[case].truth
    assert truth is not None
    status = _with_evidence(case, _queue(case)).stats.exit
    assert status is not None
    if truth.signal is not None and status.signal is None:
        assert status.ambiguous is not None
        assert "broker" in status.ambiguous  # says why
        assert status.admits(truth)


def test_batch_ambiguity_is_already_said_by_job_list() -> None:
    status = _queue("batch_sigterm").stats.exit
    assert status is not None
    assert status.ambiguous is not None
    assert "broker" in status.ambiguous
    assert "a Flux instance" in _queue("batch_sigterm").detail


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_active_polls_are_not_final_and_carry_no_reason(case: str) -> None:
    recorded = commands(case)
    expected_states = {
        "jobs_json_sched": State.QUEUED,
        "jobs_json_run": State.RUNNING,
        "jobs_json_cleanup": State.RUNNING,
    }
    item = _item(jobid(case))
    for stem, state in expected_states.items():
        if stem not in recorded:
            continue
        observation = _queue(case, stem)
        assert (observation.state, observation.final) == (state, False)
        assert observation.stats.exit is None
        assert observation.stats.reason is None  # a pending reason never reaches a verdict
        assert DIALECT.evidence_requests([observation]) == {}
        item = advance(item, observation).item
    final = advance(item, _with_evidence(case, _queue(case))).item
    assert final.state is EXPECTED[case].state
    reason = final.stats.reason
    assert reason is not None
    assert reason.kind is EXPECTED[case].reason


# -- several ids, purged and unknown ids ---------------------------------------------

MULTI = "_multi"


def _ids() -> dict[str, str]:
    ids = case_json(MULTI)["ids"]
    assert isinstance(ids, dict)
    return ids


def test_one_call_for_every_job_agrees_with_the_single_id_answers() -> None:
    ids = _ids()
    command = DIALECT.queue_command(list(ids.values()))
    recorded = commands(MULTI)["jobs_json_many"]
    assert recorded.ran(command)
    observations = DIALECT.parse_queue(
        recorded.result, native_ids=list(ids.values()), observed_at=OBSERVED_AT
    )
    for case, observation in zip(ids, observations, strict=True):
        assert observation.native_id == ids[case]
        assert observation.state is EXPECTED[case].state


def test_an_unknown_id_beside_known_ones_is_unknown() -> None:
    ids = _ids()
    natives = [*ids.values(), case_json(MULTI)["unknown_id"]]
    recorded = commands(MULTI)["jobs_json_many_and_unknown"]
    assert recorded.ran(DIALECT.queue_command(natives))
    observations = DIALECT.parse_queue(recorded.result, native_ids=natives, observed_at=OBSERVED_AT)
    assert observations[-1].absence is Absence.UNKNOWN
    assert all(o.state is not None for o in observations[:-1])


@pytest.mark.parametrize("stem", ["jobs_json_unknown", "jobs_json_purged"])
def test_a_lone_unknown_or_purged_id_is_unknown(stem: str) -> None:
    recorded = commands(MULTI)[stem]
    native = recorded.argv[-1]
    assert recorded.ran(DIALECT.queue_command([native]))
    assert recorded.result.returncode == 1
    (observation,) = DIALECT.parse_queue(
        recorded.result, native_ids=[native], observed_at=OBSERVED_AT
    )
    assert observation.absence is Absence.UNKNOWN


def test_purged_ids_among_many() -> None:
    ids = _ids()
    recorded = commands(MULTI)["jobs_json_many_after_purge"]
    assert recorded.ran(DIALECT.queue_command(list(ids.values())))
    observations = DIALECT.parse_queue(
        recorded.result, native_ids=list(ids.values()), observed_at=OBSERVED_AT
    )
    purged = set(case_json(MULTI)["purged_ids"])
    for observation in observations:
        assert (observation.absence is Absence.UNKNOWN) is (observation.native_id in purged)


@pytest.mark.parametrize("stem", ["cancel_purged", "cancel_unknown"])
def test_cancel_of_a_purged_or_unknown_id_is_not_an_error(stem: str) -> None:
    recorded = commands(MULTI)[stem]
    assert recorded.ran(DIALECT.cancel_command([recorded.argv[-1]]))
    DIALECT.check_cancel(recorded.result)


def test_eventlogs_of_a_purged_job_keep_the_exit_ambiguous() -> None:
    recorded = commands(MULTI)["evidence_purged"]
    native = recorded.argv[-1].partition(":")[2]
    jobid_int = int(native)
    command = DIALECT.evidence_command({jobid_int: frozenset({"exec", "main", "output"})})
    assert command is not None
    assert recorded.ran(command)
    assert DIALECT.evidence_transient_error(recorded.result) is None
    evidence = DIALECT.parse_evidence(recorded.result)[jobid_int]
    # every section says "key not found" (README item 7): answered, nothing fetched
    assert evidence.fetched == frozenset()
    assert evidence.answered == frozenset({"exec", "main", "output"})
    observation = Observation(
        native_id=native,
        source=Source.ACCOUNTING,
        observed_at=OBSERVED_AT,
        state=State.FAILED,
        final=True,
        stats=_queue("exit_137").stats,
    )
    (applied,) = DIALECT.apply_evidence([observation], {jobid_int: evidence})
    status = applied.stats.exit
    assert status is not None
    assert status.ambiguous is not None
    assert status.code == 137
    assert "key not found" in applied.detail


# -- the tagged-submission lookup ----------------------------------------------------

FIND = "_find_submission"


def test_the_recorded_production_lookup_found_nothing_with_the_old_script() -> None:
    """What 0.88.0 did with the script of commit d2ec250: nothing found, rc 0 (the
    TypeError of every job swallowed: diag_find_script_errors shows them)."""
    recorded = commands(FIND)
    old = recorded["find_submission"]
    assert old.argv[3] != FIND_SCRIPT  # the script changed since the recording
    assert old.result.stdout == ""
    errors = recorded["diag_find_script_errors"].result.stderr.splitlines()
    assert errors
    assert all("TypeError: get expected at least 1 argument" in e for e in errors)


def test_the_lookup_is_the_one_recorded_working_on_0_88() -> None:
    """FIND_SCRIPT reads jobspecs with job_info_lookup(...).get_decode(), the lookup the
    recording shows working on 0.88.0 (diag_find_script_job_info_lookup); it differs
    from that recorded script only in not swallowing errors other than ENOENT/EPERM."""
    recorded = commands(FIND)["diag_find_script_job_info_lookup"]
    tag = recorded.argv[4]
    command = DIALECT.find_submission_command(tag)
    assert command is not None
    assert command.argv[:3] == recorded.argv[:3]
    assert command.argv[4:] == recorded.argv[4:]
    assert dict(command.env) == dict(recorded.env)
    ours = command.argv[3].splitlines()
    theirs = recorded.argv[3].splitlines()
    lookup = [line for line in theirs if "lookup" in line or "get_decode" in line]
    assert len(lookup) == 3
    assert all(line in ours for line in lookup)
    assert not any("job_kvs_lookup" in line for line in ours)
    assert "TypeError" not in command.argv[3]
    assert "KeyError" not in command.argv[3]
    # its recorded answer finds the tagged job (hand-written: the tagged_submission id)
    found = DIALECT.parse_find_submission(recorded.result, tag)
    assert found is not None
    assert found.native_id == jobid("tagged_submission") == "366917713920"
    assert case_json("tagged_submission")["tag"] == tag


def test_every_tagged_job_is_in_the_working_lookup() -> None:
    recorded = commands(FIND)["diag_find_script_job_info_lookup"]
    for case in EXPECTED:
        tag = case_json(case)["tag"]
        found = DIALECT.parse_find_submission(recorded.result, tag)
        assert found is not None, case
        assert found.native_id == jobid(case), case
    assert DIALECT.parse_find_submission(recorded.result, "hpcstate-no-such-tag") is None


def test_the_production_files_are_the_shared_ones() -> None:
    # a guard against a half-copied folder: every case has its final answer
    for case in EXPECTED:
        assert json.loads(read(case, "jobs_json.out"))["state"] == "INACTIVE"
    assert (PRODUCTION / "README.md").exists()


def test_the_main_eventlogs_uri_memo_also_says_instance() -> None:
    """Without job-list's ``uri`` (a record that lacks it), the main eventlog's ``memo``
    ``uri`` (recorded in batch_sigterm's evidence_all) still says the task is a broker."""
    case = "batch_sigterm"
    record = json.loads(read(case, "jobs_json.out"))
    del record["uri"]
    native = jobid(case)
    result = CommandResult(argv=("flux", "jobs"), returncode=0, stdout=json.dumps(record))
    (observation,) = DIALECT.parse_queue(result, native_ids=[native], observed_at=OBSERVED_AT)
    evidence = DIALECT.parse_evidence(commands(case)["evidence_all"].result)
    assert evidence[int(native)].instance_uri == "ssh://node1/home/user/flux-VGjVY9/local-0"
    (applied,) = DIALECT.apply_evidence([observation], evidence)
    status = applied.stats.exit
    assert status is not None
    assert (status.code, status.signal) == (143, None)
    assert status.ambiguous is not None
    assert "broker" in status.ambiguous
    assert status.admits(killed(15))
    # the same without the main eventlog's memo: the exec eventlog's "exited 143" of a
    # task nothing says is a broker is taken as the exact exit it records
    plain = DIALECT.parse_evidence(commands(case)["evidence"].result)
    (taken,) = DIALECT.apply_evidence([observation], plain)
    assert taken.stats.exit == ExitStatus.exited(143)


def test_a_fatal_exceptions_exit_of_a_broker_is_not_exact_either() -> None:
    from hpcstate_flux._parse import JobEvidence

    observation = _queue("batch_sigterm")
    evidence = JobEvidence(
        jobid=int(jobid("batch_sigterm")),
        fetched=frozenset({"exec", "main"}),
        answered=frozenset({"exec", "main"}),
        exception_exit=ExitStatus.exited(143),
    )
    (applied,) = DIALECT.apply_evidence([observation], {evidence.jobid: evidence})
    status = applied.stats.exit
    assert status is not None
    assert status.ambiguous is not None
    assert status.admits(killed(15))
