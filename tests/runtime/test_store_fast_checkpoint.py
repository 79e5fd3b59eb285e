"""The WAL is checkpointed off the committing thread (runtime._store._Checkpointer):
real SQLite files, real threads, a real fork and real second processes.

Each test shrinks the checkpoint threshold (SQLite's 1,000 pages would need ~16 MB per
round) so that a few hundred items per commit cross it; without the checkpoint (the
writer runs with ``wal_autocheckpoint = 0``) the -wal file grows by every commit."""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import hpcstate as h
from hpcstate import Run, Source, State
from hpcstate.runtime import Store, _store
from hpcstate.runtime._store import Change

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
PAGES = 40  # the threshold in these tests: 40 pages of 16 KiB, ~656 KB of WAL
PER_ROUND = 300  # items created, then moved to running: two commits, ~70 WAL pages
ROUNDS = 60  # without any checkpoint the WAL would reach ~100 times the threshold
WAITING = 120.0  # generous: only a hang reaches it


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_store, "_CHECKPOINT_PAGES", PAGES)


def wal_size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def one_round(store: Store, number: int, prefix: str = "run") -> list[str]:
    """A run of PER_ROUND items (one commit), then all of them running (another)."""
    run_id = f"{prefix}{number:04d}"
    items = [
        h.new_item(id=f"{run_id}.{i}", run_id=run_id, backend="local", now=T0, array_index=i)
        for i in range(PER_ROUND)
    ]
    store.create_run(Run(id=run_id, backend="local", created_at=T0, items=items))
    changes = []
    for item in items:
        native = f"{run_id}-{item.array_index}"
        queued = h.submitted(item, native_id=native, at=T0 + timedelta(seconds=1))
        running = h.advance(
            queued.item,
            h.Observation(
                native_id=native,
                source=Source.QUEUE,
                observed_at=T0 + timedelta(seconds=2),
                state=State.RUNNING,
            ),
        )
        changes.append(
            Change(item=running.item, expected_version=0, events=queued.events + running.events)
        )
    result = store.commit(changes)
    assert len(result.applied) == PER_ROUND
    assert not result.conflicts
    return [item.id for item in items]


def assert_all_running(path: Path, ids: list[str]) -> None:
    """Read back by a fresh connection: every item running at version 2, two events
    each, and SQLite finds the file sound."""
    with Store(path, sweep=False) as reader:
        rows, corrupt = reader.items_by_id(ids)
        assert not corrupt
        assert len(rows) == len(ids)
        assert {row.item.state for row in rows} == {State.RUNNING}
        assert {row.item.version for row in rows} == {2}
        assert reader.last_event_seq() == 2 * len(ids)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()


def checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "hpcstate-checkpoint"]


def test_the_background_checkpoint_bounds_the_wal(db_path: Path) -> None:
    ids: list[str] = []
    sizes: list[int] = []
    with Store(db_path) as store:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        # The writer itself never checkpoints: the bound below is the thread's doing.
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        limit = checkpointer.limit
        assert limit == 32 + PAGES * (16384 + 24)
        for number in range(ROUNDS):
            ids += one_round(store, number)
            sizes.append(wal_size(db_path))
            # Deterministic: each round lets a requested checkpoint finish (on a busy
            # host the thread could lag; then commits checkpoint inline, tested below).
            assert checkpointer.idle(WAITING)
        assert checkpointer.failed is None
        # (A commit that began while a checkpoint ran may finish the rest inline.)
        assert checkpointer.background >= ROUNDS // 4
        # Unchecked, the WAL would hold every round (~100 times the limit by the end).
        assert max(sizes) < 4 * limit, (limit, sizes)
        assert sizes[-1] < 4 * limit
    assert_all_running(db_path, ids)


