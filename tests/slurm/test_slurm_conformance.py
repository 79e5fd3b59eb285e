"""The shipped backend conformance suite, run against the real loopback Slurm cluster
(scripts/slurm-cluster start): the Slurm backend as the registry builds it, real jobs,
and the real wall clock between polls.

Every scenario's spec carries the environment hpcstate's tracker sets at submit, so the
generated batch script is the self-reporting wrapper (as in production). Expected verdicts
are written from what each job does, and from what src/hpcstate_slurm/_script.py
documents about the wrapper.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from slurm_live import cluster_status

from hpcstate import ExitStatus, State, registry
from hpcstate.backend import Backend, BackendConfig, JobSpec
from hpcstate.runtime import SystemClock
from hpcstate.testing.conformance import BackendConformance
from hpcstate.testing.golden import Scenario

SKIP = cluster_status()
pytestmark = [pytest.mark.slurm]
if SKIP is not None:
    pytestmark.append(pytest.mark.skip(reason=SKIP))

RUN_ID = "conformance"
#: 2 s polls: an exit above 128 is exact only from the controller's record, which
#: Slurm 22.05 keeps for MinJobAge=10 s after the job ends.
POLL_INTERVAL_S = 2.0
#: Room for queueing behind a CI run on the same one-node cluster (~3 min at 2 s).
MAX_POLLS = 90


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    """A directory the jobs (run by slurmd, maybe as another user) can write to."""
    with tempfile.TemporaryDirectory(prefix="hpcstate-slurm-conformance-") as tmp:
        path = Path(tmp)
        path.chmod(0o777)
        yield path


def _spec(
    work: Path,
    case: str,
    *,
    argv: list[str] | None = None,
    script: str | None = None,
    array: str | None = None,
    self_report: bool = True,
) -> JobSpec:
    """A job spec; with ``self_report`` it carries the environment the tracker sets,
    which turns the generated script into the self-reporting wrapper."""
    environment = (
        {
            "HPCSTATE_RUN_ID": RUN_ID,
            "HPCSTATE_ITEM_ID": case,
            "HPCSTATE_REPORT_FILE": str(work / f"report-{case}-{{array_index}}.json"),
        }
        if self_report
        else {}
    )
    return JobSpec(
        command=argv or (),
        script=script,
        array=array,
        working_directory=str(work),
        stdout=str(work / "%j.out"),
        time_limit=timedelta(minutes=2),
        name=f"conformance-{case}",
        environment=environment,
        options={"self_report_wrapper": "true" if self_report else "false"},
    )


def _scenario(
    work: Path,
    case: str,
    argv: list[str],
    state: State,
    exit_: ExitStatus | None,
    *,
    cancel: bool = False,
    self_report: bool = True,
) -> Scenario:
    return Scenario(
        name=case,
        spec=_spec(work, case, argv=argv, self_report=self_report),
        state=state,
        exit=exit_,
        cancel=cancel,
        max_polls=MAX_POLLS,
    )


class TestSlurmBackendConformance(BackendConformance):
    @pytest.fixture
    async def backend(self) -> AsyncIterator[Backend]:
        info = registry.load("slurm")
        made = info.make_backend(BackendConfig(name="slurm", kind="slurm"))
        yield made
        await made.close()  # the suite closes it in one test only

    @pytest.fixture
    def scenarios(self, work: Path) -> list[Scenario]:
        failed = State.FAILED
        return [
            _scenario(work, "exit_0", ["true"], State.COMPLETED, ExitStatus.exited(0)),
            _scenario(work, "exit_3", ["sh", "-c", "exit 3"], failed, ExitStatus.exited(3)),
            # A plain exit 137 (no signal anywhere): the controller says exit 137, exactly.
            _scenario(work, "exit_137", ["sh", "-c", "exit 137"], failed, ExitStatus.exited(137)),
            # The payload kills itself with SIGSEGV. The report helper (perl, _script.py)
            # reads its wait status, writes the report and ends the same way, killed by
            # SIGSEGV: Slurm records signal 11, as with exec.
            _scenario(
                work,
                "self_segv",
                ["sh", "-c", "kill -SEGV $$"],
                failed,
                ExitStatus.killed(11),
            ),
            # Without the wrapper the payload's shell is the batch shell (exec): it dies
            # of SIGSEGV itself and Slurm records signal 11, a lossless signal.
            _scenario(
                work,
                "segv_no_wrapper",
                ["sh", "-c", "kill -SEGV $$"],
                failed,
                ExitStatus.killed(11),
                self_report=False,
            ),
            # Three steps exit 7, 3, 2; the batch script ends with the last one's 2.
            # The derived exit is the worst step's: 7.
            Scenario(
                name="steps_7_3_2",
                spec=_spec(
                    work,
                    "steps_7_3_2",
                    script="#!/bin/sh\nsrun sh -c 'exit 7'\nsrun sh -c 'exit 3'\n"
                    "srun sh -c 'exit 2'\n",
                ),
                state=failed,
                exit=ExitStatus.exited(2),
                derived_exit=ExitStatus.exited(7),
                max_polls=MAX_POLLS,
            ),
            # Three array tasks that each succeed: every task tracked, each COMPLETED.
            Scenario(
                name="array_1_3",
                spec=_spec(work, "array_1_3", argv=["true"], array="1-3"),
                state=State.COMPLETED,
                exit=ExitStatus.exited(0),
                max_polls=MAX_POLLS,
            ),
            # Cancelled right after submit: pending or just started, either way CANCELLED;
            # the exit depends on whether it started (none, or SIGTERM), so it is not set.
            _scenario(work, "cancel", ["sleep", "300"], State.CANCELLED, None, cancel=True),
        ]

    @pytest.fixture
    def clock(self) -> SystemClock:
        return SystemClock()

    @pytest.fixture
    def poll_interval(self) -> float:
        return POLL_INTERVAL_S
