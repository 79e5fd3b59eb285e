"""Against the real Slurm 22.05 cluster, through hpcstate's real Tracker: a user's own
batch script (``JobSpec.script``, as ``hpcstate submit --script``) is submitted by the
tracker, runs under the report helper by default, and its end arrives as the job's own
report (push); its ``#SBATCH`` lines still apply.

Expected outcomes are written by hand from what each script does.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
from pathlib import Path

import pytest
from slurm_live import cluster_status

from hpcstate import ExitStatus, MarkerCode, State
from hpcstate.backend import BackendConfig, JobSpec
from hpcstate.runtime import Tracker
from hpcstate.runtime._report import SelfReport
from hpcstate_slurm._helper import HELPER_DETAIL

SKIP = cluster_status()
pytestmark = [pytest.mark.slurm]
if SKIP is not None:
    pytestmark.append(pytest.mark.skip(reason=SKIP))

EXIT_3 = """#!/bin/bash
#SBATCH --job-name=hpcstate-push-exit3
#SBATCH --output={work}/exit3-%j.log

echo "script ran"
exit 3
"""
SEGV = """#!/bin/sh
#SBATCH --job-name=hpcstate-push-segv
#SBATCH --output={work}/segv-%j.log
kill -SEGV $$
"""
#: case -> (script, the job's exact end, the verdict, its #SBATCH --job-name)
CASES = {
    "exit3": (EXIT_3, ExitStatus.exited(3), State.FAILED, "hpcstate-push-exit3"),
    "segv": (SEGV, ExitStatus.killed(11), State.FAILED, "hpcstate-push-segv"),
}


def job_name(native_id: str) -> str:
    """The job's name as slurmctld has it (the job is still there right after its end;
    accounting may not have its record yet, and may hold an older job of the same id)."""
    done = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", native_id, "-o", "%j"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


async def _run(work: Path) -> dict[str, tuple[object, ...]]:
    found: dict[str, tuple[object, ...]] = {}
    config = BackendConfig(name="slurm", kind="slurm")
    async with Tracker(store=work / "state.db", backends={"slurm": config}) as tracker:
        runs = {}
        for case, (script, *_rest) in CASES.items():
            folder = work / case
            folder.mkdir()
            folder.chmod(0o777)
            spec = JobSpec(script=script.format(work=folder), working_directory=str(folder))
            runs[case] = (await tracker.submit(spec, backend="slurm")).id
        for case, run_id in runs.items():
            run = await tracker.wait(run_id, timeout=600)
            (item,) = run.items
            reports = sorted((work / case).glob("hpcstate-report-*.json"))
            found[case] = (item, reports, job_name(str(item.native_id)))
    return found


@pytest.fixture(scope="module")
def outcome() -> dict[str, tuple[object, ...]]:
    with tempfile.TemporaryDirectory(prefix="hpcstate-slurm-push-") as tmp:
        work = Path(tmp)
        work.chmod(0o777)
        found = asyncio.run(_run(work))
        # read the files while the folder exists
        return {
            case: (item, [json.loads(p.read_text()) for p in reports], name)  # type: ignore[attr-defined]
            for case, (item, reports, name) in found.items()
        }


@pytest.mark.parametrize("case", list(CASES))
def test_a_users_script_reports_its_own_end(
    outcome: dict[str, tuple[object, ...]], case: str
) -> None:
    _script, exit_, state, name = CASES[case]
    item, reports, found_name = outcome[case]
    assert item.state is state  # type: ignore[attr-defined]
    assert item.stats.exit == exit_  # type: ignore[attr-defined]
    # the verdict came with the job's own report (push), not only from polling
    assert item.has_marker(MarkerCode.SELF_REPORTED.value)  # type: ignore[attr-defined]
    (report,) = reports  # type: ignore[misc]
    parsed = SelfReport.from_dict(report)
    assert (parsed.exit.code, parsed.exit.signal) == (exit_.code, exit_.signal)
    assert parsed.detail == HELPER_DETAIL
    assert found_name == name  # its #SBATCH --job-name applied
