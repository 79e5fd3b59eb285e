"""FluxDialect: the exact argv of every command, and how results are judged."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from flux_golden import OBSERVED_AT

from hpcstate import (
    Absence,
    CommandFailed,
    ExitStatus,
    JobStats,
    Observation,
    ParseError,
    ReasonKind,
    SchedulerUnavailable,
    Source,
    State,
)
from hpcstate.backend import AccountingQuery, CommandResult, JobSpec
from hpcstate_flux import BACKEND, CAPABILITIES, FluxDialect
from hpcstate_flux._commands import (
    ASCII_IDS_ENV,
    EVIDENCE_SCRIPT,
    FIND_SCRIPT,
    duration_fsd,
)
from hpcstate_flux._observe import apply_evidence
from hpcstate_flux._parse import JobEvidence, TaskExit

DIALECT = FluxDialect()


def result(stdout: str = "", stderr: str = "", rc: int | None = 0) -> CommandResult:
    return CommandResult(argv=("flux", "x"), returncode=rc, stdout=stdout, stderr=stderr)


# -- submit ---------------------------------------------------------------------------


def test_submit_command_with_every_option() -> None:
    spec = JobSpec(
        command=("bash", "-c", "echo $HOME {}"),
        name="a|b'c\"d e",
        time_limit=timedelta(minutes=90),
        nodes=2,
        tasks=4,
        cpus=3,
        partition="debug",
        account="proj1",
        environment={"A": "1", "COST": "$5 and $$"},
        working_directory="/scratch/w",
        stdout="/scratch/w/out.{{id}}",
        stderr="/scratch/w/err",
        dependencies=("afterok:\u0192ATYRGb", "6207569920", "begin-time:1795455672.0"),
        extra_args=("--exclusive",),
        options={"urgency": "hold", "image": "ignored-by-flux"},
        tag="run-1/item-7",
    )
    command = DIALECT.submit_command(spec)
    assert command.argv == (
        "flux",
        "submit",
        f"--env-remove={ASCII_IDS_ENV}",
        "--job-name=a|b'c\"d e",
        "--time-limit=5400s",
        "--nodes=2",
        "--ntasks=4",
        "--cores-per-task=3",
        "--queue=debug",
        '--setattr=system.bank="proj1"',
        "--env=A=1",
        "--env=COST=$$5 and $$$$",
        "--cwd=/scratch/w",
        "--output=/scratch/w/out.{{id}}",
        "--error=/scratch/w/err",
        "--dependency=afterok:6207569920",
        "--dependency=afterok:6207569920",
        "--dependency=begin-time:1795455672.0",
        "--urgency=hold",
        '--setattr=user.hpcstate_tag="run-1/item-7"',
        "--exclusive",
        "bash",
        "-c",
        "echo $HOME {}",
    )
    assert command.stdin is None
    assert command.env[ASCII_IDS_ENV] == "1"


def test_urgency_from_a_toml_integer() -> None:
    spec = JobSpec(command=("true",), options={"urgency": 31})  # type: ignore[dict-item]
    assert "--urgency=31" in DIALECT.submit_command(spec).argv


def test_minimal_submit() -> None:
    command = DIALECT.submit_command(JobSpec(command=("true",)))
    assert command.argv == ("flux", "submit", f"--env-remove={ASCII_IDS_ENV}", "true")


def test_batch_script_on_stdin_gets_one_slot_by_default() -> None:
    script = "#!/bin/sh\nflux run hostname\n"
    command = DIALECT.submit_command(JobSpec(script=script, name="b"))
    assert command.argv == (
        "flux",
        "batch",
        f"--env-remove={ASCII_IDS_ENV}",
        "--job-name=b",
        "--nslots=1",
    )
    assert command.stdin == script


def test_batch_script_path_slots_and_nodes() -> None:
    command = DIALECT.submit_command(
        JobSpec(script_path="/home/u/run.sh", tasks=8, cpus=2, nodes=2)
    )
    assert command.argv[2:] == (
        f"--env-remove={ASCII_IDS_ENV}",
        "--nodes=2",
        "--nslots=8",
        "--cores-per-slot=2",
        "/home/u/run.sh",
    )
    nodes_only = DIALECT.submit_command(JobSpec(script_path="/s.sh", nodes=3))
    assert "--nodes=3" in nodes_only.argv
    assert not any(arg.startswith("--nslots") for arg in nodes_only.argv)


def test_uri_and_executable_are_configurable() -> None:
    dialect = FluxDialect(flux="/opt/flux/bin/flux", uri="ssh://login/run/flux/local")
    command = dialect.queue_command(["1"])
    assert command.argv == ("/opt/flux/bin/flux", "jobs", "--json", "1")
    assert command.env["FLUX_URI"] == "ssh://login/run/flux/local"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (JobSpec(command=("true",), array="1-10"), "no array jobs"),
        (JobSpec(command=("true",), environment={"BAD-NAME": "x"}), "not valid"),
        (JobSpec(command=("true",), environment={"-PATH": "x"}), "not valid"),
        (JobSpec(command=("true",), tasks=0), "tasks must be >= 1"),
        (JobSpec(command=("true",), time_limit=timedelta(0)), "positive"),
        (JobSpec(command=("-x",)), "must not start with '-'"),
        (JobSpec(command=("true",), options={"urgency": "32"}), "urgency"),
        # not ASCII digits (flux would refuse them), or a number int() cannot even read
        (JobSpec(command=("true",), options={"urgency": "\u0663"}), "urgency must be 0..31"),
        (JobSpec(command=("true",), options={"urgency": "\u00b2"}), "urgency must be 0..31"),
        (JobSpec(command=("true",), options={"urgency": "9" * 5000}), "urgency must be 0..31"),
        (JobSpec(command=("true",), dependencies=("not an id",)), "neither a job id"),
    ],
)
def test_bad_specs_are_refused_with_a_clear_error(spec: JobSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DIALECT.submit_command(spec)


@pytest.mark.parametrize(
    ("limit", "fsd"),
    [
        (timedelta(seconds=5), "5s"),
        (timedelta(hours=2), "7200s"),
        (timedelta(milliseconds=1500), "1.5s"),
    ],
)
def test_time_limit_is_never_minutes(limit: timedelta, fsd: str) -> None:
    # flux reads a bare number as MINUTES: always give units.
    assert duration_fsd(limit) == fsd


# -- queue ----------------------------------------------------------------------------


def test_queue_command_one_call_decimal_ids_deduplicated() -> None:
    command = DIALECT.queue_command(["\u0192ATYRGb", "6207569920", "fATYRGb", "42"])
    assert command.argv == ("flux", "jobs", "--json", "6207569920", "42")
    assert command.stdin is None
    assert DIALECT.accounting_command(AccountingQuery(native_ids=["42"])) == DIALECT.queue_command(
        ["42"]
    )


def test_many_ids_go_through_xargs_on_stdin() -> None:
    ids = [str(n) for n in range(1, 2002)]
    command = DIALECT.queue_command(ids)
    assert command.argv == ("xargs", "flux", "jobs", "--json")
    assert command.stdin == "\n".join(ids)


def test_xargs_chunks_are_all_parsed() -> None:
    # xargs may run flux jobs several times: several documents, one of them a lone job.
    one = {"id": 1, "state": "RUN", "t_submit": 1795455672.0}
    two = {"id": 2, "state": "INACTIVE", "result": "COMPLETED", "waitstatus": 0}
    stdout = json.dumps({"jobs": [one]}) + "\n" + json.dumps(two) + "\n"
    observed = DIALECT.parse_queue(
        result(stdout, "JobID 3 unknown\n", rc=123),
        native_ids=["1", "2", "3"],
        observed_at=OBSERVED_AT,
    )
    assert [o.state for o in observed] == [State.RUNNING, State.COMPLETED, None]
    assert observed[2].absence is not None


def test_queue_refuses_ids_flux_cannot_name() -> None:
    with pytest.raises(ParseError, match="not a Flux job id"):
        DIALECT.queue_command(["12", "abc"])
    with pytest.raises(ValueError, match="at least one"):
        DIALECT.queue_command([])


RUNNING_111 = {"id": 111, "state": "RUN", "t_submit": 1795455672.0, "t_run": 1795455673.0}


def _poll(stdout: str, stderr: str, rc: int | None = 0) -> list[Observation]:
    return list(
        DIALECT.parse_queue(
            result(stdout, stderr, rc=rc), native_ids=["111", "222"], observed_at=OBSERVED_AT
        )
    )


@pytest.mark.parametrize(
    "stderr",
    [
        "rpc: Operation not permitted\n",  # what flux-jobs prints for a failed list-id
        "flux-jobs: ERROR: rpc: Operation not permitted\n",
        "rpc: Protocol error\n",
    ],
)
def test_an_id_job_list_refused_is_the_commands_failure_never_absent(stderr: str) -> None:
    # job-list serves queue and history: "no answer" for an id is never "not listed".
    with pytest.raises(CommandFailed, match=r"job\(s\) 222\b") as raised:
        _poll(json.dumps(RUNNING_111), stderr)
    assert stderr.strip().rpartition("rpc: ")[2] in str(raised.value)  # flux's own words
    # exit 1 (nothing listed) says the same
    with pytest.raises(CommandFailed, match="7"):
        DIALECT.parse_queue(result("", stderr, rc=1), native_ids=["7"], observed_at=OBSERVED_AT)


@pytest.mark.parametrize(
    "stderr",
    [
        "rpc: Resource temporarily unavailable\n",
        "flux-jobs: ERROR: 222: Resource temporarily unavailable\n",
        "rpc: Function not implemented\n",
        "rpc: Connection reset by peer\n",
    ],
)
def test_an_id_job_list_could_not_answer_yet_is_transient(stderr: str) -> None:
    with pytest.raises(SchedulerUnavailable, match="222"):
        _poll(json.dumps(RUNNING_111), stderr)


def test_an_id_missing_without_any_explanation_is_never_absent() -> None:
    # flux jobs answers every id (a record or an error line): silence is unreadable.
    with pytest.raises(ParseError, match="222"):
        _poll(json.dumps(RUNNING_111), "")
    # xargs exit 123: one chunk died; its ids got no answer
    with pytest.raises(CommandFailed, match="222"):
        _poll(json.dumps(RUNNING_111), "xargs: flux: terminated by signal 9\n", rc=123)
    # a failed command is not "every id unknown": it is the command's failure
    with pytest.raises(CommandFailed):
        DIALECT.parse_queue(
            result("", "flux-jobs: ERROR: something else\n", rc=1),
            native_ids=["7"],
            observed_at=OBSERVED_AT,
        )
    with pytest.raises(CommandFailed):
        DIALECT.parse_queue(result("", "usage", rc=2), native_ids=["7"], observed_at=OBSERVED_AT)


def test_reviewer_polls_never_settle_a_job_nobody_answered_for() -> None:
    # /tmp/rev/flux1.py: a queued job whose list-id failed went ABSENT -> SETTLING.
    from hpcstate import advance, new_item, submitted

    pending = {"id": 222, "state": "SCHED", "t_submit": 1795455672.0}
    before = OBSERVED_AT - timedelta(hours=1)
    item = submitted(
        new_item(id="i", run_id="r", backend="flux", now=before), native_id="222", at=before
    ).item
    (_, first) = _poll(json.dumps({"jobs": [RUNNING_111, pending]}), "")
    item = advance(item, first).item
    assert item.state is State.QUEUED
    for stdout, stderr in (
        (json.dumps(RUNNING_111), "flux-jobs: ERROR: 222: Resource temporarily unavailable\n"),
        (json.dumps({"jobs": [RUNNING_111]}), "flux-jobs: ERROR: rpc: Operation not permitted\n"),
    ):
        with pytest.raises((SchedulerUnavailable, CommandFailed)):
            _poll(stdout, stderr)
    assert item.state is State.QUEUED  # nothing to apply: no observation was made


def test_unknown_ids_are_still_answers_next_to_listed_ones() -> None:
    listed, unknown = _poll(json.dumps(RUNNING_111), "JobID 222 unknown\n")
    assert listed.state is State.RUNNING
    assert unknown.absence is Absence.UNKNOWN
    assert unknown.state is None


def test_observation_keeps_the_asked_native_id() -> None:
    stdout = json.dumps({"id": 6207569920, "state": "SCHED"})
    (observation,) = DIALECT.parse_queue(
        result(stdout), native_ids=["\u0192ATYRGb"], observed_at=OBSERVED_AT
    )
    assert observation.native_id == "\u0192ATYRGb"  # advance() matches it to the item


# -- cancel ---------------------------------------------------------------------------


def test_cancel_command_and_already_finished_jobs() -> None:
    command = DIALECT.cancel_command(["\u0192ATYRGb", "42"])
    assert command.argv == ("flux", "cancel", "6207569920", "42")
    DIALECT.check_cancel(result(rc=0))
    DIALECT.check_cancel(result(stderr="flux-cancel: ERROR: fATYRGb: job is inactive\n", rc=1))
    DIALECT.check_cancel(result(stderr="flux-cancel: ERROR: f2: unknown job id\n", rc=1))
    with pytest.raises(CommandFailed, match="Operation not permitted"):
        DIALECT.check_cancel(
            result(stderr="flux-cancel: ERROR: f2: Operation not permitted\n", rc=1)
        )


@pytest.mark.parametrize("stderr", ["", "\n  \n"])
def test_cancel_failing_without_a_word_is_a_failure(stderr: str) -> None:
    # Nothing explains the non-zero exit: it is not "already finished".
    with pytest.raises(CommandFailed):
        DIALECT.check_cancel(result(stderr=stderr, rc=1))
    with pytest.raises(CommandFailed):
        DIALECT.check_cancel(result(stderr=stderr, rc=None))


# -- find a tagged submission -----------------------------------------------------------


def test_find_submission_looks_for_the_tag() -> None:
    command = DIALECT.find_submission_command("run-1/item-7")
    assert command is not None
    assert command.argv == ("flux", "python", "-c", FIND_SCRIPT, "run-1/item-7", "1000")
    assert DIALECT.find_submission_command("") is None
    compile(FIND_SCRIPT, "find", "exec")  # at least valid Python
    lines = "\n".join(
        json.dumps(record)
        for record in (
            {"id": 900, "tag": "run-1/item-8"},
            {"id": 700, "tag": "run-1/item-7"},
            {"id": 500, "tag": "run-1/item-7"},
            {"id": 300, "tag": 7},
        )
    )
    found = DIALECT.parse_find_submission(result(lines), "run-1/item-7")
    assert found is not None
    assert found.native_id == "500"  # the first submission
    assert DIALECT.parse_find_submission(result(""), "run-1/item-7") is None
    with pytest.raises(CommandFailed):
        DIALECT.parse_find_submission(result("", "Traceback...", rc=1), "x")


# -- transient errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "stderr",
    [
        "flux-jobs: ERROR: Unable to connect to Flux: broker socket /run/flux/local was not found",
        "flux-resource: ERROR: [Errno 2] Unable to connect to Flux: ENOENT: No such file or directory",
        "flux-job: flux_open: Connection refused",
        "rpc: Connection reset by peer",
        "flux-jobs: ERROR: [Errno 38] Function not implemented",
        "flux-cancel: ERROR: f2: Broken pipe",
    ],
)
def test_unreachable_broker_is_transient(stderr: str) -> None:
    assert DIALECT.is_transient(result(stderr=stderr, rc=1)) is True


@pytest.mark.parametrize(
    "stderr",
    [
        "",
        "JobID \u0192C6RdJf unknown",
        "[Errno 22] dependency: afterok: id fAAAAAAA: job not found",
        "flux-submit: ERROR: invalid Flux standard duration",
        "flux-batch: ERROR: Number of slots to allocate must be specified",
        "sh: 1: flux: not found",
    ],
)
def test_real_refusals_are_not_transient(stderr: str) -> None:
    assert DIALECT.is_transient(result(stderr=stderr, rc=1)) is False


def test_timeout_and_ssh_failure_are_transient() -> None:
    assert DIALECT.is_transient(result(rc=None)) is True
    ssh = "ssh: connect to host login port 22: Connection timed out"
    assert DIALECT.is_transient(result(stderr=ssh, rc=255)) is True


# -- eventlog evidence --------------------------------------------------------------------


def _failed(code: int, *, reason: ReasonKind = ReasonKind.NON_ZERO_EXIT_CODE) -> Observation:
    from hpcstate import JobStats, Reason

    return Observation(
        native_id="77",
        source=Source.ACCOUNTING,
        observed_at=OBSERVED_AT,
        state=State.FAILED,
        final=True,
        stats=JobStats(
            exit=ExitStatus.from_shell_code(code),
            exit_source=Source.ACCOUNTING,
            reason=Reason(kind=reason, detail="exec" if reason is ReasonKind.EXCEPTION else ""),
        ),
    )


def _ended(state: State, exit_status: ExitStatus | None) -> Observation:
    return Observation(
        native_id="78",
        source=Source.ACCOUNTING,
        observed_at=OBSERVED_AT,
        state=state,
        final=True,
        stats=JobStats(exit=exit_status, exit_source=Source.ACCOUNTING if exit_status else None),
    )


def test_every_failed_job_that_ran_is_checked_for_an_oom_kill() -> None:
    # A child killed for memory can leave any exit code: the oom plugin's log line in
    # the output eventlog is the only evidence, so every FAILED job that ran is checked.
    for status in (ExitStatus.exited(1), ExitStatus.exited(2), ExitStatus.killed(6)):
        assert DIALECT.evidence_requests([_ended(State.FAILED, status)]) == {
            78: frozenset({"output"})
        }
    # never ran (no waitstatus: no shell, no oom plugin), or not a failure: nothing to read
    assert DIALECT.evidence_requests([_ended(State.FAILED, None)]) == {}
    assert DIALECT.evidence_requests([_ended(State.COMPLETED, ExitStatus.exited(0))]) == {}
    assert DIALECT.evidence_requests([_ended(State.CANCELLED, ExitStatus.killed(15))]) == {}


def test_oom_log_line_on_a_failure_with_any_exit_code() -> None:
    line = json.dumps(
        {
            "timestamp": 2.0,
            "name": "log",
            "context": {
                "component": "oom",
                "message": "Memory cgroup out of memory: killed 1 task on vm.",
            },
        }
    )
    stdout = f"@@hpcstate-begin output 78\n{line}\n@@hpcstate-end output 78 0\n"
    observation = _ended(State.FAILED, ExitStatus.exited(1))
    (applied,) = DIALECT.apply_evidence([observation], DIALECT.parse_evidence(result(stdout)))
    assert applied.state is State.OUT_OF_MEMORY
    assert applied.stats.exit == ExitStatus.exited(1)  # the code stays what it was


def test_evidence_command_is_one_framed_round_trip() -> None:
    requests = DIALECT.evidence_requests([_failed(137), _failed(139, reason=ReasonKind.EXCEPTION)])
    assert requests == {77: frozenset({"exec", "main", "output"})}
    command = DIALECT.evidence_command(requests)
    assert command is not None
    assert command.argv == (
        "sh",
        "-c",
        EVIDENCE_SCRIPT,
        "hpcstate-flux-evidence",
        "flux",
        "exec:77",
        "main:77",
        "output:77",
    )
    assert DIALECT.evidence_command({}) is None


def test_exception_wait_status_makes_the_signal_exact() -> None:
    # flux >= 0.84: an exec exception (exit-on-error) carries the task's wait status.
    stdout = "\n".join(
        [
            "@@hpcstate-begin main 77",
            json.dumps(
                {
                    "timestamp": 1.0,
                    "name": "exception",
                    "context": {
                        "type": "exec",
                        "severity": 0,
                        "note": "task rank 1 failed (Segmentation fault)",
                        "wait_status": 11,
                    },
                }
            ),
            "@@hpcstate-end main 77 0",
        ]
    )
    evidence = DIALECT.parse_evidence(result(stdout))
    (applied,) = DIALECT.apply_evidence([_failed(139, reason=ReasonKind.EXCEPTION)], evidence)
    assert applied.stats.exit == ExitStatus.killed(11)
    assert applied.stats.reason is not None
    assert applied.stats.reason.kind is ReasonKind.EXCEPTION  # the fatal exception stays


def test_oom_log_line_makes_a_failure_out_of_memory() -> None:
    # Synthetic: the shell oom plugin's log entry as src/shell/oom.c writes it (no
    # recorded instance had a cgroup v2 memory controller).
    line = json.dumps(
        {
            "timestamp": 2.0,
            "name": "log",
            "context": {
                "rank": 0,
                "level": 3,
                "message": "Memory cgroup out of memory: killed 1 task on vm.",
                "component": "oom",
                "file": "oom.c",
                "line": 80,
            },
        }
    )
    stdout = f"@@hpcstate-begin output 77\n{line}\n\n@@hpcstate-end output 77 0\n"
    evidence = DIALECT.parse_evidence(result(stdout))
    (applied,) = DIALECT.apply_evidence([_failed(137)], evidence)
    assert applied.state is State.OUT_OF_MEMORY
    assert applied.stats.reason is not None
    assert applied.stats.reason.kind is ReasonKind.OUT_OF_MEMORY
    assert "killed 1 task" in applied.stats.reason.text
    # no oom line: no OOM (the recorded sigkill case is an ordinary FAILED)
    empty = DIALECT.parse_evidence(
        result("@@hpcstate-begin output 77\n@@hpcstate-end output 77 1\n")
    )
    (plain,) = DIALECT.apply_evidence([_failed(137)], empty)
    assert plain.state is State.FAILED


def test_unreadable_eventlog_keeps_the_ambiguity() -> None:
    stdout = (
        "@@hpcstate-begin exec 77\nflux-job: guest.exec.eventlog: key not found\n\n"
        "@@hpcstate-end exec 77 1\n"
    )
    res = result(stdout)
    assert DIALECT.evidence_is_transient(res) is False
    evidence = DIALECT.parse_evidence(res)
    assert evidence[77].fetched == frozenset()
    (applied,) = DIALECT.apply_evidence([_failed(137)], evidence)
    assert applied.stats.exit == _failed(137).stats.exit
    assert "key not found" in applied.detail


def test_unreachable_broker_during_eventlogs_is_transient() -> None:
    stdout = (
        "@@hpcstate-begin exec 77\nflux-job: flux_open: Connection refused\n\n"
        "@@hpcstate-end exec 77 1\n"
    )
    assert DIALECT.evidence_is_transient(result(stdout)) is True
    assert DIALECT.evidence_is_transient(result(rc=None)) is True


def test_tasks_that_ended_differently_with_the_same_code_stay_ambiguous() -> None:
    evidence = JobEvidence(
        jobid=77,
        fetched=frozenset({"exec"}),
        task_exits=(
            TaskExit(rank=0, exit=ExitStatus.killed(9)),
            TaskExit(rank=1, exit=ExitStatus.exited(137)),
        ),
    )
    applied = apply_evidence(_failed(137), evidence)
    assert applied.stats.exit is not None
    assert applied.stats.exit.ambiguous is not None
    assert "ended differently" in applied.stats.exit.ambiguous


def test_malformed_frames_are_parse_errors() -> None:
    for stdout in (
        "stray text\n",
        "@@hpcstate-begin nope 77\n",
        "@@hpcstate-begin exec 77\n@@hpcstate-begin exec 78\n",
        "@@hpcstate-end exec 77 0\n",
    ):
        with pytest.raises(ParseError):
            DIALECT.parse_evidence(result(stdout))
    truncated = DIALECT.parse_evidence(result("@@hpcstate-begin exec 77\n"))
    assert truncated[77].fetched == frozenset()


# -- the plugin's declaration -------------------------------------------------------------


def test_backend_info() -> None:
    assert BACKEND.name == "flux"
    assert BACKEND.capabilities == CAPABILITIES
    assert CAPABILITIES.accounting is False  # job-list is queue and history
    assert CAPABILITIES.array_jobs is False
    assert CAPABILITIES.lossless_signals is False  # partial: see docs/backends/flux.md
    assert BACKEND.make_dialect is not None
    assert isinstance(BACKEND.make_dialect(), FluxDialect)


def test_registry_loads_the_flux_backend() -> None:
    from hpcstate import registry

    assert registry.load("flux") is BACKEND


def test_importing_the_backend_does_no_io() -> None:
    import subprocess
    import sys

    # Measured against the core's own imports: on Python 3.10, attrs imports platform,
    # which imports subprocess; that is not ours to avoid.
    code = (
        "import sys, hpcstate; before = set(sys.modules);"
        "import hpcstate_flux;"
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in "
        "{'asyncio','subprocess','socket','asyncssh','flux'} or m.startswith('hpcstate.runtime')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_parse_and_observe_agree_on_the_state_and_result_names() -> None:
    from hpcstate_flux._observe import ACTIVE_STATES, RESULTS
    from hpcstate_flux._parse import RESULT_NAME_SET, STATE_NAME_SET

    assert {"NEW", "DEPEND", "PRIORITY", "SCHED", "RUN", "CLEANUP", "INACTIVE"} == STATE_NAME_SET
    assert {*ACTIVE_STATES, "INACTIVE"} == STATE_NAME_SET
    assert set(RESULTS) == RESULT_NAME_SET


def test_the_modules_keep_their_layers() -> None:
    """commands: argv only; parse: text -> rows (no Observation); observe: rows ->
    Observations; none of them imports the dialect, the backend or the runtime."""
    import ast
    import importlib

    def imported(module: str) -> set[str]:
        source = importlib.import_module(f"hpcstate_flux.{module}").__file__
        assert source is not None
        with open(source, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names.add(("." * node.level) + (node.module or ""))
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        return names

    layers = {"_commands": {"._observe", "._dialect", "._io", "._options"},
              "_parse": {"._commands", "._observe", "._dialect", "._io", "._options"},
              "_observe": {"._commands", "._dialect", "._io", "._options"}}  # fmt: skip
    for module, forbidden in layers.items():
        names = imported(module)
        assert not names & forbidden, (module, names & forbidden)
        assert not any(name.startswith("hpcstate.runtime") for name in names), module
    assert "hpcstate.Observation" not in imported("_parse")
    assert "hpcstate.Observation" not in imported("_commands")