def test_close_stops_the_thread_and_its_connection(db_path: Path) -> None:
    store = Store(db_path)
    checkpointer = store._checkpointer
    assert checkpointer is not None
    for number in range(ROUNDS):  # until the thread has run once (it then idles)
        one_round(store, number)
        assert checkpointer.idle(WAITING)
        if checkpointer.background:
            break
    assert checkpointer.background == 1
    thread = checkpointer._thread
    assert thread is not None
    assert thread.is_alive()  # waiting for more work
    assert checkpointer._db is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ResourceWarning (an unclosed connection) fails
        store.close()
        gc.collect()
    assert not thread.is_alive()
    assert checkpoint_threads() == []
    assert checkpointer._db is None
    assert checkpointer._thread is None


def test_close_waits_for_a_running_checkpoint(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() while the thread is inside a checkpoint: the checkpoint finishes, then
    the thread and its connection are gone (the checkpoint is held until a timer
    lets it go, so a close that did not wait would return first)."""
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []
    real = _store._Checkpointer._checkpoint

    def held(self: _store._Checkpointer) -> None:
        started.set()
        assert release.wait(WAITING)
        real(self)
        finished.append(True)

    monkeypatch.setattr(_store._Checkpointer, "_checkpoint", held)
    store = Store(db_path)
    checkpointer = store._checkpointer
    assert checkpointer is not None
    ids: list[str] = []
    for number in range(ROUNDS):
        ids += one_round(store, number)
        if started.is_set():
            break
    assert started.wait(WAITING)
    thread = checkpointer._thread
    assert thread is not None
    timer = threading.Timer(0.2, release.set)
    timer.start()
    try:
        store.close()
        assert finished == [True]
        assert not thread.is_alive()
        assert checkpoint_threads() == []
        assert checkpointer._db is None
    finally:
        release.set()
        timer.join()
    assert_all_running(db_path, ids)


def test_a_failing_background_checkpoint_falls_back_to_inline(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: _store._Checkpointer) -> None:
        raise sqlite3.OperationalError("disk I/O error (made to fail by the test)")

    monkeypatch.setattr(_store._Checkpointer, "_checkpoint", broken)
    ids: list[str] = []
    sizes: list[int] = []
    with (
        caplog.at_level(logging.WARNING, logger="hpcstate.runtime.store"),
        Store(db_path) as store,
    ):
        checkpointer = store._checkpointer
        assert checkpointer is not None
        for number in range(ROUNDS):
            ids += one_round(store, number)  # never raises into the caller
            sizes.append(wal_size(db_path))
            assert checkpointer.idle(WAITING)
        assert checkpointer.failed is not None
        assert "made to fail by the test" in checkpointer.failed
        assert checkpointer.background == 0
        assert checkpointer.inline >= ROUNDS // 4
        assert checkpoint_threads() == []  # the failed thread ended
        # Without the inline fallback nothing would checkpoint (~100 times the limit).
        assert max(sizes) < 4 * checkpointer.limit, (checkpointer.limit, sizes)
    assert "the background checkpoint failed" in caplog.text
    assert_all_running(db_path, ids)


def test_a_thread_that_cannot_start_falls_back_to_inline(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cannot(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread (the test)")

    monkeypatch.setattr(threading.Thread, "start", cannot)
    ids: list[str] = []
    sizes: list[int] = []
    with Store(db_path) as store:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        for number in range(ROUNDS // 2):
            ids += one_round(store, number)
            sizes.append(wal_size(db_path))
        assert checkpointer.failed is not None
        assert "cannot start a thread" in checkpointer.failed
        assert checkpointer.inline >= ROUNDS // 8
        assert max(sizes) < 4 * checkpointer.limit, (checkpointer.limit, sizes)
    assert_all_running(db_path, ids)


def test_a_read_only_store_has_no_checkpointer(db_path: Path) -> None:
    """A read-only file (a read-only bind mount of it, as in test_store_environment):
    no thread, no pragma, reads as before."""
    with Store(db_path) as store:
        ids = one_round(store, 0)
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    bound = subprocess.run(
        ["mount", "--bind", str(db_path), str(db_path)], capture_output=True, text=True
    )
    if bound.returncode != 0:
        pytest.skip(f"bind mounts are not permitted here: {bound.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(db_path)], check=True)
        with Store(db_path, sweep=False) as reader:
            assert reader.read_only is not None
            assert reader._checkpointer is None
            rows, corrupt = reader.items_by_id(ids)
            assert len(rows) == PER_ROUND
            assert not corrupt
        assert checkpoint_threads() == []
    finally:
        subprocess.run(["umount", str(db_path)], check=False)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_closes_without_waiting_for_the_parents_thread(db_path: Path) -> None:
    ids: list[str] = []
    with Store(db_path) as store:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        for number in range(ROUNDS):
            ids += one_round(store, number)
            assert checkpointer.idle(WAITING)
            if checkpointer.background:
                break
        assert checkpointer.background == 1
        assert checkpointer._thread is not None
        assert checkpointer._thread.is_alive()
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            pid = os.fork()
        if pid == 0:  # the child: the thread did not come along; close must not wait
            try:
                status = b"ok" if checkpointer._thread is None else b"thread"
                store.close()
                os.write(write_end, status)
            finally:
                os._exit(0)
        os.close(write_end)
        try:
            ready, _, _ = select.select([read_end], [], [], WAITING)
            if not ready:
                os.kill(pid, signal.SIGKILL)
            answer = os.read(read_end, 16) if ready else b"hung"
        finally:
            os.close(read_end)
            os.waitpid(pid, 0)
        assert answer == b"ok"
        # The parent's store, thread and file are as they were.
        assert checkpointer._thread is not None
        assert checkpointer._thread.is_alive()
        ids += one_round(store, number + 1)
    assert checkpoint_threads() == []
    assert_all_running(db_path, ids)


WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from hpcstate.runtime import Store, _store
_store._CHECKPOINT_PAGES = {pages}
from runtime.test_store_fast_checkpoint import one_round
with Store(Path(sys.argv[1])) as store:
    for number in range({rounds}):
        one_round(store, number, prefix=sys.argv[2])
    assert store._checkpointer is not None
    print(store._checkpointer.background + store._checkpointer.inline)
"""


def test_two_writer_processes_then_the_wal_is_cut_back(db_path: Path) -> None:
    """Two processes, each with its own checkpoint thread, commit large batches to one
    file back to back: every row lands, each process checkpointed, and once they stop
    the WAL is checkpointed and cut back to the limit. (While two writers never pause,
    the WAL cannot restart and grows, as it does with SQLite's own checkpoint: that is
    not asserted, only that it comes back.)"""
    rounds = 25
    Store(db_path).close()
    code = WRITER.format(tests=str(Path(__file__).parents[1]), pages=PAGES, rounds=rounds)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(db_path), prefix],
            stdout=subprocess.PIPE,
            text=True,
        )
        for prefix in ("a", "b")
    ]
    outputs = [w.communicate(timeout=WAITING * 5)[0] for w in writers]
    assert [w.returncode for w in writers] == [0, 0]
    assert all(int(out.split()[-1]) >= 1 for out in outputs), outputs  # each checkpointed
    ids = [f"{p}{n:04d}.{i}" for p in ("a", "b") for n in range(rounds) for i in range(PER_ROUND)]
    with Store(db_path, sweep=False) as store:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        # The last writer's close checkpointed the whole WAL and removed it; a large
        # commit now (past the limit), its checkpoint, then a small write restarts it.
        ids += one_round(store, 0, prefix="c")
        assert wal_size(db_path) > checkpointer.limit
        assert checkpointer.idle(WAITING)
        small = [h.new_item(id="d.0", run_id="d", backend="local", now=T0)]
        store.create_run(Run(id="d", backend="local", created_at=T0, items=small))
        assert wal_size(db_path) <= checkpointer.limit
    assert_all_running(db_path, ids)
