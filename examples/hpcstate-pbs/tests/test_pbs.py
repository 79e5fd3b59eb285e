"""What the conformance suite cannot know about PBS: its numbers, its times, its flags."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import hpcstate_pbs
import pytest

from hpcstate import Absence, ParseError, SchedulerUnavailable
from hpcstate.backend import JobSpec
from hpcstate.testing import load_case

GOLDEN = Path(__file__).parent / "golden"
AT = datetime(2026, 3, 1, 12, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "code", "signal", "exact"),
    [
        (0, 0, None, True),
        (3, 3, None, True),
        (137, 137, None, False),  # a shell's 128+9: never presented as SIGKILL
        (255, 255, None, True),
        (265, None, 9, True),  # 256 + SIGKILL: the top process died of it
        (271, None, 15, True),
        (256 + 127, None, 127, True),
    ],
)
def test_exit_status_values(value: int, code: int | None, signal: int | None, exact: bool) -> None:
    status = hpcstate_pbs.decode_exit_status(value)
    assert status is not None
    assert (status.code, status.signal, status.exact) == (code, signal, exact)


@pytest.mark.parametrize("value", [-1, -29, -11])
def test_negative_exit_status_is_no_process_status(value: int) -> None:
    assert hpcstate_pbs.decode_exit_status(value) is None


@pytest.mark.parametrize("value", [256, 256 + 128, 100000])
def test_impossible_exit_status_is_a_parse_error(value: int) -> None:
    with pytest.raises(ParseError, match="Exit_status"):
        hpcstate_pbs.decode_exit_status(value)


def test_times_are_read_in_the_server_zone() -> None:
    paris = timezone(timedelta(hours=1))
    parsed = hpcstate_pbs.parse_pbs_time("Sun Mar  1 12:00:05 2026", paris)
    assert parsed == datetime(2026, 3, 1, 11, 0, 5, tzinfo=timezone.utc)
    with pytest.raises(ParseError, match="time"):
        hpcstate_pbs.parse_pbs_time("yesterday", paris)


def test_server_down_is_transient_never_a_verdict() -> None:
    case = load_case(GOLDEN / "_many_ids")
    result = case.result("qstat_down")
    dialect = hpcstate_pbs.PbsDialect()
    assert dialect.is_transient(result)
    with pytest.raises(SchedulerUnavailable):
        dialect.parse_queue(result, native_ids=["101.pbs", "102.pbs"], observed_at=AT)


def test_without_history_a_missing_job_is_only_absent() -> None:
    case = load_case(GOLDEN / "_many_ids")
    dialect = hpcstate_pbs.PbsDialect(history=False)
    (obs,) = dialect.parse_queue(case.result("qstat_none"), native_ids=["998.pbs"], observed_at=AT)
    assert obs.absence is Absence.ABSENT


def test_submit_flags() -> None:
    spec = JobSpec(
        command=["python", "train.py", "--lr=0.1; rm -rf /"],
        name="train",
        time_limit=timedelta(hours=30, seconds=1),
        cpus=4,
        memory_bytes=2 * 1024**3,
        partition="gpu",
        account="proj1",
        working_directory="/scratch/my dir",
    )
    argv = hpcstate_pbs.PbsDialect().submit_command(spec).argv
    assert argv[:7] == (
        "qsub",
        "-N",
        "train",
        "-l",
        "walltime=30:00:01",
        "-l",
        "select=1:ncpus=4:mem=2097152kb",
    )
    assert argv[7:9] == ("-q", "gpu")
    assert argv[9:11] == ("-A", "proj1")
    # The payload stays argv; the directory is an argument of a fixed script.
    assert argv[argv.index("--") + 1 :] == (
        "/bin/sh",
        "-c",
        'cd -- "$1" && shift && exec "$@"',
        "sh",
        "/scratch/my dir",
        "python",
        "train.py",
        "--lr=0.1; rm -rf /",
    )


def test_a_script_goes_to_stdin() -> None:
    command = hpcstate_pbs.PbsDialect().submit_command(JobSpec(script="#!/bin/sh\nexit 0\n"))
    assert command.argv == ("qsub",)
    assert command.stdin == "#!/bin/sh\nexit 0\n"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (JobSpec(command=["x"], array="1-3"), "array"),
        (JobSpec(command=["x"], environment={"A": "1,2"}), "commas"),
        (JobSpec(script="exit 0", working_directory="/tmp"), "working directory"),
    ],
)
def test_what_qsub_cannot_express_is_refused(spec: JobSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hpcstate_pbs.PbsDialect().submit_command(spec)


def test_registry_hands_out_this_backend() -> None:
    from hpcstate import registry

    info = registry.load("pbs")
    assert info is hpcstate_pbs.BACKEND
    assert info.make_dialect is not None


# -- what the plugin declares for the CLI ----------------------------------------------


def test_declared_resources_are_what_qsub_is_given() -> None:
    # submit_command writes -l walltime= and select=N:ncpus=:mem=; no tasks, no GPUs.
    assert hpcstate_pbs.BACKEND.resources == frozenset(
        {"time_limit", "cpus", "memory_bytes", "nodes"}
    )


def test_exit_form_pbs() -> None:
    """``hpcstate decode --from pbs`` reads through this declaration."""
    read = hpcstate_pbs.BACKEND.exit_forms["pbs"].read
    killed = read("265")  # Exit_status > 256: 256 + the signal (mom stores WTERMSIG + 0x100)
    assert killed.status is not None
    assert (killed.status.code, killed.status.signal) == (None, 9)
    walltime = read("-29")  # JOB_EXEC_KILL_WALLTIME: PBS's own code, no process status
    assert walltime.status is None
    assert "walltime exceeded" in walltime.summary
    plain = read("3")
    assert plain.status is not None
    assert (plain.status.code, plain.status.signal) == (3, None)
    with pytest.raises(ParseError):
        read("256")  # neither an exit code nor 256 + a signal
    with pytest.raises(ParseError):
        read("x")
