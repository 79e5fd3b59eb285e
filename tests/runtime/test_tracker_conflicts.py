"""Every compare-and-set of the tracker whose item another writer changed first is
re-read and re-applied (or reported), never dropped. Two real writers on one real
SQLite file: the tracker, and another process that commits between the tracker's read
and its write (the test opens that window at the one place it matters: just before the
tracker's commit)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pytest

from hpcstate import ExitStatus, Marker, MarkerCode, State, add_marker
from hpcstate.backend import JobSpec, Submission
from hpcstate.runtime import Change, CommitResult, Store, Tracker
from hpcstate.runtime._bus import MARKER_ATTEMPTS
from hpcstate.runtime._store import Lease
from hpcstate.runtime.local import LocalBackend

PY = sys.executable
SRC = Path(__file__).resolve().parents[2] / "src"
#: The other process imports this tree's hpcstate, whatever else is installed.
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
}

# The other writer: a separate process, its own connection, an ordinary add_marker.
_ADD_NOTE = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    import hpcstate as h
    from hpcstate.runtime import Change, Store

    with Store(sys.argv[1], sweep=False) as store:
        item = store.get_item(sys.argv[2])
        step = h.add_marker(item, h.Marker(code="note", text="the other writer"),
                            at=datetime.now(timezone.utc))
        result = store.commit([Change(item=step.item, expected_version=item.version,
                                      events=step.events)])
        assert result.applied == (item.id,), result
    """
)

# The other writer as a second tracker: it cancels the run.
_CANCEL_RUN = textwrap.dedent(
    """
    import asyncio, sys
    from hpcstate.runtime import Tracker
    from hpcstate.runtime.local import LocalBackend

    async def main():
        tracker = Tracker(store=sys.argv[1], sweep=False,
                          backends={"local": LocalBackend(root=sys.argv[3])})
        await tracker.cancel(sys.argv[2])
        await tracker.aclose()

    asyncio.run(main())
    """
)


def other_process(*argv: str) -> None:
    subprocess.run([PY, "-c", *argv], check=True, timeout=60, env=ENV)


def cancelling(change: Change) -> bool:
    item = change.item
    return item.state is State.CANCELLED or item.has_marker(MarkerCode.CANCEL_REQUESTED.value)


class RacedStore(Store):
    """A real store whose next commit of a cancel is preceded by another process's
    write (the poll loop's own commits go through untouched)."""

    before_next_commit: list[str] | None = None

    def commit(self, changes: Sequence[Change], *, lease: Lease | None = None) -> CommitResult:
        argv = self.before_next_commit
        if argv is not None and any(cancelling(c) for c in changes):
            self.before_next_commit = None
            other_process(*argv)
        return super().commit(changes, lease=lease)


async def test_cancel_of_a_running_job_keeps_its_marker_when_another_writer_wins(
    db_path: Path, local: LocalBackend
) -> None:
    store = RacedStore(db_path)
    async with Tracker(store=store, backends={"local": local}, fast_interval=0.05) as tracker:
        run = await tracker.submit(JobSpec(command=["sleep", "30"]))
        item_id = run.items[0].id
        store.before_next_commit = [_ADD_NOTE, str(db_path), item_id]
        await tracker.cancel(run.id)
        assert store.before_next_commit is None  # the race happened
        done = await tracker.wait(run.id, timeout=30)
    store.close()
    (item,) = done.items
    assert item.state is State.CANCELLED
    assert item.exit == ExitStatus.killed(signal.SIGTERM)
    assert item.has_marker("note")  # the other writer's change survived...
    assert item.has_marker(MarkerCode.CANCEL_REQUESTED.value)  # ...and so did ours


async def test_cancel_of_a_pending_item_is_not_lost_when_another_writer_wins(
    db_path: Path, local: LocalBackend
) -> None:
    store = RacedStore(db_path)
    tracker = Tracker(
        store=store, backends={"local": local}, fast_interval=0.05, concurrency={"local": 1}
    )
    async with tracker:
        first = await tracker.submit(JobSpec(command=["sleep", "0.5"]))
        second = await tracker.submit(JobSpec(command=["sleep", "30"]))
        assert second.items[0].state is State.PENDING  # the cap holds it back
        store.before_next_commit = [_ADD_NOTE, str(db_path), second.items[0].id]
        await tracker.cancel(second.id)
        assert store.before_next_commit is None
        # Once the first job ends, a dropped cancel would let the second be submitted.
        await tracker.wait(first.id, timeout=30)
        await tracker.poll_once()
        done = tracker.get_run(second.id)
    store.close()
    (item,) = done.items
    assert item.state is State.CANCELLED
    assert item.native_id is None  # never reached the backend
    assert item.has_marker("note")
    assert [d.name for d in local.root.iterdir() if d.name != "tags"] == [first.items[0].native_id]


