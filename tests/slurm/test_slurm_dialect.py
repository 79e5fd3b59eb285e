"""The Slurm dialect's commands and the small cases golden files do not cover."""

from __future__ import annotations

import shlex
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from hpcstate import (
    Absence,
    CommandFailed,
    ExitStatus,
    Observation,
    ParseError,
    SchedulerUnavailable,
    Source,
    State,
)
from hpcstate.backend import API_VERSION, AccountingQuery, CommandResult, JobSpec
from hpcstate_slurm import BACKEND, SlurmDialect, SlurmVersion, SubmitRejected, behaviour_for
from hpcstate_slurm._parse import (
    parse_cpu_time,
    parse_elapsed,
    parse_rss,
    parse_sbatch_output,
    parse_time,
)

UTC = timezone.utc
AT = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
D22 = SlurmDialect.for_version("22.05.8")
D26 = SlurmDialect.for_version("26.05.3")


def result(stdout: str = "", *, rc: int | None = 0, stderr: str = "") -> CommandResult:
    return CommandResult(argv=("x",), returncode=rc, stdout=stdout, stderr=stderr)


# -- versions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("slurm 22.05.8\n", (22, 5, 8)),
        ("slurm-wlm 23.11.4", (23, 11, 4)),
        ("slurm 26.05", (26, 5, 0)),
    ],
)
def test_version_parsing(text: str, expected: tuple[int, int, int]) -> None:
    assert SlurmVersion.parse(text).key == expected


def test_behaviour_per_version() -> None:
    old, new = behaviour_for(SlurmVersion.parse("slurm 22.05.8")), D26.behaviour
    assert (old.sacct_exit_high_codes_lossy, new.sacct_exit_high_codes_lossy) == (True, False)
    assert (old.sacct_json_exit_faulty, new.sacct_json_exit_faulty) == (True, False)
    assert (old.squeue_json_ignores_filters, new.squeue_json_ignores_filters) == (True, False)
    assert (old.raised_signal_reason, new.raised_signal_reason) == (False, True)
    # Unverified releases between the two recorded ones stay on the cautious side.
    middle = behaviour_for(SlurmVersion.parse("slurm 24.05.1"))
    assert middle.sacct_exit_high_codes_lossy
    assert not middle.sacct_json_exit_faulty


def test_backend_info() -> None:
    assert BACKEND.name == "slurm"
    assert BACKEND.api_version == API_VERSION
    caps = BACKEND.capabilities
    assert all(
        (
            caps.array_jobs,
            caps.steps,
            caps.lossless_signals,
            caps.accounting,
            caps.requeue,
            caps.adopt,
            caps.idempotent_submit,
        )
    )
    assert BACKEND.make_dialect is not None
    assert isinstance(BACKEND.make_dialect(), SlurmDialect)


# -- submit ------------------------------------------------------------------------------


def test_submit_command_runs_the_argv_exactly_once_quoted() -> None:
    argv = ["printf", "%s\\n", "a b", "it's", "$HOME", "|", ""]
    spec = JobSpec(command=argv, environment={"X": "a,b c"}, tag="t-1")
    command = D22.submit_command(spec)
    assert command.argv[:2] == ("sbatch", "--parsable")
    assert "--job-name=printf" in command.argv
    assert "--comment=hpcstate:t-1" in command.argv
    assert not any(a.startswith("--export") for a in command.argv)
    assert command.stdin is not None
    script = command.stdin
    assert script.startswith("#!/bin/sh\n")
    # Run the generated script with a real shell: it must print the argv verbatim.
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout == "a b\nit's\n$HOME\n|\n\n"
    assert "export X='a,b c'" in script


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        (True, "--requeue"),
        ("on", "--requeue"),
        (" Yes ", "--requeue"),
        ("1", "--requeue"),
        (False, "--no-requeue"),
        ("off", "--no-requeue"),
        ("NO", "--no-requeue"),
    ],
)
def test_yes_no_options_take_a_toml_boolean_or_a_word(value: object, flag: str) -> None:
    spec = JobSpec(command=["true"], options={"requeue": value})
    argv = D22.submit_command(spec).argv
    assert [a for a in argv if "requeue" in a] == [flag]


@pytest.mark.parametrize("value", ["maybe", "", 1, None])
def test_a_yes_no_option_that_is_neither_is_refused_naming_it(value: object) -> None:
    with pytest.raises(ValueError, match="option hold must be true or false") as info:
        D22.submit_command(JobSpec(command=["true"], options={"hold": value}))
    assert repr(value) in str(info.value)


