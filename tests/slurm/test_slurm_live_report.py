"""Against the real Slurm 22.05 cluster: the generated batch script writes the job's
self-report, the backend reads it back in one command, and Slurm's own record of the
job is what it was without the wrapper (exit codes, and a cancel's SIGTERM)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
from pathlib import Path

import pytest
from slurm_live import Driver, cluster_status

from hpcstate import ExitStatus, State
from hpcstate.backend import BackendConfig, JobSpec
from hpcstate.runtime import OutputSnapshot
from hpcstate.runtime._report import SelfReport
from hpcstate_slurm import BACKEND
from hpcstate_slurm._io import SlurmBackend

SKIP = cluster_status()
pytestmark = [pytest.mark.slurm]
if SKIP is not None:
    pytestmark.append(pytest.mark.skip(reason=SKIP))

RUN_ID = "live-report"


def spec(work: Path, case: str, argv: list[str]) -> JobSpec:
    """A command spec with the environment hpcstate's tracker would set."""
    return JobSpec(
        command=argv,
        working_directory=str(work),
        stdout=str(work / "%j.out"),
        environment={
            "HPCSTATE_RUN_ID": RUN_ID,
            "HPCSTATE_ITEM_ID": case,
            "HPCSTATE_REPORT_FILE": str(work / f"report-{case}.json"),
        },
        options={"self_report_wrapper": "true"},
    )


#: case -> (payload, what the report says, Slurm's verdict, Slurm's exit status).
#: Written from what each payload does.
CASES: dict[str, tuple[list[str], ExitStatus, State, ExitStatus]] = {
    "exit_0": (["true"], ExitStatus.exited(0), State.COMPLETED, ExitStatus.exited(0)),
    "exit_3": (["sh", "-c", "exit 3"], ExitStatus.exited(3), State.FAILED, ExitStatus.exited(3)),
    # scancel sends SIGTERM to every process of the batch step: the wrapper sees it too,
    # so it reports the signal and dies of it; Slurm records 0:15 as without a wrapper.
    "cancelled": (["sleep", "300"], ExitStatus.killed(15), State.CANCELLED, ExitStatus.killed(15)),
    # A payload that kills itself: the report helper (perl) reads its wait status, so the
    # report says SIGSEGV exactly, and it ends the same way: Slurm records signal 11.
    "self_segv": (
        ["sh", "-c", "kill -SEGV $$"],
        ExitStatus.killed(11),
        State.FAILED,
        ExitStatus.killed(11),
    ),
    # A signal sent to the batch shell alone (scancel -b): the helper passes it on to the
    # payload, which handles it ("got-usr1") and goes on to exit 4.
    "batch_only_usr1": (
        [
            "sh",
            "-c",
            'trap "echo got-usr1" USR1; touch ready-usr1; i=0; '
            "while [ $i -lt 10 ]; do sleep 0.5; i=$((i + 1)); done; exit 4",
        ],
        ExitStatus.exited(4),
        State.FAILED,
        ExitStatus.exited(4),
    ),
}


async def _run(
    work: Path,
) -> tuple[Driver, dict[str, str], dict[str, str], int, OutputSnapshot | None]:
    backend = BACKEND.make_backend(BackendConfig(name="slurm", kind="slurm"))
    assert isinstance(backend, SlurmBackend)
    driver = Driver(backend)
    ids: dict[str, str] = {}
    try:
        for case, (argv, *_) in CASES.items():
            submission = await backend.submit(spec(work, case, argv))
            ids[case] = submission.native_id
            driver.track(submission.native_id, name=case)
        cancelled = signalled = False

        def done(d: Driver) -> bool:
            return all(d.done(i) for i in d.items)

        async def loop() -> None:
            nonlocal cancelled, signalled
            while not done(driver):
                await driver.poll()
                if not cancelled and driver.item(ids["cancelled"]).state is State.RUNNING:
                    await backend.cancel([ids["cancelled"]])
                    cancelled = True
                if not signalled and (work / "ready-usr1").exists():
                    subprocess.run(
                        ["scancel", "--signal=USR1", "--batch", ids["batch_only_usr1"]],
                        check=True,
                        timeout=30,
                    )
                    signalled = True
                await asyncio.sleep(0.5)
            assert signalled

        await asyncio.wait_for(loop(), timeout=180)
        before = backend.commands_run
        files = await backend.read_text_files(
            [str(work / f"report-{case}.json") for case in CASES] + [str(work / "missing.json")]
        )
        commands = backend.commands_run - before
        # Output checks read a job's output the same way (%j is the job's id).
        output = await backend.read_output(ids["exit_3"], str(work / "%j.out"), 5)
        usr1 = await backend.read_output(ids["batch_only_usr1"], str(work / "%j.out"), 5)
        assert usr1 is not None
        assert "got-usr1" in usr1.tail  # the helper passed the signal on
        return driver, ids, dict(files), commands, output
    finally:
        await backend.close()


def test_the_batch_script_reports_and_slurm_records_the_same() -> None:
    with tempfile.TemporaryDirectory(prefix="hpcstate-slurm-report-") as tmp:
        work = Path(tmp)
        work.chmod(0o777)
        driver, ids, files, commands, output = asyncio.run(_run(work))
    assert output is not None
    assert (output.size, output.tail) == (0, ())  # `sh -c "exit 3"` prints nothing
    assert commands == 1  # every report file in one command
    assert sorted(files) == sorted(str(work / f"report-{case}.json") for case in CASES)
    for case, (_, reported, state, slurm_exit) in CASES.items():
        report = SelfReport.from_dict(json.loads(files[str(work / f"report-{case}.json")]))
        assert (report.run_id, report.item_id) == (RUN_ID, case)
        assert (report.exit.code, report.exit.signal) == (reported.code, reported.signal), case
        assert (report.exit.ambiguous is None) is (reported.ambiguous is None), case
        item = driver.item(ids[case])
        assert item.state is state, (case, item)
        assert item.confirmed
        assert item.stats.exit is not None
        assert (item.stats.exit.code, item.stats.exit.signal) == (
            slurm_exit.code,
            slurm_exit.signal,
        ), case