class CancelledWhileSubmitting(LocalBackend):
    """The real local backend; while its submit runs, another tracker cancels the run
    (it sees a claimed PENDING item: it can only leave the cancel marker)."""

    cancel_during_submit: list[str] | None = None

    async def submit(self, spec: JobSpec) -> Submission:
        argv, self.cancel_during_submit = self.cancel_during_submit, None
        if argv is not None:
            other_process(*argv)
        return await super().submit(spec)


async def test_a_cancel_request_stored_during_the_submit_cancels_the_new_job(
    db_path: Path, tmp_path: Path
) -> None:
    root = tmp_path / "jobs"
    backend = CancelledWhileSubmitting(root=root, kill_grace=0.5, watch_interval=0.05)
    async with Tracker(store=db_path, backends={"local": backend}, fast_interval=0.05) as tracker:
        run_id = "r1"
        backend.cancel_during_submit = [_CANCEL_RUN, str(db_path), run_id, str(root)]
        run = await tracker.submit(JobSpec(command=["sleep", "30"]), run_id=run_id)
        assert backend.cancel_during_submit is None
        # The job was recorded on top of the other tracker's cancel marker...
        assert run.items[0].native_id is not None
        assert run.items[0].has_marker(MarkerCode.CANCEL_REQUESTED.value)
        # ...and cancelled: it does not run on for 30 s untracked.
        done = await tracker.wait(run.id, timeout=30)
    (item,) = done.items
    assert item.state is State.CANCELLED
    assert item.exit == ExitStatus.killed(signal.SIGTERM)


class CancelRefused(LocalBackend):
    """The real local backend whose cancel call fails (as an unreachable scheduler's
    would) until ``refuse`` is cleared."""

    refuse = True

    async def cancel(self, native_ids: Sequence[str]) -> None:
        if self.refuse:
            raise OSError("the scheduler did not answer")
        await super().cancel(native_ids)


class OutwrittenStore(Store):
    """A real store where, before each commit that carries a ``cancel_failed`` marker,
    a second real connection to the same file changes the item first, so that commit
    always conflicts: a writer that never lets go."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.other = Store(path, sweep=False)
        self.raced = 0

    def commit(self, changes: Sequence[Change], *, lease: Lease | None = None) -> CommitResult:
        for change in changes:
            if change.item.has_marker(MarkerCode.CANCEL_FAILED.value):
                self.raced += 1
                item = self.other.get_item(change.item.id)
                step = add_marker(
                    item,
                    Marker(code=f"note{self.raced}", text="the other writer"),
                    at=datetime.now(timezone.utc),
                )
                done = self.other.commit(
                    [Change(item=step.item, expected_version=item.version, events=step.events)]
                )
                assert done.applied == (item.id,)
        return super().commit(changes, lease=lease)


async def test_a_cancel_failed_marker_that_cannot_be_stored_is_reported_not_dropped(
    db_path: Path, tmp_path: Path
) -> None:
    backend = CancelRefused(root=tmp_path / "jobs", kill_grace=0.5, watch_interval=0.05)
    store = OutwrittenStore(db_path)
    # Not started: only this test's poll_once reads the failures (wait() starts the loop).
    tracker = Tracker(store=store, backends={"local": backend}, fast_interval=0.05)
    try:
        run = await tracker.submit(JobSpec(command=["sleep", "30"]))
        (item_id,) = (i.id for i in run.items)
        with pytest.raises(OSError, match="did not answer"):
            await tracker.cancel(run.id)
        assert store.raced == MARKER_ATTEMPTS  # every attempt lost to the other writer
        assert tracker.failures == 1
        report = await tracker.poll_once()
        assert any(
            f"item(s) {item_id}: marker 'cancel_failed' not stored" in text
            for text in report.failures
        ), report.failures
        backend.refuse = False
        await tracker.cancel(run.id)
        done = await tracker.wait(run.id, timeout=30)
    finally:
        await tracker.aclose()
    store.other.close()
    store.close()
    (item,) = done.items
    assert item.state is State.CANCELLED
    assert not item.has_marker(MarkerCode.CANCEL_FAILED.value)
    assert item.has_marker(f"note{MARKER_ATTEMPTS}")  # the other writer's changes stayed