def test_submit_command_options() -> None:
    spec = JobSpec(
        script_path="/home/u/job.sh",
        name="n",
        time_limit=timedelta(hours=25, seconds=1),
        memory_bytes=3 * 2**30 + 1,
        cpus=2,
        tasks=3,
        nodes=1,
        partition="p",
        account="a",
        array="1-10%2",
        environment={"A": "1", "B": "two"},
        working_directory="/w",
        stdout="/w/o",
        stderr="/w/e",
        dependencies=["123", "afterany:7"],
        extra_args=["--exclusive"],
        options={"qos": "high", "hold": "true", "image": "ignored"},
    )
    argv = D22.submit_command(spec).argv
    assert argv[-1] == "/home/u/job.sh"
    assert argv[-2] == "--exclusive"
    for flag in (
        "--job-name=n",
        "--time=1-01:00:01",
        "--mem=3073M",
        "--cpus-per-task=2",
        "--ntasks=3",
        "--nodes=1",
        "--partition=p",
        "--account=a",
        "--array=1-10%2",
        "--export=ALL,A=1,B=two",
        "--chdir=/w",
        "--output=/w/o",
        "--error=/w/e",
        "--dependency=afterok:123,afterany:7",
        "--qos=high",
        "--hold",
    ):
        assert flag in argv, flag
    assert not any("image" in a for a in argv)


@pytest.mark.parametrize(
    "spec",
    [
        JobSpec(script="x", environment={"A": "1,2"}),
        JobSpec(command=["x"], time_limit=timedelta(0)),
        JobSpec(command=["x"], cpus=0),
        JobSpec(command=["x"], tag="no spaces"),
        JobSpec(command=["x"], name="two\nlines"),
    ],
)
def test_submit_command_refuses_what_sbatch_cannot_carry(spec: JobSpec) -> None:
    with pytest.raises(ValueError):
        D22.submit_command(spec)


def test_bad_array_spec_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        D22.submit_command(JobSpec(command=["x"], array="5-1"))


@pytest.mark.parametrize(
    ("stdout", "job"),
    [("12345\n", "12345"), ("12345;cluster\n", "12345"), ("Submitted batch job 7\n", "7")],
)
def test_parse_submit(stdout: str, job: str) -> None:
    submission = D22.parse_submit(result(stdout), JobSpec(command=["x"], array="0-2"))
    assert submission.native_id == job
    assert submission.array_task_ids == (f"{job}_0", f"{job}_1", f"{job}_2")


def test_submit_failures() -> None:
    with pytest.raises(SubmitRejected) as caught:
        D22.parse_submit(
            result(rc=1, stderr="sbatch: error: Batch job submission failed: Invalid account"),
            JobSpec(command=["x"]),
        )
    assert caught.value.message == "Invalid account"
    with pytest.raises(SchedulerUnavailable):
        D22.parse_submit(
            result(rc=1, stderr="sbatch: error: Socket timed out on send/recv operation"),
            JobSpec(command=["x"]),
        )
    with pytest.raises(ParseError):
        parse_sbatch_output("sbatch: warning: something\n")


def test_find_submission_by_tag() -> None:
    out = "40|user comment|with pipe\n41|hpcstate:abc\n42|hpcstate:abcd\n"
    found = D22.parse_find_submission(result(out), "abc")
    assert found is not None
    assert found.native_id == "41"
    assert D22.parse_find_submission(result(out), "zzz") is None
    command = D22.find_submission_command("abc")
    assert command is not None
    assert command.argv[0] == "squeue"


# -- queue -------------------------------------------------------------------------------


def test_queue_command_is_one_call_with_cleaned_environment() -> None:
    command = D22.queue_command(["5", "7_1", "7_2", "9+1", "5"])
    argv = command.argv
    assert argv[:5] == ("squeue", "-h", "-t", "all", "-r")
    assert argv[argv.index("-j") + 1] == "5,7,9"
    fields = argv[argv.index("-O") + 1].split(",")
    assert fields[-1] == "Name:0"  # last: a '|' in a name cannot shift anything
    assert "exit_code:|" in fields
    assert "RestartCnt:|" in fields
    assert command.env["SLURM_TIME_FORMAT"] == "%s"
    assert command.env["TZ"] == "UTC"
    assert {"SQUEUE_*", "SLURM_TIME_FORMAT", "SLURM_CLUSTERS", "SLURM_BITSTR_LEN"} <= set(
        command.unset_env
    )


