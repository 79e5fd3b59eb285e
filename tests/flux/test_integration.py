"""The recorded cases again, against a real Flux instance (skipped without flux-core).

Run inside an instance:   flux start --test-size=1 python -m pytest tests/flux/test_integration.py
or let the fixture start one (``flux`` on PATH, FLUX_URI unset):
                          python -m pytest tests/flux/test_integration.py

Expected verdicts are the hand-written table of test_flux_golden.py: the same jobs,
run for real, must give the same answers the recorded outputs gave.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from flux_production import spec as production_spec
from test_flux_golden import EXPECTED, _same_exit
from test_flux_production import EXPECTED as PRODUCTION_EXPECTED
from test_flux_production import _check_exit as check_production_exit

from hpcstate import Absence, Observation, State
from hpcstate.backend import JobSpec
from hpcstate.runtime import CommandBackend, LocalRunner
from hpcstate_flux import CAPABILITIES, FluxDialect
from hpcstate_flux._io import FluxBackend

pytestmark = pytest.mark.flux

SKIP_REASON = (
    "flux-core is not on PATH (Debian has no package and building it needs the network); "
    "build flux-core, then run `flux start --test-size=1 python -m pytest "
    "tests/flux/test_integration.py` (see docs/backends/flux.md)"
)
FLUX = shutil.which("flux")


@pytest.fixture(scope="module")
def flux_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The instance to test against: the enclosing one, or a test instance we start."""
    if FLUX is None:
        pytest.skip(SKIP_REASON)
    if os.environ.get("FLUX_URI"):
        yield os.environ["FLUX_URI"]
        return
    uri_file = tmp_path_factory.mktemp("flux") / "uri"
    script = f'echo "$FLUX_URI" > {shlex.quote(str(uri_file))}; exec sleep 100000'
    proc = subprocess.Popen(
        [FLUX, "start", "--test-size=1", "sh", "-c", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not (uri_file.exists() and uri_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"flux start --test-size=1 did not come up: {stderr[-500:]}")
        time.sleep(0.1)
    try:
        yield uri_file.read_text().strip()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the instance we started, and only it
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def backend(flux_uri: str) -> FluxBackend:
    return FluxBackend(dialect=FluxDialect(uri=flux_uri), runner=LocalRunner())


def flux_cli(flux_uri: str, *args: str) -> None:
    assert FLUX is not None
    env = {**os.environ, "FLUX_URI": flux_uri}
    subprocess.run([FLUX, *args], env=env, check=True, capture_output=True, timeout=60)


async def wait_for(
    backend: FluxBackend, native_ids: Sequence[str], done: object, timeout: float = 900
) -> list[Observation]:
    """Poll (one batched call each time) until every job satisfies ``done``."""
    deadline = time.monotonic() + timeout
    while True:
        observations = list(await backend.queue(native_ids))
        if all(done(o) for o in observations):  # type: ignore[operator]
            return observations
        if time.monotonic() > deadline:
            pytest.fail(f"jobs did not get there in {timeout} s: {observations}")
        await asyncio.sleep(0.5)


def final(observation: Observation) -> bool:
    return observation.final or observation.absence is not None


def running(observation: Observation) -> bool:
    return observation.state is State.RUNNING


BASH = ("bash", "-c")
BY_RANK = 'if [ "$FLUX_TASK_RANK" = 0 ]; then exit 3; fi; '
STEPS = "flux run bash -c 'exit 7'\nflux run bash -c 'exit 3'\nflux run bash -c 'exit 2'\n"

# The submitted cases of the recording, as JobSpecs (the time limit is shortened).
SUBMITTED: dict[str, JobSpec] = {
    "exit_0": JobSpec(command=(*BASH, "exit 0")),
    "exit_13": JobSpec(command=(*BASH, "exit 13")),
    "exit_137": JobSpec(command=(*BASH, "exit 137")),
    "exit_200": JobSpec(command=(*BASH, "exit 200")),
    "sigint": JobSpec(command=(*BASH, "kill -INT $$")),
    "sigsegv": JobSpec(command=(*BASH, "kill -SEGV $$")),
    "sigkill": JobSpec(command=(*BASH, "kill -KILL $$")),
    "sigterm": JobSpec(command=(*BASH, "kill -TERM $$")),
    "output_then_exit_5": JobSpec(command=(*BASH, "echo out; echo err >&2; exit 5")),
    "timeout": JobSpec(command=("sleep", "60"), time_limit=timedelta(seconds=2)),
    "multi_task_3_0": JobSpec(command=(*BASH, BY_RANK + "exit 0"), tasks=2),
    "multi_task_sig_and_exit": JobSpec(command=(*BASH, BY_RANK + "kill -TERM $$"), tasks=2),
    "batch_steps_7_3_2": JobSpec(script="#!/bin/bash\n" + STEPS),
    "batch_set_e": JobSpec(script="#!/bin/bash\nset -e\n" + STEPS),
    "name_special_chars": JobSpec(command=(*BASH, "exit 0"), name="a|b'c\"d e"),
    "command_not_found": JobSpec(command=("/nonexistent/cmd",)),
    "unsatisfiable": JobSpec(command=("hostname",), nodes=2),
    "mem_rlimit_as": JobSpec(
        command=("python3", "-c", "x = bytearray(2 * 1024**3)"),
        extra_args=("--rlimit=as=314572800",),
    ),
}


def check(case: str, observation: Observation) -> None:
    expected = EXPECTED[case]
    assert observation.state is expected.state, (case, observation)
    assert _same_exit(observation.stats.exit, expected.exit), (case, observation.stats.exit)
    reason = observation.stats.reason
    assert (reason.kind if reason else None) is expected.reason, (case, reason)
    if expected.reason_detail:
        assert reason is not None
        assert reason.detail == expected.reason_detail


async def test_submitted_cases(backend: FluxBackend) -> None:
    natives = {case: (await backend.submit(spec)).native_id for case, spec in SUBMITTED.items()}
    observations = await wait_for(backend, list(natives.values()), final)
    for case, observation in zip(natives, observations, strict=True):
        check(case, observation)
    await backend.close()


async def test_cases_with_an_action(backend: FluxBackend, flux_uri: str) -> None:
    # `flux start --test-size=1` has 2 cores: at most two one-core jobs run at once, so
    # the running cases go in two rounds (a third would wait in SCHED and never be seen
    # running). Held and begin-time jobs take no core.
    sleep = ("sleep", "300")
    ids = {
        "cancel_running": (await backend.submit(JobSpec(command=sleep))).native_id,
        "cancel_running_with_message": (await backend.submit(JobSpec(command=sleep))).native_id,
    }
    await wait_for(backend, list(ids.values()), running)
    await backend.cancel([ids["cancel_running"]])
    flux_cli(flux_uri, "cancel", "-m", "operator says stop", ids["cancel_running_with_message"])
    await wait_for(backend, list(ids.values()), final)
    ids["raise_exception"] = (await backend.submit(JobSpec(command=sleep))).native_id
    await wait_for(backend, [ids["raise_exception"]], running)
    flux_cli(flux_uri, "job", "raise", "--type=mytype", "-m", "custom note", ids["raise_exception"])
    held = JobSpec(command=sleep, options={"urgency": "hold"})
    later = JobSpec(command=sleep, options={"begin_time": "+1h"})
    ids["cancel_pending_hold"] = (await backend.submit(held)).native_id
    ids["cancel_pending_depend"] = (await backend.submit(later)).native_id
    parent = await backend.submit(JobSpec(command=(*BASH, "sleep 1; exit 1")))
    child = JobSpec(command=("true",), dependencies=(parent.native_id,))
    ids["dependency_afterok_parent_fails"] = (await backend.submit(child)).native_id
    await backend.cancel([ids["cancel_pending_hold"], ids["cancel_pending_depend"]])
    observations = await wait_for(backend, list(ids.values()), final)
    for case, observation in zip(ids, observations, strict=True):
        check(case, observation)
    await backend.cancel([ids["cancel_running"]])  # already done: not an error


# The production recordings' flux batch cases (tests/golden/flux/0.88.0-production), run
# for real: a script killed by a signal must never come back as an exact exit code.
BATCH_CASES = (
    "batch_exit_0",
    "batch_exit_3",
    "batch_exit_137",
    "batch_exit_200",
    "batch_sigterm",
    "batch_sigsegv",
    "batch_timeout",
    "batch_command_not_found",
)


async def test_batch_cases(backend: FluxBackend) -> None:
    natives = {}
    for case in BATCH_CASES:
        recorded = production_spec(case)
        spec = JobSpec(script=recorded.script, time_limit=recorded.time_limit, name=case)
        natives[case] = (await backend.submit(spec)).native_id
    observations = await wait_for(backend, list(natives.values()), final)
    for case, observation in zip(natives, observations, strict=True):
        expected = PRODUCTION_EXPECTED[case]
        assert observation.state is expected.state, (case, observation)
        check_production_exit(observation.stats.exit, expected)
        reason = observation.stats.reason
        assert reason is not None
        assert reason.kind is expected.reason, (case, reason)
    await backend.close()


async def test_batch_killed_by_cancel(backend: FluxBackend) -> None:
    spec = JobSpec(script=production_spec("batch_cancel_running").script)
    native = (await backend.submit(spec)).native_id
    await wait_for(backend, [native], running)
    await backend.cancel([native])
    (observation,) = await wait_for(backend, [native], final)
    expected = PRODUCTION_EXPECTED["batch_cancel_running"]
    assert observation.state is expected.state
    check_production_exit(observation.stats.exit, expected)
    await backend.close()


async def test_purged_job_is_gone(backend: FluxBackend, flux_uri: str) -> None:
    native = (await backend.submit(JobSpec(command=("true",)))).native_id
    (done,) = await wait_for(backend, [native], final)
    assert done.state is State.COMPLETED
    flux_cli(flux_uri, "job", "purge", "--force", native)
    (gone,) = await backend.queue([native])
    assert gone.absence is Absence.UNKNOWN


async def test_a_retried_submit_finds_its_tagged_job(flux_uri: str, tmp_path: Path) -> None:
    dialect = FluxDialect(uri=flux_uri)
    commands = CommandBackend(
        name="flux", dialect=dialect, runner=LocalRunner(), capabilities=CAPABILITIES
    )
    tag = f"hpcstate-test-{os.getpid()}-{tmp_path.name}"
    submission = await commands.submit(JobSpec(command=("true",), tag=tag))
    found = await commands.find_submission(tag)
    assert found is not None
    assert found.native_id == submission.native_id
    assert await commands.find_submission(tag + "-other") is None
