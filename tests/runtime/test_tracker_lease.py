"""One poller per backend (issue 16): tracker processes sharing one SQLite store poll a
backend one at a time, under the store's lease; the others follow the store. Real
processes, real local jobs, one real SQLite file. Expected verdicts are the jobs' own
exit codes, written here by hand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from hpcstate import Corrected, Finished, Observation, Source, State
from hpcstate.backend import JobSpec
from hpcstate.runtime import Store, Tracker

from .fakes import ScriptedBackend, VirtualClock
from .test_store import postgres_schema_url

PY = sys.executable
SRC = Path(__file__).resolve().parents[2] / "src"
#: The processes import this tree's hpcstate, whatever else is installed.
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
}

# One tracker process: submits its job, waits for every run named in RUNS (so all the
# processes stay alive together), then prints what it saw and how often it asked the
# queue. Its queue calls are the local backend's, counted.
_PROCESS = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from pathlib import Path
    from hpcstate.backend import JobSpec
    from hpcstate.runtime import Tracker
    from hpcstate.runtime.local import LocalBackend

    db, root, work, me, code, others, ttl = sys.argv[1:8]

    class Counted(LocalBackend):
        calls = []
        async def queue(self, native_ids):
            Counted.calls.append(time.time())
            return await super().queue(native_ids)

    async def main():
        backend = Counted(root=root, kill_grace=0.5, watch_interval=0.05)
        tracker = Tracker(store=db, backends={"local": backend}, fast_interval=0.1,
                          lease_ttl=float(ttl), holder=me)
        async with tracker:
            run = await tracker.submit(JobSpec(command=["sh", "-c", f"sleep 1; exit {code}"]))
            Path(work, me).write_text(run.id)
            print(run.id, flush=True)
            names = [me, *[n for n in others.split(",") if n]]
            while not all(Path(work, n).exists() for n in names):
                await asyncio.sleep(0.05)
            seen = {}
            for name in names:
                done = await tracker.wait(Path(work, name).read_text(), timeout=60)
                seen[name] = [done.items[0].state.value, done.items[0].exit.code]
        print(json.dumps({"seen": seen, "queue_calls": Counted.calls}), flush=True)

    asyncio.run(main())
    """
)