def _line(
    job: str,
    state: str,
    *,
    raw: str = "",
    task: str = "N/A",
    exit_: str = "0",
    nodes: str = "vm",
    reason: str = "None",
    restarts: str = "0",
    name: str = "n",
) -> str:
    base = job.split("_")[0]
    return "|".join(
        [
            job,
            raw or base,
            base,
            task,
            state,
            reason,
            "1795460891",
            "1795460901",
            "1795460905",
            nodes,
            exit_,
            "0",
            restarts,
            name,
        ]
    )


def test_queue_state_mapping() -> None:
    lines = [
        _line("1", "PENDING", nodes="", reason="Priority"),
        _line("2", "CONFIGURING"),
        _line("3", "RUNNING"),
        _line("4", "COMPLETING", exit_="256"),  # hides the outcome: still running
        _line("5", "COMPLETED"),
        _line("6", "FAILED", exit_="35072", reason="NonZeroExitCode"),
        _line("7", "NODE_FAIL", exit_="1", reason="NodeDown"),
        _line("8", "CANCELLED", exit_="0", nodes=""),  # cancelled while pending
        _line("9", "PENDING", nodes="", reason="BeginTime", restarts="2"),
        _line("10", "SUSPENDED"),
        _line("11", "OUT_OF_MEMORY", exit_="125"),
    ]
    ids = [str(i) for i in range(1, 13)]
    obs = {
        o.native_id: o
        for o in D22.parse_queue(result("\n".join(lines) + "\n"), native_ids=ids, observed_at=AT)
    }
    assert obs["1"].state is State.QUEUED
    assert obs["1"].stats.started_at is None  # a pending job's StartTime is a forecast
    assert obs["2"].state is State.QUEUED
    assert obs["3"].state is State.RUNNING
    assert obs["4"].state is State.RUNNING
    assert obs["4"].stats.exit is None
    assert obs["5"].state is State.COMPLETED
    assert not obs["5"].final
    assert obs["5"].source is Source.CONTROLLER
    assert obs["6"].state is State.FAILED
    assert obs["6"].stats.exit == ExitStatus.exited(137)
    assert obs["6"].source is Source.CONTROLLER
    assert obs["7"].state is State.NODE_FAIL
    assert obs["7"].stats.exit is None  # Slurm's own 1 is not SIGHUP
    assert obs["8"].state is State.CANCELLED
    assert obs["8"].stats.exit is None  # never ran
    assert obs["9"].restarts == 2
    assert obs["10"].state is State.RUNNING
    assert obs["11"].state is State.OUT_OF_MEMORY
    assert obs["11"].stats.exit == ExitStatus.killed(125)
    assert obs["12"].absence is Absence.ABSENT


def test_queue_arrays_groups_and_het_jobs() -> None:
    lines = [
        _line("20_1", "FAILED", raw="21", task="1", exit_="256"),
        _line("20_[2-4%2]", "PENDING", raw="20", task="2-4%2", nodes=""),
        _line("30+0", "RUNNING", raw="30"),
        _line("30+1", "RUNNING", raw="31"),
    ]
    ids = ["20_1", "20_3", "20", "30", "20_9"]
    obs = {
        o.native_id: o
        for o in D22.parse_queue(result("\n".join(lines)), native_ids=ids, observed_at=AT)
    }
    assert obs["20_1"].stats.exit == ExitStatus.exited(1)
    assert obs["20_3"].state is State.QUEUED
    assert obs["20"].state is State.RUNNING  # one task done, others waiting
    assert obs["30"].state is State.RUNNING
    assert obs["20_9"].absence is Absence.ABSENT


def test_invalid_job_id_is_absence_not_failure() -> None:
    gone = result(rc=1, stderr="slurm_load_jobs error: Invalid job id specified\n")
    (obs,) = D22.parse_queue(gone, native_ids=["5"], observed_at=AT)
    assert obs.absence is Absence.ABSENT


@pytest.mark.parametrize(
    "stderr",
    [
        "squeue: error: Unable to contact slurm controller (connect failure)",
        "slurm_load_jobs error: Socket timed out on send/recv operation",
        "sacct: error: Problem talking to the database: Connection refused",
        "error: Zero Bytes were transmitted or received",
        "Rate limit exceeded, please retry momentarily",
    ],
)
def test_transient_errors_are_never_observations(stderr: str) -> None:
    failed = result(rc=1, stderr=stderr)
    assert D22.is_transient(failed)
    with pytest.raises(SchedulerUnavailable):
        D22.parse_queue(failed, native_ids=["5"], observed_at=AT)
    with pytest.raises(SchedulerUnavailable):
        D22.parse_accounting(failed, query=AccountingQuery(native_ids=["5"]), observed_at=AT)
    assert D22.is_transient(result(rc=None))


