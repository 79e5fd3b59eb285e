"""One poller per backend on PostgreSQL (issue 16): tracker processes that share nothing
but the database URL poll a backend one at a time, under the store's lease; the others
follow the store and are woken by LISTEN/NOTIFY. Real processes, real local jobs, the
real loopback PostgreSQL (``scripts/postgres-loopback start``; skipped without
HPCSTATE_TEST_POSTGRES_URL). Expected verdicts are the jobs' own exit codes, written
here by hand.

The local backend's lease is per host and job directory, so these processes share the
job directory too (that is what a local job is); their only channel to each other is
the database (the files in ``work`` only hand run ids to the test harness)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcstate import Corrected, Finished, State
from hpcstate.runtime import Store, Tracker
from hpcstate.runtime.local import LocalBackend

from .test_store import postgres_schema_url
from .test_tracker_lease import _HOLDER, ENV, PY

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty schema on the loopback server (dropped afterwards)."""
    yield from postgres_schema_url()


# Three processes on one PostgreSQL, exactly one polling: test_tracker_lease.py runs
# that test on both stores (its `shared_store` fixture).


async def test_kill_9_of_the_holder_on_postgresql_another_takes_over(
    pg_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "jobs"
    Store(pg_url).close()
    holder = subprocess.Popen(
        [PY, "-c", _HOLDER, pg_url, str(root)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert holder.stdout is not None
    run_id = holder.stdout.readline().strip()
    assert run_id
    with Store(pg_url, sweep=False) as store:
        taken = store.leases()
    assert [(lease.holder, lease.released) for lease in taken] == [("doomed", False)]
    os.kill(holder.pid, signal.SIGKILL)  # no clean exit: the lease is left to expire
    holder.wait(timeout=10)
    killed_at = time.monotonic()
    backend = LocalBackend(root=root, kill_grace=0.5, watch_interval=0.05)
    async with Tracker(
        store=pg_url, backends={"local": backend}, fast_interval=0.1, lease_ttl=2.0, holder="heir"
    ) as tracker:
        done = await tracker.wait(run_id, timeout=60)
        (lease,) = tracker.store.leases()
        events = tracker.store.events(after=0)
    took = time.monotonic() - killed_at
    (item,) = done.items
    assert item.state is State.FAILED
    assert item.exit is not None
    assert item.exit.code == 5
    assert item.confirmed
    assert lease.holder == "heir"
    assert lease.generation == 2  # taken over once
    assert took < 60  # generous: the lease lasts 2 s
    # One verdict in the log, the job's own (none lost, repeated or contradicted).
    finals = [e.event for e in events if isinstance(e.event, (Finished, Corrected))]
    assert [(f.state, f.exit.code if f.exit else None) for f in finals] == [(State.FAILED, 5)]
    assert len([d for d in root.iterdir() if d.name != "tags"]) == 1  # not resubmitted


async def test_a_follower_on_postgresql_is_woken_by_notify_not_by_polling(
    pg_url: str, tmp_path: Path
) -> None:
    """The follower's own poll loop is slowed to 10 minutes and its wake check runs
    every 0.05 s: the verdict still reaches it (the holder's commit NOTIFYs it), and it
    never asked the database whether something changed in a loop."""
    root = tmp_path / "jobs"
    Store(pg_url).close()
    holder = subprocess.Popen(
        [PY, "-c", _HOLDER, pg_url, str(root)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert holder.stdout is not None
        run_id = holder.stdout.readline().strip()
        assert run_id
        backend = LocalBackend(root=root, kill_grace=0.5, watch_interval=0.05)
        tracker = Tracker(
            store=pg_url,
            backends={"local": backend},
            fast_interval=600.0,
            max_interval=600.0,
            wake_check_interval=0.05,
            holder="follower",
        )
        store: Any = tracker.store
        asked: list[str] = []
        waited: list[int] = []
        for name in ("has_open_self_reports", "data_version"):
            original = getattr(store, name)

            def counted(*a: Any, _o: Any = original, _n: str = name, **k: Any) -> Any:
                asked.append(_n)
                return _o(*a, **k)

            setattr(store, name, counted)
        original_wait = store.wait_for_events

        async def counted_wait(after: int, *, timeout: float) -> int:
            waited.append(after)
            return int(await original_wait(after, timeout=timeout))

        store.wait_for_events = counted_wait
        async with tracker:
            done = await tracker.wait(run_id, timeout=60)
            asked_self_reports = asked.count("has_open_self_reports")
        (item,) = done.items
        assert item.state is State.FAILED
        assert item.exit is not None
        assert item.exit.code == 5
        assert waited  # it listened
        # A follower consumes no self-reports, and a change reaches it by NOTIFY: it
        # never looked for either on a timer (the 0.05 s wake check would have asked
        # dozens of times during the job's 2 s).
        assert asked_self_reports == 0, asked
        # Its data_version reads are its own polls (the first, and one per wake-up
        # by a NOTIFY), not a 0.05 s loop.
        assert asked.count("data_version") < 20, len(asked)
    finally:
        holder.kill()
        holder.wait(timeout=10)
