"""The embedded local backend: real detached processes and their wait statuses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from hpcstate import Absence, ConfigError, ExitStatus, Observation, State, registry
from hpcstate.backend import BackendConfig, JobSpec
from hpcstate.runtime._proc import ProcessHandle, boot_id, process_start_time
from hpcstate.runtime.local import LocalBackend


async def until_ended(backend: LocalBackend, native_id: str, limit: float = 20.0) -> Observation:
    for _ in range(int(limit / 0.05)):
        (obs,) = await backend.queue([native_id])
        if (obs.state is not None and obs.final) or obs.absence is not None:
            return obs
        await asyncio.sleep(0.05)
    pytest.fail(f"job {native_id} did not end within {limit} s")


@pytest.mark.parametrize(
    ("argv", "state", "exit_"),
    [
        (["true"], State.COMPLETED, ExitStatus.exited(0)),
        (["sh", "-c", "exit 3"], State.FAILED, ExitStatus.exited(3)),
        # A shell's "exit 137" is an exit code, not SIGKILL: the wait status says so.
        (["sh", "-c", "exit 137"], State.FAILED, ExitStatus.exited(137)),
        (["sh", "-c", "kill -SEGV $$"], State.FAILED, ExitStatus.killed(11)),
        (["sh", "-c", "kill -KILL $$"], State.FAILED, ExitStatus.killed(9)),
        (["/nonexistent/program"], State.FAILED, ExitStatus.exited(127)),
    ],
)
async def test_wait_status_is_lossless_and_final(
    local: LocalBackend, argv: list[str], state: State, exit_: ExitStatus
) -> None:
    job = await local.submit(JobSpec(command=argv))
    obs = await until_ended(local, job.native_id)
    assert (obs.state, obs.final, obs.stats.exit) == (state, True, exit_)
    assert obs.stats.started_at is not None
    assert obs.stats.finished_at is not None


async def test_output_goes_to_files_in_the_job_directory(local: LocalBackend) -> None:
    job = await local.submit(
        JobSpec(
            command=["sh", "-c", 'echo out; echo err >&2; echo "$GREETING"'],
            environment={"GREETING": "hello there"},
        )
    )
    await until_ended(local, job.native_id)
    jobdir = local.job_dir(job.native_id)
    assert (jobdir / "stdout").read_text() == "out\nhello there\n"
    assert (jobdir / "stderr").read_text() == "err\n"
    snapshot = await local.read_output(job.native_id, None, 1)
    assert snapshot is not None
    assert snapshot.tail == ("hello there",)


async def test_running_then_handle_identifies_the_process(local: LocalBackend) -> None:
    job = await local.submit(JobSpec(command=["sleep", "30"]))
    try:
        for _ in range(100):
            (obs,) = await local.queue([job.native_id])
            if obs.state is State.RUNNING:
                break
            await asyncio.sleep(0.02)
        assert obs.state is State.RUNNING
        assert obs.handle is not None
        handle = ProcessHandle.parse(obs.handle)
        assert handle.alive()
        assert handle.boot_id == boot_id()
    finally:
        await local.cancel([job.native_id])
    ended = await until_ended(local, job.native_id)
    assert ended.state is State.CANCELLED
    assert ended.stats.exit == ExitStatus.killed(signal.SIGTERM)


async def test_time_limit_is_timeout_and_kill_follows_term(local: LocalBackend) -> None:
    # It ignores TERM: only the KILL after the grace ends it.
    job = await local.submit(
        JobSpec(
            command=["sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30"],
            time_limit=timedelta(seconds=0.5),
        )
    )
    obs = await until_ended(local, job.native_id)
    assert obs.state is State.TIMEOUT
    assert obs.stats.exit == ExitStatus.killed(9)


async def test_recycled_pid_is_not_the_job(local: LocalBackend) -> None:
    job = await local.submit(JobSpec(command=["true"]))
    await until_ended(local, job.native_id)
    jobdir = local.job_dir(job.native_id)
    (jobdir / "status.json").unlink()
    # Forge the job's records: a live pid (ours), but not the start time it had.
    me = os.getpid()
    forged = {"pid": me, "start_time": process_start_time(me) + 1, "boot_id": boot_id()}
    for name in ("supervisor.json", "payload.json"):
        (jobdir / name).write_text(json.dumps({**forged, "started_at": None}))
    (obs,) = await local.queue([job.native_id])
    assert obs.absence is Absence.UNKNOWN  # gone, not running and not failed
    assert obs.state is None
    # The same pid with the right start time but another boot is not the job either.
    other_boot = {**forged, "start_time": process_start_time(me), "boot_id": "another-boot"}
    (jobdir / "supervisor.json").write_text(json.dumps(other_boot))
    (jobdir / "payload.json").write_text(json.dumps(other_boot))
    (obs,) = await local.queue([job.native_id])
    assert obs.absence is Absence.UNKNOWN


async def test_supervisor_dead_without_status_is_unknown_never_failed(local: LocalBackend) -> None:
    job = await local.submit(JobSpec(command=["sleep", "1"]))
    jobdir = local.job_dir(job.native_id)
    supervisor = json.loads((jobdir / "supervisor.json").read_text())
    for _ in range(100):
        if (jobdir / "payload.json").exists():
            break
        await asyncio.sleep(0.02)
    os.kill(supervisor["pid"], signal.SIGKILL)
    (running,) = await local.queue([job.native_id])
    assert running.state is State.RUNNING  # the orphaned payload still runs
    obs = await until_ended(local, job.native_id)
    assert obs.absence is Absence.UNKNOWN
    assert "died without recording" in obs.detail


async def test_job_survives_the_process_that_submitted_it(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    script = (
        "import asyncio, sys\n"
        "from hpcstate.backend import JobSpec\n"
        "from hpcstate.runtime.local import LocalBackend\n"
        f"b = LocalBackend(root={str(root)!r})\n"
        "s = asyncio.run(b.submit(JobSpec(command=['sh', '-c', 'sleep 1; exit 4'])))\n"
        "print(s.native_id)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0  # the submitter is gone...
    backend = LocalBackend(root=root)
    obs = await until_ended(backend, out.decode().strip())
    assert obs.stats.exit == ExitStatus.exited(4)  # ...and the job ran to its end


async def test_find_submission_by_tag(local: LocalBackend) -> None:
    job = await local.submit(JobSpec(command=["true"], tag="hpcstate-r.0"))
    found = await local.find_submission("hpcstate-r.0")
    assert found is not None
    assert found.native_id == job.native_id
    assert await local.find_submission("hpcstate-other") is None


async def test_unknown_or_malformed_ids_are_unknown(local: LocalBackend) -> None:
    obs = await local.queue(["20000101000000-deadbeef", "../etc"])
    assert [o.absence for o in obs] == [Absence.UNKNOWN, Absence.UNKNOWN]


async def test_watch_notices_the_end(local: LocalBackend) -> None:
    job = await local.submit(JobSpec(command=["sleep", "0.3"]))

    async def first_final() -> Observation:
        async for obs in local.watch([job.native_id]):
            if obs.final:
                return obs
        raise AssertionError("watch ended")

    obs = await asyncio.wait_for(first_final(), 10)
    assert obs.state is State.COMPLETED


def test_registered_as_entry_point(tmp_path: Path) -> None:
    info = registry.load("local")
    assert info.name == "local"
    backend = info.make_backend(
        BackendConfig(name="mine", kind="local", options={"root": str(tmp_path)})
    )
    assert isinstance(backend, LocalBackend)
    assert backend.root == tmp_path


def test_bad_options_are_named() -> None:
    info = registry.load("local")
    with pytest.raises(ConfigError, match="unknown option"):
        info.make_backend(BackendConfig(name="x", kind="local", options={"nope": 1}))
    with pytest.raises(ConfigError, match="takes no host"):
        info.make_backend(BackendConfig(name="x", kind="local", host="h"))


def test_options_are_a_typed_record_checked_by_key() -> None:
    from hpcstate.runtime.local import LocalOptions

    info = registry.load("local")
    assert info.options_type is LocalOptions
    with pytest.raises(ConfigError) as caught:
        info.make_backend(BackendConfig(name="x", kind="local", options={"kill_grace": "5s"}))
    assert str(caught.value) == "backend 'x': kill_grace: expected a number, got string '5s'"


def test_declared_abilities(tmp_path: Path) -> None:
    import socket

    from hpcstate.backend import abilities

    backend = registry.make_backend(
        BackendConfig(name="mine", kind="local", options={"root": str(tmp_path)})
    )
    found = abilities(backend)
    assert found.host_local is backend
    assert found.report_files is None  # local jobs report into the store, not a file
    assert backend.lease_scope() == f"{socket.gethostname()}:{tmp_path}"  # type: ignore[attr-defined]
