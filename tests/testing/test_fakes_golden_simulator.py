"""FakeRunner, the golden loader and the simulator, on their own."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from hpcstate import Absence, ExitStatus, SchedulerUnavailable, Source, State
from hpcstate.backend import AccountingQuery, Command, CommandResult, JobSpec
from hpcstate.testing import (
    Conditions,
    FakeRunner,
    GoldenError,
    JobPlan,
    Outage,
    SimulatedCluster,
    UnexpectedCommand,
    VirtualClock,
    argv_matches,
    judge_first_verdict,
    load_case,
)
from hpcstate.testing.simulator import Truth, exit_compatible

SLURM = Path(__file__).resolve().parents[2] / "tests" / "golden" / "slurm" / "22.05.8"


def _ok(out: str = "") -> CommandResult:
    return CommandResult(argv=["x"], returncode=0, stdout=out)


# -- FakeRunner ------------------------------------------------------------------------


async def test_patterns_sequences_and_recorded_calls() -> None:
    runner = FakeRunner(
        {
            "qdel 1": _ok("exact"),
            ("qstat", "-f", "**"): [_ok("first"), _ok("second")],
            ("qsub", "-N", "job*", "--", "**"): _ok("12.pbs"),
        }
    )
    assert (await runner.run(Command(argv=["qdel", "1"]))).stdout == "exact"
    answers = [(await runner.run(Command(argv=["qstat", "-f", str(n)]))).stdout for n in range(3)]
    assert answers == ["first", "second", "second"]  # the last answer repeats
    result = await runner.run(Command(argv=["qsub", "-N", "job7", "--", "true"]))
    assert result.stdout == "12.pbs"
    assert result.argv == ("qsub", "-N", "job7", "--", "true")  # the real argv, not the key
    assert runner.argvs[0] == ("qdel", "1")
    assert runner.count("qstat") == 3


async def test_unknown_command_fails_loudly_with_its_argv() -> None:
    runner = FakeRunner({"squeue -h": _ok()})
    with pytest.raises(UnexpectedCommand, match=r"scancel 'a b'"):
        await runner.run(Command(argv=["scancel", "a b"]))
    assert runner.calls[0].argv == ("scancel", "a b")


def test_argv_matching() -> None:
    assert argv_matches(("a", "**", "z"), ("a", "z"))
    assert argv_matches(("a", "**", "z"), ("a", "b", "c", "z"))
    assert not argv_matches(("a", "*"), ("a",))
    assert not argv_matches(("a",), ("a", "b"))


async def test_replays_recorded_slurm_output_in_order() -> None:
    runner = FakeRunner.from_golden(SLURM / "cancel_running")
    case = load_case(SLURM / "cancel_running")
    squeue = case.command("squeue_o").argv
    assert case.command("squeue_o_running").argv == squeue  # recorded twice: running, then done
    first = await runner.run(Command(argv=squeue))
    later = await runner.run(Command(argv=squeue))
    assert "|RUNNING|" in first.stdout
    assert first.stdout == case.result("squeue_o_running").stdout
    assert later.stdout == case.result("squeue_o").stdout
    assert "|CANCELLED|" in later.stdout


# -- golden ----------------------------------------------------------------------------


def test_loads_the_recorded_layout() -> None:
    case = load_case(SLURM / "exit_3")
    sbatch = case.command("sbatch")
    assert sbatch.argv[0] == "sbatch"
    assert case.result("sbatch").returncode == 0
    with pytest.raises(GoldenError, match="no command with stem 'nope'"):
        case.command("nope")


def test_notes_after_a_command_line_are_ignored() -> None:
    case = load_case(SLURM / "exit_3")
    assert case.command("squeue_json").argv == ("squeue", "--json")


def test_bad_expectations_name_the_file(tmp_path: Path) -> None:
    case = tmp_path / "c"
    shutil.copytree(SLURM / "exit_3", case)
    (case / "expected.json").write_text('{"checks": [{"stem": "sbatch", "parse": "guess"}]}')
    with pytest.raises(GoldenError, match=r"expected\.json.*'parse' must be one of"):
        load_case(case)
    (case / "expected.json").write_text(
        '{"checks": [{"stem": "squeue_o", "parse": "queue", "native_ids": ["3"],'
        ' "expect": {"3": {"stat": "failed"}}}]}'
    )
    with pytest.raises(GoldenError, match="unknown keys"):
        load_case(case)


def test_missing_rc_is_an_error(tmp_path: Path) -> None:
    case = tmp_path / "c"
    case.mkdir()
    (case / "commands.tsv").write_text("file\ttime\tcommand\nx\t00:00:00\ttrue\n")
    with pytest.raises(GoldenError, match=r"x\.rc: missing"):
        load_case(case).result("x")


# -- the simulator ---------------------------------------------------------------------


def _plan(**changes: object) -> JobPlan:
    values: dict[str, object] = {
        "queued_s": (10.0,),
        "running_s": (100.0,),
        "outcome": State.FAILED,
        "exit": ExitStatus.exited(137),
        "queue_linger_s": 0.0,
        "final_lag_s": 200.0,
    }
    values.update(changes)
    return JobPlan(**values)  # type: ignore[arg-type]


def test_a_job_vanishes_before_accounting_has_its_record() -> None:
    clock = VirtualClock()
    cluster = SimulatedCluster(clock=clock, plan_for=lambda *_: _plan())
    native_id = cluster.submit(JobSpec(command=["x"])).native_id
    assert cluster.queue_view(native_id).state is State.QUEUED
    clock.advance(50)
    assert cluster.queue_view(native_id).state is State.RUNNING
    clock.advance(100)  # ended at 110
    assert cluster.queue_view(native_id).absence is Absence.ABSENT
    lagging = cluster.accounting_view(native_id, None)
    assert (lagging.state, lagging.final) == (State.RUNNING, False)
    clock.advance(200)
    record = cluster.accounting_view(native_id, None)
    assert (record.state, record.final, record.source) == (State.FAILED, True, Source.ACCOUNTING)
    assert record.stats.exit == ExitStatus.exited(137)
    assert cluster.truth(native_id).state is State.FAILED


def test_lossy_accounting_takes_128_off_and_says_so() -> None:
    clock = VirtualClock()
    cluster = SimulatedCluster(
        clock=clock,
        conditions=Conditions(lossy_exit_codes=True),
        plan_for=lambda *_: _plan(final_lag_s=0.0),
    )
    native_id = cluster.submit(JobSpec(command=["x"])).native_id
    clock.advance(1000)
    exit_ = cluster.accounting_view(native_id, None).stats.exit
    assert exit_ is not None
    assert (exit_.code, exit_.exact) == (9, False)
    assert exit_compatible(ExitStatus.exited(137), exit_)
    assert not exit_compatible(ExitStatus.killed(9), ExitStatus.exited(137))


def test_requeue_keeps_the_id_and_counts_runs() -> None:
    clock = VirtualClock()
    plan = _plan(queued_s=(0.0, 5.0), running_s=(10.0, 10.0), outcome=State.COMPLETED)
    cluster = SimulatedCluster(clock=clock, plan_for=lambda *_: plan)
    native_id = cluster.submit(JobSpec(command=["x"])).native_id
    clock.advance(12)
    obs = cluster.queue_view(native_id)
    assert (obs.state, obs.restarts) == (State.QUEUED, 1)
    assert cluster.truth(native_id).restarts == 1


def test_recycled_id_is_only_found_by_an_unbounded_query() -> None:
    clock = VirtualClock()
    cluster = SimulatedCluster(
        clock=clock, seed=1, conditions=Conditions(recycled_ids=1.0, record_lag_s=(100, 100))
    )
    submission = cluster.submit(JobSpec(command=["x"]))
    unbounded = cluster.accounting_view(submission.native_id, None)
    bounded = cluster.accounting_view(submission.native_id, submission.submitted_at)
    assert unbounded.final  # an older job's record
    assert bounded.absence is Absence.NO_RECORD


def test_outages_and_transient_errors_never_answer() -> None:
    clock = VirtualClock()
    cluster = SimulatedCluster(
        clock=clock, conditions=Conditions(accounting_outages=(Outage(start_s=0, end_s=60),))
    )
    backend = cluster.backend()
    native_id = cluster.submit(JobSpec(command=["x"])).native_id
    with pytest.raises(SchedulerUnavailable):
        asyncio.run(backend.accounting(AccountingQuery(native_ids=[native_id])))
    clock.advance(61)
    (obs,) = asyncio.run(backend.accounting(AccountingQuery(native_ids=[native_id])))
    assert obs.native_id == native_id
    assert cluster.calls["accounting"] == 2


def test_cancel_while_queued_has_no_exit_status() -> None:
    clock = VirtualClock()
    cluster = SimulatedCluster(clock=clock, plan_for=lambda *_: _plan(outcome=State.COMPLETED))
    native_id = cluster.submit(JobSpec(command=["x"])).native_id
    cluster.cancel(native_id)
    truth = cluster.truth(native_id)
    assert (truth.state, truth.exit) == (State.CANCELLED, None)


@pytest.mark.parametrize(
    ("state", "confirmed", "exit_", "wrong"),
    [
        (State.FAILED, True, ExitStatus.exited(3), False),
        (State.FAILED, True, ExitStatus.killed(3), True),  # code/signal mixed up
        (State.COMPLETED, True, ExitStatus.exited(0), True),
        (State.COMPLETED, False, None, False),  # the grace fallback: allowed, flagged
        (State.GONE, False, None, False),
        (State.TIMEOUT, False, None, True),  # an unconfirmed failure
    ],
)
def test_judging_first_verdicts(
    state: State, confirmed: bool, exit_: ExitStatus | None, wrong: bool
) -> None:
    truth = Truth(
        native_id="1",
        state=State.FAILED,
        exit=ExitStatus.exited(3),
        ended_at=VirtualClock().now(),
        restarts=0,
        submitted_at=VirtualClock().now(),
    )
    why = judge_first_verdict(truth, state, confirmed=confirmed, exit=exit_)
    assert (why is not None) is wrong, why