def start(
    db: Path | str, root: Path, work: Path, me: str, code: int, others: Sequence[str], ttl: float
):  # type: ignore[no-untyped-def]
    return subprocess.Popen(
        [
            PY,
            "-c",
            _PROCESS,
            str(db),
            str(root),
            str(work),
            me,
            str(code),
            ",".join(others),
            str(ttl),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_store(request: pytest.FixtureRequest, db_path: Path) -> Iterator[str]:
    """What the processes share: an SQLite file, or a PostgreSQL URL (nothing else)."""
    if request.param == "sqlite":
        yield str(db_path)
    else:
        yield from postgres_schema_url()


def test_one_process_polls_for_all_that_share_the_store(shared_store: str, tmp_path: Path) -> None:
    root, work = tmp_path / "jobs", tmp_path / "work"
    work.mkdir()
    names = ["p0", "p1", "p2"]
    Store(shared_store).close()  # created once, before the processes race to open it
    procs = [
        start(shared_store, root, work, name, code, [n for n in names if n != name], 10.0)
        for code, name in enumerate(names)
    ]
    results = {}
    for name, proc in zip(names, procs, strict=True):
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results[name] = json.loads(out.splitlines()[-1])
    expected = {"p0": ["completed", 0], "p1": ["failed", 1], "p2": ["failed", 2]}
    for name in names:
        assert results[name]["seen"] == expected  # every process saw every verdict
    pollers = [name for name in names if results[name]["queue_calls"]]
    assert len(pollers) == 1, {n: len(r["queue_calls"]) for n, r in results.items()}
    with Store(shared_store, sweep=False) as store:
        (lease,) = store.leases()
        runs = store.list_runs()
        # One verdict per item in the event log: none lost, none repeated or contradicted.
        finals = [
            (e.event.item_id, e.event.state, e.event.exit.code if e.event.exit else None)
            for e in store.events(after=0)
            if isinstance(e.event, (Finished, Corrected))
        ]
    assert lease.holder == pollers[0]
    assert lease.released  # a clean exit hands the lease over at once
    assert lease.scheduler_calls >= 1
    assert len(runs) == 3
    assert len(finals) == len({item for item, _, _ in finals}) == 3, finals
    assert sorted((state.value, code) for _, state, code in finals) == [
        ("completed", 0),
        ("failed", 1),
        ("failed", 2),
    ]
    jobs = [d for d in root.iterdir() if d.name != "tags"]
    assert len(jobs) == 3  # each submitted once
    jobs = [d for d in root.iterdir() if d.name != "tags"]
    assert len(jobs) == 3  # each submitted once


_HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from hpcstate.backend import JobSpec
    from hpcstate.runtime import Tracker
    from hpcstate.runtime.local import LocalBackend

    async def main():
        backend = LocalBackend(root=sys.argv[2], kill_grace=0.5, watch_interval=0.05)
        tracker = Tracker(store=sys.argv[1], backends={"local": backend}, fast_interval=0.1,
                          lease_ttl=2.0, holder="doomed")
        async with tracker:
            run = await tracker.submit(JobSpec(command=["sh", "-c", "sleep 2; exit 5"]))
            await tracker.poll_once()  # polls: holds the lease
            print(run.id, flush=True)
            await asyncio.sleep(3600)  # killed here

    asyncio.run(main())
    """
)


async def test_another_process_takes_over_when_the_holder_dies(
    db_path: Path, tmp_path: Path
) -> None:
    from hpcstate.runtime.local import LocalBackend

    root = tmp_path / "jobs"
    holder = subprocess.Popen(
        [PY, "-c", _HOLDER, str(db_path), str(root)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert holder.stdout is not None
    run_id = holder.stdout.readline().strip()
    assert run_id
    with Store(db_path, sweep=False) as store:
        taken = store.leases()
    assert [(lease.holder, lease.released) for lease in taken] == [("doomed", False)]
    os.kill(holder.pid, signal.SIGKILL)  # no clean exit: the lease is left to expire
    holder.wait(timeout=10)
    killed_at = time.monotonic()
    backend = LocalBackend(root=root, kill_grace=0.5, watch_interval=0.05)
    async with Tracker(
        store=db_path, backends={"local": backend}, fast_interval=0.1, lease_ttl=2.0, holder="heir"
    ) as tracker:
        done = await tracker.wait(run_id, timeout=60)
        lease = tracker.store.leases()[0]
    took = time.monotonic() - killed_at
    (item,) = done.items
    assert item.state is State.FAILED
    assert item.exit is not None
    assert item.exit.code == 5
    assert item.confirmed
    assert lease.holder == "heir"
    assert lease.generation == 2  # taken over once
    assert took < 30  # generous: the lease lasts 2 s
    assert len([d for d in root.iterdir() if d.name != "tags"]) == 1  # not resubmitted


# -- a holder that lost its lease writes nothing it observed --------------------------------

_TAKE_OVER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timedelta
    from hpcstate.runtime import Store

    with Store(sys.argv[1], sweep=False) as store:
        at = datetime.fromisoformat(sys.argv[3])
        assert store.acquire_lease(sys.argv[2], "thief", ttl=timedelta(seconds=60), now=at)
    """
)


class PausedDuringQueue(ScriptedBackend):
    """The scripted backend (the pause is the point, and no real scheduler pauses on
    cue); during its next queue call another process takes the lease over, as it would
    once this holder's lease expired during a long pause."""

    take_over: list[str] | None = None

    async def queue(self, native_ids: Sequence[str]) -> Sequence[Observation]:
        argv, self.take_over = self.take_over, None
        if argv is not None:
            subprocess.run([PY, "-c", *argv], check=True, timeout=60, env=ENV)
        return await super().queue(native_ids)


async def test_a_holder_that_lost_its_lease_stops_before_it_writes(
    db_path: Path, clock: VirtualClock
) -> None:
    fake = PausedDuringQueue()
    tracker = Tracker(store=db_path, backends={"fake": fake}, clock=clock, lease_ttl=10.0)  # type: ignore[dict-item]
    run = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    native = run.items[0].native_id or ""
    await tracker.poll_once()  # holds the lease
    assert tracker.store.lease("fake") is not None
    later = clock.now() + timedelta(seconds=11)  # past this holder's lease
    fake.take_over = [_TAKE_OVER, str(db_path), "fake", later.isoformat()]
    clock.advance(1)
    fake.queue_answers[native] = Observation(
        native_id=native, source=Source.QUEUE, observed_at=clock.now(), state=State.RUNNING
    )
    calls = len(fake.queue_calls)
    report = await tracker.poll_once()
    assert len(fake.queue_calls) == calls + 1  # it asked (before it knew)...
    assert report.events == 0  # ...and wrote nothing it saw
    assert tracker.store.get_item(run.items[0].id).state is State.QUEUED
    clock.advance(1)
    await tracker.poll_once()  # the thief's lease is live: this process follows
    assert len(fake.queue_calls) == calls + 1
    lease = tracker.store.lease("fake")
    assert lease is not None
    assert lease.holder == "thief"
    await tracker.aclose()
