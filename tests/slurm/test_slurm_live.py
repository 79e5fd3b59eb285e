"""Against the real single-node Slurm 22.05 cluster (scripts/slurm-cluster start).

All batch cases are submitted at once and driven together by one polling loop (the
time-limit job sets the pace, ~70 s); the slurmdbd outage and SSH cases follow.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from attrs import frozen
from slurm_live import SSHD, Driver, cluster, cluster_status

from hpcstate import (
    Corrected,
    ExitStatus,
    Finished,
    MarkerCode,
    ReasonKind,
    Source,
    State,
)
from hpcstate.backend import BackendConfig, JobSpec
from hpcstate_slurm import BACKEND, SlurmVersion, SubmitRejected
from hpcstate_slurm._io import SlurmBackend

pytestmark = pytest.mark.slurm

SKIP = cluster_status()
if SKIP is not None:
    pytestmark = [pytest.mark.slurm, pytest.mark.skip(reason=SKIP)]


def local_backend() -> SlurmBackend:
    backend = BACKEND.make_backend(BackendConfig(name="slurm", kind="slurm"))
    assert isinstance(backend, SlurmBackend)
    return backend


@frozen(kw_only=True)
class Expect:
    state: State
    exit: ExitStatus | None
    derived: ExitStatus | None = None
    source: Source | None = None  # where the exit status came from
    ambiguous: bool = False
    step_failed: bool = False
    reason: ReasonKind | None = None


def code(value: int) -> ExitStatus:
    return ExitStatus.exited(value)


#: case -> (what the job does, what it must end as). Written from the job definitions.
def specs(work: Path) -> dict[str, tuple[JobSpec, Expect]]:
    def spec(**kwargs: object) -> JobSpec:
        defaults: dict[str, object] = {
            "working_directory": str(work),
            "stdout": str(work / "%j.out"),
        }
        defaults.update(kwargs)
        return JobSpec(**defaults)  # type: ignore[arg-type]

    controller = Source.CONTROLLER
    return {
        "timeout": (
            spec(command=["sleep", "300"], time_limit=timedelta(minutes=1), name="t"),
            Expect(state=State.TIMEOUT, exit=ExitStatus.killed(15), reason=ReasonKind.TIME_LIMIT),
        ),
        "exit_0": (spec(command=["true"]), Expect(state=State.COMPLETED, exit=code(0))),
        "exit_1": (
            spec(command=["sh", "-c", "exit 1"]),
            Expect(state=State.FAILED, exit=code(1), source=controller),
        ),
        "exit_137": (
            spec(command=["sh", "-c", "exit 137"]),
            Expect(state=State.FAILED, exit=code(137), source=controller),
        ),
        "exit_200": (
            spec(command=["sh", "-c", "exit 200"], tag="exit200-tag"),
            Expect(state=State.FAILED, exit=code(200), source=controller),
        ),
        "sigsegv": (
            spec(command=["sh", "-c", "kill -SEGV $$"]),
            Expect(state=State.FAILED, exit=ExitStatus.killed(11), source=controller),
        ),
        "steps_7_3_2": (
            spec(
                script="#!/bin/sh\nsrun sh -c 'exit 7'\nsrun sh -c 'exit 3'\nsrun sh -c 'exit 2'\n"
            ),
            Expect(state=State.FAILED, exit=code(2), derived=code(7), source=controller),
        ),
        "steps_fail_end_0": (
            spec(script="#!/bin/sh\nsrun sh -c 'exit 5'\ntrue\n"),
            Expect(state=State.COMPLETED, exit=code(0), derived=code(5), step_failed=True),
        ),
        "name_pipe_quotes": (
            spec(command=["sh", "-c", "exit 4"], name="we|ird'na\"me"),
            Expect(state=State.FAILED, exit=code(4), source=controller),
        ),
        "cancel_pending": (
            spec(command=["true"], options={"hold": "true"}),
            Expect(state=State.CANCELLED, exit=None, reason=ReasonKind.CANCELLED),
        ),
        "cancel_running": (
            spec(command=["sleep", "300"]),
            Expect(state=State.CANCELLED, exit=ExitStatus.killed(15), reason=ReasonKind.CANCELLED),
        ),
    }


ARRAY = {  # --array=1-4, exit (task % 2)
    "_1": Expect(state=State.FAILED, exit=code(1)),
    "_2": Expect(state=State.COMPLETED, exit=code(0)),
    "_3": Expect(state=State.FAILED, exit=code(1)),
    "_4": Expect(state=State.COMPLETED, exit=code(0)),
}


def plain_sbatch(work: Path, *args: str) -> str:
    done = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={work}", f"--output={work}/%j.out", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip().split(";")[0]


@frozen
class BatchResult:
    driver: Driver
    ids: dict[str, str]  # case -> native id
    version: SlurmVersion | None
    commands: int  # scheduler commands the backend ran, all of them
    other_commands: int  # submits, cancels and the tag lookup


async def _run_batch(work: Path) -> BatchResult:
    backend = local_backend()
    driver = Driver(backend)
    ids: dict[str, str] = {}
    # Known only to accounting by the time it is adopted (MinJobAge=10 s): submit first.
    early = plain_sbatch(work, "--wrap", "exit 9")
    try:
        cases = specs(work)
        for case, (spec, _) in cases.items():
            submission = await backend.submit(spec)
            ids[case] = submission.native_id
            driver.track(submission.native_id, name=case)
        array = await backend.submit(
            JobSpec(
                script="#!/bin/sh\nexit $((SLURM_ARRAY_TASK_ID % 2))\n",
                array="1-4",
                working_directory=str(work),
                stdout=str(work / "%A_%a.out"),
            )
        )
        assert array.array_task_ids == tuple(f"{array.native_id}_{i}" for i in range(1, 5))
        for task in array.array_task_ids:
            driver.track(task)
        ids["array"] = array.native_id
        adopted = plain_sbatch(work, "--wrap", "exit 6")
        driver.track(adopted, name="adopted")
        ids["adopted"] = adopted
        # A retry after a lost answer finds the job its tag created.
        found = await backend.find_submission("exit200-tag")
        assert found is not None
        assert found.native_id == ids["exit_200"]

        cancelled: set[str] = set()

        def ready(d: Driver) -> bool:
            for case, state in (
                ("cancel_pending", State.QUEUED),
                ("cancel_running", State.RUNNING),
            ):
                if case not in cancelled and d.item(ids[case]).state is state:
                    cancelled.add(case)
                    pending_cancels.append(ids[case])
            return all(d.done(i) for i in d.items)

        pending_cancels: list[str] = []

        async def loop() -> None:
            while True:
                if pending_cancels:
                    await backend.cancel(list(pending_cancels))
                    pending_cancels.clear()
                if ready(driver):
                    return
                await driver.poll()
                await asyncio.sleep(1.0)

        await asyncio.wait_for(loop(), timeout=300)
        other = len(cases) + 1 + 1 + 1  # submits, the array, the tag lookup, one cancel call
        other += 1 if len(cancelled) == 2 else 0
        # The early job left the controller long ago: only accounting knows it now.
        assert next(o.absence for o in await backend.queue([early])) is not None
        driver.track(early, name="accounting_only")
        ids["accounting_only"] = early
        await driver.run_until(timeout=60)
        other += 1  # the adoption probe of the early job
        return BatchResult(
            driver=driver,
            ids=ids,
            version=backend.version,
            commands=backend.commands_run,
            other_commands=other,
        )
    finally:
        await backend.close()


@pytest.fixture(scope="module")
def batch() -> Iterator[BatchResult]:
    with tempfile.TemporaryDirectory(prefix="hpcstate-slurm-") as tmp:
        work = Path(tmp)
        work.chmod(0o777)
        yield asyncio.run(_run_batch(work))


def check(driver: Driver, native_id: str, expect: Expect) -> None:
    item = driver.item(native_id)
    assert item.state is expect.state, item
    assert item.confirmed, item.markers
    assert native_id in driver.final_seen
    exit_ = item.stats.exit
    if expect.exit is None:
        assert exit_ is None
    else:
        assert exit_ is not None
        assert (exit_.code, exit_.signal) == (expect.exit.code, expect.exit.signal), exit_
        assert exit_.exact is not expect.ambiguous
    if expect.source is not None:
        assert item.stats.exit_source is expect.source
    if expect.derived is not None:
        assert item.stats.derived_exit == expect.derived
    assert item.has_marker(MarkerCode.STEP_FAILED.value) is expect.step_failed
    if expect.reason is not None:
        assert item.stats.reason is not None
        assert item.stats.reason.kind is expect.reason
    # Never a success verdict before accounting confirmed it.
    for event in driver.events:
        if isinstance(event, Finished) and event.native_id == native_id and event.confirmed:
            assert event.state is not State.COMPLETED or event.source is Source.ACCOUNTING


def test_version_is_detected_once(batch: BatchResult) -> None:
    assert batch.version is not None
    assert batch.version.major == 22


@pytest.mark.parametrize(
    "case",
    [
        "timeout",
        "exit_0",
        "exit_1",
        "exit_137",
        "exit_200",
        "sigsegv",
        "steps_7_3_2",
        "steps_fail_end_0",
        "name_pipe_quotes",
        "cancel_pending",
        "cancel_running",
    ],
)
def test_submitted_job_reaches_its_verdict(batch: BatchResult, case: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        expect = specs(Path(tmp))[case][1]
    check(batch.driver, batch.ids[case], expect)


def test_cancels_name_the_user(batch: BatchResult) -> None:
    for case in ("cancel_pending", "cancel_running"):
        reason = batch.driver.item(batch.ids[case]).stats.reason
        assert reason is not None
        assert reason.uid == 0  # the tests run as root


def test_array_tasks(batch: BatchResult) -> None:
    for suffix, expect in ARRAY.items():
        check(batch.driver, batch.ids["array"] + suffix, expect)


def test_adopted_job(batch: BatchResult) -> None:
    check(
        batch.driver,
        batch.ids["adopted"],
        Expect(state=State.FAILED, exit=code(6), source=Source.CONTROLLER),
    )


def test_job_known_only_to_accounting(batch: BatchResult) -> None:
    """exit 9 finished long before it was adopted: sacct prints 9:0 on 22.05, which may be
    9 or 137. The verdict is confirmed; the exit code is flagged, never presented as fact."""
    item = batch.driver.item(batch.ids["accounting_only"])
    assert item.state is State.FAILED
    assert item.confirmed
    assert item.stats.exit is not None
    assert item.stats.exit.code == 9
    assert not item.stats.exit.exact
    assert item.has_marker(MarkerCode.EXIT_AMBIGUOUS.value)


def test_one_queue_and_at_most_one_accounting_call_per_poll(batch: BatchResult) -> None:
    """Whatever the number of jobs (17 here), a poll costs at most two commands."""
    polling = batch.commands - batch.other_commands
    assert len(batch.driver.items) >= 17
    assert 0 < polling <= 2 * batch.driver.polls


async def test_rejected_submission_is_a_clear_error(tmp_path: Path) -> None:
    backend = local_backend()
    try:
        with pytest.raises(SubmitRejected) as caught:
            await backend.submit(JobSpec(command=["true"], partition="nosuchpartition"))
        assert "partition" in caught.value.message.lower()
    finally:
        await backend.close()


async def test_slurmdbd_outage(tmp_path: Path) -> None:
    """slurmdbd stops while jobs finish. The failure is a verdict at once (controller);
    the success settles, and is confirmed once slurmdbd is back. With a short grace and
    slurmdbd still down, the success becomes COMPLETED unconfirmed, then is corrected."""
    tmp_path.chmod(0o777)
    backend = local_backend()
    driver = Driver(backend, grace=timedelta(seconds=8))
    cluster("stop-dbd")
    try:
        ok = await backend.submit(
            JobSpec(command=["true"], working_directory=str(tmp_path), stdout=str(tmp_path / "o"))
        )
        bad = await backend.submit(
            JobSpec(
                command=["sh", "-c", "exit 3"],
                working_directory=str(tmp_path),
                stdout=str(tmp_path / "o"),
            )
        )
        driver.track(ok.native_id)
        driver.track(bad.native_id)
        await driver.run_until(
            lambda d: (
                d.item(ok.native_id).state is State.COMPLETED
                and d.item(bad.native_id).state is State.FAILED
            ),
            timeout=120,
        )
        assert driver.unavailable > 0  # sacct failed; that was never an observation
        success = driver.item(ok.native_id)
        assert not success.confirmed
        assert success.has_marker(MarkerCode.UNCONFIRMED.value)
        failure = driver.item(bad.native_id)
        assert failure.stats.exit == ExitStatus.exited(3)
        assert failure.stats.exit_source is Source.CONTROLLER
    finally:
        cluster("start-dbd")
    try:
        await driver.run_until(lambda d: d.item(ok.native_id).confirmed, timeout=120)
        assert any(isinstance(e, Corrected) for e in driver.events)
        await driver.run_until(timeout=120)
        assert driver.item(bad.native_id).stats.exit == ExitStatus.exited(3)
    finally:
        await backend.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.sshd
async def test_over_ssh(tmp_path: Path) -> None:
    if not SSHD.exists():
        pytest.skip("scripts/sshd-loopback is missing")
    keys = tmp_path / "sshd"
    port = _free_port()
    started = subprocess.run(
        [str(SSHD), "start", str(port), str(keys)], capture_output=True, text=True, timeout=120
    )
    if started.returncode != 0:
        pytest.skip(f"sshd-loopback could not start: {started.stderr.strip()[-200:]}")
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)
    try:
        backend = BACKEND.make_backend(
            BackendConfig(
                name="slurm-ssh",
                kind="slurm",
                host=f"root@127.0.0.1:{port}",
                options={
                    "known_hosts": str(keys / "known_hosts"),
                    "client_keys": [str(keys / "id_ed25519")],
                },
            )
        )
        driver = Driver(backend)
        try:
            zero = await backend.submit(
                JobSpec(command=["true"], working_directory=str(work), stdout=str(work / "o"))
            )
            high = await backend.submit(
                JobSpec(
                    command=["sh", "-c", "exit 137"],
                    working_directory=str(work),
                    stdout=str(work / "o"),
                )
            )
            driver.track(zero.native_id)
            driver.track(high.native_id)
            await driver.run_until(timeout=120)
        finally:
            await backend.close()
        check(driver, zero.native_id, Expect(state=State.COMPLETED, exit=code(0)))
        check(
            driver,
            high.native_id,
            Expect(state=State.FAILED, exit=code(137), source=Source.CONTROLLER),
        )
    finally:
        subprocess.run([str(SSHD), "stop", str(keys)], capture_output=True, timeout=60)
