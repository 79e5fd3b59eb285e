"""scripts/record-golden against the real loopback Slurm 22.05 cluster: a couple of quick
cases recorded into a temp dir, then fed through the parsers and replayed through the
real Tracker. A change to the backend's argv that the recordings do not cover fails here
(the replay cannot answer a command nothing recorded), and so does a recording the
parsers cannot read. Runs in about 30 s (the purge wait is bounded)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from slurm_live import ROOT, cluster_status

from hpcstate import TERMINAL, ExitStatus, ReasonKind, RunItem, State
from hpcstate.backend import AccountingQuery
from hpcstate.runtime import Tracker
from hpcstate.testing import ReplayRunner, VirtualClock, files_absent, load_recording
from hpcstate_slurm import CAPABILITIES, SlurmDialect, SlurmVersion
from hpcstate_slurm._io import SlurmBackend

pytestmark = [pytest.mark.slurm]
SCRIPT = ROOT / "scripts" / "record-golden"
CASES = ("exit_3", "sigterm")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = cluster_status()
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("recorded")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--backend", "slurm", "--only", ",".join(CASES),
         "--out", str(out), "--purge-wait", "30"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _dialect(out: Path) -> SlurmDialect:
    text = load_recording(out / "_versions").command("sbatch_version").result.stdout
    return SlurmDialect.for_version(SlurmVersion.parse(text))


@pytest.mark.parametrize("name", CASES)
def test_the_recorded_argv_is_the_dialects_and_every_answer_parses(
    recorded: Path, name: str
) -> None:
    dialect = _dialect(recorded)
    case = load_recording(recorded / name)
    job = (case.path / "jobid.txt").read_text().strip()
    stems = case.stems()
    assert stems[0] == "sbatch"
    assert {"squeue_O", "sacct_P_ended", "sacct_P"} <= set(stems)
    built = dialect.submit_command(case.submitted_spec())
    assert (tuple(built.argv), built.stdin) == (
        case.command("sbatch").argv,
        case.command("sbatch").stdin,
    )
    for recorded_command in case.commands:
        if recorded_command.argv[0] == "squeue":
            command = dialect.queue_command([job])
            assert tuple(command.argv) == recorded_command.argv
            assert dict(command.env) == dict(recorded_command.env)
            assert tuple(command.unset_env) == recorded_command.unset_env
            dialect.parse_queue(
                recorded_command.result, native_ids=[job], observed_at=recorded_command.at
            )
        elif recorded_command.argv[0] == "sacct":
            query = AccountingQuery(native_ids=[job])
            (obs,) = dialect.parse_accounting(
                recorded_command.result, query=query, observed_at=recorded_command.at
            )
            assert obs.state is State.FAILED
    (terminal,) = dialect.parse_queue(
        case.command("squeue_O").result, native_ids=[job], observed_at=case.started_at
    )
    assert terminal.state is State.FAILED
    assert terminal.stats.exit in (ExitStatus.exited(3), ExitStatus.killed(15))


async def _replay(out: Path, name: str, store: Path) -> tuple[ReplayRunner, RunItem, bool]:
    case = load_recording(out / name)
    clock = VirtualClock(case.started_at)
    runner = ReplayRunner(
        load_recording(out / "_versions"), case, clock=clock, fallback=files_absent
    )
    backend = SlurmBackend(name="slurm", runner=runner, capabilities=CAPABILITIES, clock=clock)
    tracker = Tracker(store=store, backends={"slurm": backend}, clock=clock, accounting_lag=0.0)
    run = await tracker.submit(case.tracker_spec(), backend="slurm", run_id=case.run_id)
    reachable = True
    for _ in range(400):
        await tracker.poll_once()
        reachable = reachable and tracker.backend_status("slurm").reachable
        run = tracker.get_run(run.id)
        if all(i.state in TERMINAL and i.confirmed for i in run.items):
            break
        clock.advance(max(tracker.next_interval(), 0.1))
    (item,) = run.items
    await tracker.aclose()
    return runner, item, reachable


@pytest.mark.parametrize(
    ("name", "expected", "reason"),
    [
        ("exit_3", ExitStatus.exited(3), ReasonKind.NON_ZERO_EXIT_CODE),
        ("sigterm", ExitStatus.killed(15), ReasonKind.RAISED_SIGNAL),
    ],
)
async def test_the_recording_replays_through_the_real_tracker(
    recorded: Path, tmp_path: Path, name: str, expected: ExitStatus, reason: ReasonKind
) -> None:
    runner, item, reachable = await _replay(recorded, name, tmp_path / "store.db")
    assert runner.unexpected == []
    assert reachable
    assert item.state is State.FAILED
    assert item.confirmed
    assert item.stats.exit == expected
    assert item.stats.reason is not None
    assert item.stats.reason.kind is reason


def test_the_recorded_tag_lookup_finds_the_case_and_only_it(recorded: Path) -> None:
    dialect = _dialect(recorded)
    lookup = load_recording(recorded / "_find_submission")
    first = load_recording(recorded / CASES[0])
    tag = str(first.info["tag"])
    job = (first.path / "jobid.txt").read_text().strip()
    assert dialect.find_submission_command(tag) is not None
    stems = lookup.stems()
    found = dialect.parse_find_submission(lookup.command("squeue_find").result, tag)
    if found is None:  # the job had left the queue: accounting's submit line has the tag
        assert "sacct_find" in stems
        sacct = lookup.command("sacct_find")
        assert sacct.argv == tuple(dialect.find_submission_accounting_command(tag).argv)
        found = dialect.parse_find_submission_accounting(sacct.result, tag)
    assert found is not None
    assert found.native_id == job
    missing = tag[:-2] + ".9"
    assert (
        dialect.parse_find_submission(lookup.command("squeue_find_missing_tag").result, missing)
        is None
    )
    assert (
        dialect.parse_find_submission_accounting(
            lookup.command("sacct_find_missing_tag").result, missing
        )
        is None
    )
