"""Running one race scenario: a tracking loop over the simulator, judged against the truth.

What is checked (see :func:`hpcstate.testing.simulator.judge_first_verdict` for rule 1):

1. **Zero wrong first verdicts.** The first ``Finished`` event of every item is judged
   against the simulator's truth the moment it is emitted: confirmed means the true state
   with a compatible exit; unconfirmed may only be COMPLETED or GONE; a failure for a job
   that succeeded is always wrong.
2. **Nothing stuck.** Once every job has ended and accounting is back, the storm stops
   (``cluster.calm()``); within ``grace + longest linger + longest accounting lag + 4
   polls`` every item must hold a *confirmed* verdict equal to the truth, except a job
   whose records were purged before anyone could read them (then GONE or an unconfirmed
   COMPLETED is the honest answer).
3. **No exception escapes** the loop (the test fails with it).
4. **Batched polling:** at most one queue call and one accounting call per poll.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, Protocol

from attrs import frozen

from hpcstate import Event, Finished, ReasonKind, RunItem, State
from hpcstate.backend import JobSpec
from hpcstate.testing.loop import ReferenceLoop
from hpcstate.testing.simulator import (
    Conditions,
    SimulatedBackend,
    SimulatedCluster,
    Truth,
    VirtualClock,
    judge_first_verdict,
)


class Loop(Protocol):
    """What the harness drives: hpcstate.testing.loop.ReferenceLoop, or TrackerLoop (the
    real Tracker)."""

    first_verdicts: dict[str, Finished]
    events: list[Event]
    calls_per_poll: list[tuple[int, int]]

    @property
    def illegal_transitions(self) -> int: ...  # IllegalTransitions skipped (and counted)

    async def submit(self, spec: JobSpec) -> list[str]: ...

    async def cancel(self, keys: list[str]) -> None: ...

    async def poll_once(self) -> None: ...

    def item(self, key: str) -> RunItem: ...

    def native_id(self, key: str) -> str | None: ...

    async def close(self) -> None: ...


POLL_S = 30.0
MAX_POLLS = 3000  # ~25 h of virtual time: far beyond any scenario's last event
GRACE = timedelta(seconds=600)


@frozen(kw_only=True)
class RaceReport:
    wrong: tuple[str, ...]
    stuck: tuple[str, ...]
    verdicts: int
    polls: int
    illegal: int  # IllegalTransitions a loop swallowed (the Tracker logs and counts them)
    crashes: tuple[str, ...] = ()  # exceptions that escaped the Tracker's poll_once
    max_calls_per_poll: tuple[int, int]


def run_sync(coro: Coroutine[Any, Any, RaceReport]) -> RaceReport:
    return asyncio.run(coro)


async def race(
    *,
    seed: int,
    conditions: Conditions,
    jobs: int,
    arrays: int = 0,
    cancels: int = 0,
    make_loop: Callable[[SimulatedBackend, VirtualClock], Loop] | None = None,
    poll_s: float = POLL_S,
    grace: timedelta = GRACE,
) -> RaceReport:
    clock = VirtualClock()
    cluster = SimulatedCluster(clock=clock, seed=seed, conditions=conditions)
    loop = (
        make_loop(cluster.backend(), clock)
        if make_loop is not None
        else reference_loop(cluster.backend(), clock, grace=grace)
    )
    try:
        return await _race(loop, cluster, seed, jobs, arrays, cancels, poll_s, grace)
    finally:
        await loop.close()


def reference_loop(
    backend: SimulatedBackend, clock: VirtualClock, *, grace: timedelta = GRACE
) -> ReferenceLoop:
    """The reference loop as the races drive it: every submit tagged, so a lost submit
    answer is found again by tag (the simulator declares idempotent_submit)."""
    return ReferenceLoop(backend, clock=clock, grace=grace, run_id="run", tag_prefix="ref")


def _truth(loop: Loop, cluster: SimulatedCluster, key: str) -> Truth | None:
    native_id = loop.native_id(key)
    return None if native_id is None else cluster.truth(native_id)


async def _race(
    loop: Loop,
    cluster: SimulatedCluster,
    seed: int,
    jobs: int,
    arrays: int,
    cancels: int,
    poll_s: float,
    grace: timedelta,
) -> RaceReport:
    clock = cluster.clock
    rng = random.Random(seed ^ 0x5EED)
    ids: list[str] = []
    for n in range(jobs):
        ids += await loop.submit(JobSpec(command=["job", str(n)]))
    for n in range(arrays):
        ids += await loop.submit(JobSpec(command=["task", str(n)], array=f"1-{rng.randint(2, 4)}"))
    cancel_at = {rng.randrange(1, 40): rng.choice(ids) for _ in range(cancels)}

    wrong: list[str] = []
    judged: set[str] = set()
    conds = cluster.conditions
    allowance = timedelta(
        seconds=grace.total_seconds()
        + conds.queue_linger_s[1]
        + conds.final_lag_s[1]
        + conds.record_lag_s[1]
        + 4 * poll_s
    )
    polls = 0
    while True:
        if polls in cancel_at:
            await loop.cancel([cancel_at[polls]])
        await loop.poll_once()
        polls += 1
        for key, event in list(loop.first_verdicts.items()):
            if key in judged:
                continue
            judged.add(key)
            truth = _truth(loop, cluster, key)
            if truth is None:
                # Cancelled before it was submitted, or its submit refused (the scheduler
                # was unreachable and nothing was created): both are true of a job that
                # never existed.
                if event.state is not State.CANCELLED and not _refused(loop.item(key)):
                    wrong.append(f"{key}: verdict {event.state} for a job never submitted")
                continue
            why = judge_first_verdict(
                truth, event.state, confirmed=event.confirmed, exit=event.exit
            )
            if why is not None:
                wrong.append(f"{key}: {why} (plan {cluster.plan(truth.native_id)})")
        now = clock.now()
        truths = [_truth(loop, cluster, key) for key in ids]
        everything_ended = all(t is not None and t.state is not None for t in truths)
        if cluster.calm_since is None and everything_ended and now >= cluster.accounting_back_at():
            cluster.calm()
        if cluster.calm_since is not None and (
            now > cluster.calm_since + allowance or not _unsettled(loop, cluster, ids)
        ):
            break
        if polls >= MAX_POLLS:
            break  # a job that never gets submitted (or never ends) must not hang the test
        await clock.sleep(poll_s)

    stuck = _unsettled(loop, cluster, ids)
    calls = loop.calls_per_poll
    return RaceReport(
        wrong=tuple(wrong),
        stuck=tuple(stuck),
        verdicts=len(judged),
        polls=polls,
        illegal=loop.illegal_transitions,
        crashes=tuple(dict.fromkeys(getattr(loop, "crashes", ()))),
        max_calls_per_poll=(max(c[0] for c in calls), max(c[1] for c in calls)),
    )


def _refused(item: RunItem) -> bool:
    """A confirmed failure that never ran: its submission was refused."""
    reason = item.stats.reason
    return (
        item.state is State.FAILED
        and item.confirmed
        and reason is not None
        and reason.kind is ReasonKind.SUBMIT_REJECTED
    )


def _unsettled(loop: Loop, cluster: SimulatedCluster, ids: list[str]) -> list[str]:
    """Items without their final, confirmed, true verdict (purged ones excepted)."""
    problems = []
    purge = cluster.conditions.purge_after_s
    now = cluster.clock.now()
    for native_id in ids:
        item = loop.item(native_id)
        truth = _truth(loop, cluster, native_id)
        if truth is None:
            if item.state is not State.CANCELLED and not _refused(item):
                problems.append(f"{native_id}: never submitted ({item.state})")
            continue
        if not item.terminal:
            problems.append(f"{native_id}: still {item.state} (truly {truth.state})")
        elif item.confirmed:
            if item.state is not truth.state:
                problems.append(f"{native_id}: ends confirmed {item.state}, truly {truth.state}")
        else:
            purged = (
                purge is not None
                and truth.ended_at is not None
                and now >= truth.ended_at + timedelta(seconds=purge)
            )
            if not purged or item.state not in (State.COMPLETED, State.GONE):
                problems.append(f"{native_id}: ends unconfirmed {item.state}, truly {truth.state}")
    return problems