def test_other_failures_are_command_failures() -> None:
    with pytest.raises(CommandFailed):
        D22.parse_queue(
            result(rc=1, stderr="squeue: error: bad option"), native_ids=["5"], observed_at=AT
        )


# -- accounting ----------------------------------------------------------------------------

HEADER = "JobID|JobIDRaw|State|ExitCode|DerivedExitCode|Reason|Elapsed|ElapsedRaw|TotalCPU|CPUTimeRAW|MaxRSS|Submit|Start|End|NodeList|JobName\n"


def test_accounting_command_window_is_utc() -> None:
    since = datetime(2026, 11, 23, 21, 30, tzinfo=timezone(timedelta(hours=2)))
    command = D22.accounting_command(
        AccountingQuery(native_ids=["5", "6_1"], submitted_after=since)
    )
    assert command is not None
    argv = command.argv
    assert argv[:5] == ("sacct", "-P", "-a", "-D", "-j")
    assert argv[5] == "5,6"
    assert argv[argv.index("-S") + 1] == "2026-11-23T19:20:00"  # 19:30 UTC minus the margin
    assert command.env["TZ"] == "UTC"
    assert argv[argv.index("-o") + 1].endswith(",JobName")
    assert D22.accounting_command(AccountingQuery(native_ids=[])) is None


def test_stale_pending_group_does_not_hide_finished_tasks() -> None:
    """Measured on 22.05: with -D the array's pending-group record is not updated when
    tasks split off."""
    out = HEADER + (
        "78_1|80|FAILED|1:0|0:0|None|00:00:00|0||0||1795460891|1795460901|1795460901|vm|a\n"
        "78_1.batch|80.batch|FAILED|1:0|||00:00:00|0||0||1795460901|1795460901|1795460901|vm|batch\n"
        "78_[1-4]|78|PENDING|0:0|0:0|None|00:00:00|0||0||1795460891|Unknown|Unknown|None assigned|a\n"
    )
    obs = {
        o.native_id: o
        for o in D22.parse_accounting(
            result(out), query=AccountingQuery(native_ids=["78_1", "78_2", "78"]), observed_at=AT
        )
    }
    assert obs["78_1"].state is State.FAILED
    assert obs["78_1"].final
    assert obs["78_1"].restarts == 0
    assert obs["78_2"].state is State.QUEUED
    assert not obs["78_2"].final
    assert obs["78"].state is State.RUNNING  # one task done, others waiting


def test_accounting_lag_without_step_rows_is_not_final() -> None:
    """Measured: for ~15 s sacct had the job's end but no step rows (DerivedExitCode 0:0)."""
    out = (
        HEADER
        + "63|63|COMPLETED|0:0|0:0|None|00:00:01|1||1||1795460891|1795460901|1795460902|vm|a\n"
    )
    (obs,) = D22.parse_accounting(
        result(out), query=AccountingQuery(native_ids=["63"]), observed_at=AT
    )
    assert obs.state is State.COMPLETED
    assert not obs.final
    assert obs.stats.exit is None


def test_derived_exit_column_is_exact_where_step_rows_are_lossy() -> None:
    """Measured on 22.05: a step exiting 133 prints 5:0; DerivedExitCode prints 133:0."""
    out = HEADER + (
        "63|63|COMPLETED|0:0|133:0|None|00:00:01|1||1||1795460891|1795460901|1795460902|vm|a\n"
        "63.batch|63.batch|COMPLETED|0:0|||00:00:01|1||1||1795460901|1795460901|1795460902|vm|batch\n"
        "63.0|63.0|FAILED|5:0|||00:00:00|0||0||1795460902|1795460902|1795460902|vm|sh\n"
    )
    (obs,) = D22.parse_accounting(
        result(out), query=AccountingQuery(native_ids=["63"]), observed_at=AT
    )
    assert obs.final
    assert obs.stats.exit == ExitStatus.exited(0)
    assert obs.stats.derived_exit == ExitStatus.exited(133)


