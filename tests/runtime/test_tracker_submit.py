"""A submission that cannot reach its scheduler fails visibly (issues 14 and 18):
``Tracker.submit`` raises SubmitRefused and the run is stored FAILED (never ran),
never left PENDING for a later tracker to submit behind the caller's back.

Against real things: the loopback OpenSSH server (a host key we do not know, a port
nobody listens on) and the local backend."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hpcstate import ReasonKind, SchedulerUnavailable, State, TransportError
from hpcstate.backend import BackendConfig, JobSpec, Submission
from hpcstate.runtime import HostKeyRejected, Store, SubmitRefused, Tracker
from hpcstate.runtime._tracker import SUBMIT_IN_DOUBT
from hpcstate.runtime.local import LocalBackend

from .conftest import Sshd, free_port
from .fakes import ScriptedBackend, VirtualClock


def only_run(db_path: Path) -> list[State]:
    with Store(db_path, sweep=False) as store:
        (summary,) = store.list_runs()
        return [i.state for i in store.get_run(summary.id).items]


@pytest.mark.sshd
async def test_a_refused_host_key_fails_the_submission(
    sshd: Sshd, tmp_path: Path, db_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")  # the loopback server's key is unknown: it must be refused
    remote = BackendConfig(
        name="remote",
        kind="slurm",
        host=f"root@127.0.0.1:{sshd.port}",
        options={"known_hosts": str(empty), "client_keys": [sshd.key]},
    )
    marker = tmp_path / "ran"
    async with Tracker(store=db_path, backends={"remote": remote}) as tracker:
        with pytest.raises(SubmitRefused) as caught:
            await tracker.submit(JobSpec(command=["touch", str(marker)]), backend="remote")
    refused = caught.value
    assert isinstance(refused.__cause__, HostKeyRejected)
    assert not refused.unreachable  # permanent: trying again cannot help
    assert "host key" in refused.reason
    (item,) = refused.run.items
    assert item.state is State.FAILED
    assert item.confirmed
    assert item.native_id is None
    assert item.stats.reason is not None
    assert item.stats.reason.kind is ReasonKind.SUBMIT_REJECTED
    assert "host key" in item.stats.reason.text
    assert only_run(db_path) == [State.FAILED]  # stored so, not pending
    assert not marker.exists()


@pytest.mark.sshd
async def test_an_unreachable_host_fails_the_submission_and_never_submits_later(
    sshd: Sshd, tmp_path: Path, db_path: Path
) -> None:
    nobody = BackendConfig(
        name="remote",
        kind="slurm",
        host=f"root@127.0.0.1:{free_port()}",  # nobody listens there
        options={"known_hosts": sshd.known_hosts, "client_keys": [sshd.key]},
    )
    async with Tracker(store=db_path, backends={"remote": nobody}) as tracker:
        with pytest.raises(SubmitRefused) as caught:
            await tracker.submit(JobSpec(command=["true"]), backend="remote")
        report = await tracker.poll_once()  # a later poll submits nothing
    refused = caught.value
    assert refused.unreachable
    assert "unreachable" in refused.reason
    assert "cannot connect" in refused.reason
    # Not even the tag lookup could answer: the job may exist. Kept, marked, never
    # submitted again (the lookup decides once the host answers).
    assert refused.in_doubt
    (item,) = refused.run.items
    assert item.state is State.PENDING
    assert item.has_marker(SUBMIT_IN_DOUBT)
    assert report.submitted == 0


class Unreachable(ScriptedBackend):
    """Submit and (while ``lookup_down``) the tag lookup fail as an unreachable host's
    would; for the lookup answers no real system here gives on cue."""

    lookup_down = True

    async def find_submission(self, tag: str) -> Submission | None:
        self.lookups.append(tag)
        if self.lookup_down:
            raise TransportError("ssh login: cannot connect: [Errno 113] No route to host")
        return self.tagged.get(tag)


async def test_unreachable_at_submit_then_not_found_fails_the_run(
    db_path: Path, clock: VirtualClock
) -> None:
    fake = Unreachable()
    fake.submit_fail_with = TransportError("ssh login: cannot connect: timed out")
    tracker = Tracker(store=db_path, backends={"fake": fake}, clock=clock)  # type: ignore[dict-item]
    with pytest.raises(SubmitRefused) as caught:
        await tracker.submit(JobSpec(command=["x"]), backend="fake")
    assert caught.value.in_doubt
    fake.lookup_down = False  # the host answers again: nothing under the tag
    clock.advance(1)
    await tracker.poll_once()
    (item,) = tracker.get_run(caught.value.run.id).items
    assert item.state is State.FAILED
    assert item.stats.reason is not None
    assert item.stats.reason.kind is ReasonKind.SUBMIT_REJECTED
    assert "not found" in item.stats.reason.text
    assert len(fake.submits) == 1  # never submitted again
    await tracker.aclose()


async def test_unreachable_at_submit_then_found_is_tracked(
    db_path: Path, clock: VirtualClock
) -> None:
    fake = Unreachable()
    fake.submit_fail_with = TransportError("ssh login: connection lost during command")
    tracker = Tracker(store=db_path, backends={"fake": fake}, clock=clock)  # type: ignore[dict-item]
    with pytest.raises(SubmitRefused) as caught:
        await tracker.submit(JobSpec(command=["x"]), backend="fake")
    (tag,) = fake.lookups
    fake.tagged[tag] = Submission(native_id="4242")  # it had gone through
    fake.lookup_down = False
    clock.advance(1)
    await tracker.poll_once()
    (item,) = tracker.get_run(caught.value.run.id).items
    assert item.state is State.QUEUED
    assert item.native_id == "4242"
    assert len(fake.submits) == 1
    await tracker.aclose()


async def test_unreachable_at_submit_with_an_answering_lookup_fails_at_once(
    db_path: Path, clock: VirtualClock
) -> None:
    fake = Unreachable()
    fake.lookup_down = False  # the lookup answers: nothing was created
    fake.submit_fail_with = SchedulerUnavailable("sbatch: Unable to contact slurm controller")
    tracker = Tracker(store=db_path, backends={"fake": fake}, clock=clock)  # type: ignore[dict-item]
    with pytest.raises(SubmitRefused) as caught:
        await tracker.submit(JobSpec(command=["x"]), backend="fake")
    assert caught.value.unreachable
    assert not caught.value.in_doubt
    assert [i.state for i in caught.value.run.items] == [State.FAILED]
    await tracker.aclose()


@pytest.mark.slurm
@pytest.mark.skipif(shutil.which("sbatch") is None, reason="needs the loopback Slurm cluster")
async def test_a_scheduler_refusal_fails_the_submission(db_path: Path, tmp_path: Path) -> None:
    # The real Slurm 22.05 (scripts/slurm-cluster) refuses a partition it does not have.
    spec = JobSpec(command=["true"], partition="nosuch", working_directory=str(tmp_path))
    async with Tracker(store=db_path) as tracker:
        with pytest.raises(SubmitRefused) as caught:
            await tracker.submit(spec, backend="slurm")
    assert not caught.value.unreachable
    assert "invalid partition" in caught.value.reason.lower()
    assert [i.state for i in caught.value.run.items] == [State.FAILED]
    assert only_run(db_path) == [State.FAILED]


async def test_an_accepted_submission_returns_the_run(db_path: Path, local: LocalBackend) -> None:
    async with Tracker(store=db_path, backends={"local": local}) as tracker:
        run = await tracker.submit(JobSpec(command=["true"]))
    assert run.items[0].native_id is not None
