"""Helpers for the tests against the real loopback Slurm cluster (scripts/slurm-cluster):
a small polling loop over backend.queue/backend.accounting + hpcstate.advance/tick."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import hpcstate
from hpcstate import (
    TERMINAL,
    Absence,
    Event,
    RunItem,
    SchedulerUnavailable,
    Source,
    State,
)
from hpcstate.backend import AccountingQuery, Backend

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "scripts" / "slurm-cluster"
SSHD = ROOT / "scripts" / "sshd-loopback"
UTC = timezone.utc


def cluster_status() -> str | None:
    """None when the cluster answers; otherwise why the tests must skip."""
    if not CLUSTER.exists():
        return "scripts/slurm-cluster is missing"
    try:
        done = subprocess.run(
            [str(CLUSTER), "status"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scripts/slurm-cluster status failed: {exc}"
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        return "Slurm cluster not running (scripts/slurm-cluster start): " + " / ".join(tail)
    return None


def cluster(action: str) -> None:
    subprocess.run([str(CLUSTER), action], check=True, capture_output=True, timeout=120)


def now() -> datetime:
    return datetime.now(UTC)


class Driver:
    """Tracks items the way a tracker would: one queue call and at most one accounting
    call per poll, for all items at once."""

    def __init__(self, backend: Backend, *, grace: timedelta = timedelta(minutes=5)) -> None:
        self.backend = backend
        self.grace = grace
        self.items: dict[str, RunItem] = {}
        self.events: list[Event] = []
        self.final_seen: set[str] = set()  # ids with a final accounting record applied
        self.polls = 0
        self.unavailable = 0  # polls where a source raised SchedulerUnavailable

    def track(self, native_id: str, *, name: str = "") -> None:
        at = now()
        item = hpcstate.new_item(id=native_id, run_id="live", backend="slurm", now=at, name=name)
        step = hpcstate.submitted(item, native_id=native_id, at=at)
        self.items[native_id] = step.item
        self.events.extend(step.events)

    def item(self, native_id: str) -> RunItem:
        return self.items[native_id]

    def done(self, native_id: str) -> bool:
        """A verdict with its final accounting record applied. An unconfirmed verdict
        (grace expired) is not done: accounting is still asked, as a tracker would."""
        return self.items[native_id].state in TERMINAL and native_id in self.final_seen

    def _apply(self, observations: Sequence[hpcstate.Observation]) -> None:
        for observation in observations:
            native_id = observation.native_id
            step = hpcstate.advance(self.items[native_id], observation)
            self.items[native_id] = step.item
            self.events.extend(step.events)
            if (
                observation.source is Source.ACCOUNTING
                and observation.final
                and step.item.state in TERMINAL
                and step.item.restarts == (observation.restarts or 0)
            ):
                self.final_seen.add(native_id)

    async def poll(self) -> None:
        self.polls += 1
        active = [i for i in self.items if not self.done(i)]
        if active:
            try:
                self._apply(await self.backend.queue(active))
            except SchedulerUnavailable:
                self.unavailable += 1
            # Accounting only for what the queue cannot settle: settling, vanished, verdicts.
            ask = [i for i in active if self.items[i].state not in (State.QUEUED, State.RUNNING)]
            if ask:
                submitted = [
                    self.items[i].stats.submitted_at or self.items[i].created_at for i in ask
                ]
                query = AccountingQuery(native_ids=ask, submitted_after=min(submitted))
                try:
                    self._apply(await self.backend.accounting(query))
                except SchedulerUnavailable:
                    self.unavailable += 1
        at = now()
        for native_id, item in list(self.items.items()):
            step = hpcstate.tick(item, now=at, grace=self.grace)
            self.items[native_id] = step.item
            self.events.extend(step.events)

    async def run_until(
        self,
        predicate: Callable[[Driver], bool] | None = None,
        *,
        timeout: float = 240.0,
        interval: float = 1.0,
    ) -> None:
        condition = predicate or (lambda d: all(d.done(i) for i in d.items))
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition(self):
            if asyncio.get_running_loop().time() > deadline:
                states = {i: f"{it.state}" for i, it in self.items.items() if not self.done(i)}
                raise AssertionError(f"not done after {timeout:.0f} s: {states}")
            await self.poll()
            if not condition(self):
                await asyncio.sleep(interval)


def queue_absent(observations: Sequence[hpcstate.Observation]) -> bool:
    return all(o.absence is Absence.ABSENT for o in observations)