def _two_lossy_steps(derived_column: str) -> Observation:
    # Steps print 7:0 and 3:0 on 22.05: 7 or 135, 3 or 131. The worst was 7, 131 or 135.
    out = HEADER + (
        f"64|64|COMPLETED|0:0|{derived_column}|None|00:00:02|2||2||1795460891|1795460901|1795460903|vm|a\n"
        "64.batch|64.batch|COMPLETED|0:0|||00:00:02|2||2||1795460901|1795460901|1795460903|vm|batch\n"
        "64.0|64.0|FAILED|7:0|||00:00:01|1||1||1795460901|1795460901|1795460902|vm|sh\n"
        "64.1|64.1|FAILED|3:0|||00:00:01|1||1||1795460902|1795460902|1795460903|vm|sh\n"
    )
    (obs,) = D22.parse_accounting(
        result(out), query=AccountingQuery(native_ids=["64"]), observed_at=AT
    )
    return obs


def test_the_exact_derived_column_settles_which_lossy_step_was_worst() -> None:
    # The column's 131 is the second step's 3 + 128: it was the worst after all.
    assert _two_lossy_steps("131:0").stats.derived_exit == ExitStatus.exited(131)
    assert _two_lossy_steps("7:0").stats.derived_exit == ExitStatus.exited(7)


def test_a_derived_column_the_steps_rule_out_is_not_taken() -> None:
    # 3 cannot be the worst when a step printed 7; the steps' own answer stays, and says
    # it is not sure.
    derived = _two_lossy_steps("3:0").stats.derived_exit
    assert derived is not None
    assert not derived.exact
    assert derived.ambiguous is not None
    for text in ("exit 7", "exit 131", "exit 135"):
        assert text in derived.ambiguous


def test_requeued_record_is_no_verdict_and_counts_a_restart() -> None:
    out = HEADER + (
        "42|42|NODE_FAIL|1:0|0:0|None|00:00:04|4||4||1795460891|1795460892|1795460896|vm|a\n"
        "42|42|RUNNING|0:0|0:0|None|00:00:01|1||1||1795460900|1795460901|Unknown|vm|a\n"
    )
    (obs,) = D22.parse_accounting(
        result(out), query=AccountingQuery(native_ids=["42"]), observed_at=AT
    )
    assert obs.state is State.RUNNING
    assert obs.restarts == 1
    only_node_fail = HEADER + out.splitlines()[1] + "\n"
    (first,) = D22.parse_accounting(
        result(only_node_fail), query=AccountingQuery(native_ids=["42"]), observed_at=AT
    )
    assert first.state is State.NODE_FAIL
    assert first.final
    assert first.stats.exit is None  # Slurm's 1:0, not the job's


def test_no_record_and_other_jobs_rows() -> None:
    out = (
        HEADER + "7|7|COMPLETED|0:0|0:0|None|00:00:01|1||1||1795460891|1795460901|1795460902|vm|a\n"
    )
    (obs,) = D22.parse_accounting(
        result(out), query=AccountingQuery(native_ids=["8"]), observed_at=AT
    )
    assert obs.absence is Absence.NO_RECORD


def test_value_formats() -> None:
    assert parse_elapsed("1-02:03:04") == 93784
    assert parse_elapsed("INVALID") is None
    assert parse_cpu_time("01:05.123") == pytest.approx(65.123)
    assert parse_cpu_time("01:05:07") == 3907
    assert parse_cpu_time("00:01:02") == 62
    assert parse_cpu_time("2-00:00:00") == 172800
    assert parse_rss("4900K") == 4900 * 1024
    assert parse_rss("11.77M") == round(11.77 * 2**20)
    assert parse_rss("2G") == 2 * 2**30
    assert parse_rss("4599808") == 4599808
    assert parse_time("Unknown") is None
    assert parse_time("None") is None
    assert parse_time("0") is None
    assert parse_time("1795460901") == datetime.fromtimestamp(1795460901, tz=UTC)
    cet = timezone(timedelta(hours=1))
    assert parse_time("2026-11-23T20:00:00", tz=cet) == datetime(2026, 11, 23, 19, tzinfo=UTC)


def test_cancel() -> None:
    command = D22.cancel_command(["5", "6_2"])
    assert command.argv == ("scancel", "5", "6_2")
    D22.check_cancel(result())
    D22.check_cancel(
        result(
            rc=1,
            stderr="scancel: error: Kill job error on job id 5: Job/step already completing or completed\n",
        )
    )
    with pytest.raises(CommandFailed):
        D22.check_cancel(result(rc=1, stderr="scancel: error: Access/permission denied\n"))


def test_shlex_join_is_what_the_script_runs() -> None:
    argv = ["echo", "a'b", 'c"d']
    script = D22.submit_command(JobSpec(command=argv)).stdin
    assert script is not None
    assert script.splitlines()[-1] == "exec " + shlex.join(argv)
