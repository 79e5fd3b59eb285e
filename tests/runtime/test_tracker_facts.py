"""Lease facts (issue 16): a process that takes a backend's lease over adopts what the
previous holder learned about the scheduler (no version call of its own) and does not
ask the queue at once: its first queue call waits for the previous holder's last poll
plus its queue pace. Two Trackers on one real SQLite store, each with its own backend
that counts its calls (the version call, the queue calls): what no real scheduler here
lets us count exactly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hpcstate import Observation, Source, State
from hpcstate.backend import Capabilities, JobSpec
from hpcstate.runtime import Store, Tracker

from .fakes import ScriptedBackend, VirtualClock


class Versioned(ScriptedBackend):
    """Asks its scheduler's version before its first queue call, unless it adopted it
    (as the Slurm backend runs ``sbatch --version`` once)."""

    def __init__(self) -> None:
        super().__init__()
        self.capabilities = Capabilities(
            accounting=True, adopt=True, idempotent_submit=True, shares_facts=True
        )
        self.version: str | None = None
        self.version_calls = 0
        self.adopted: list[dict[str, str]] = []

    async def queue(self, native_ids: Sequence[str]) -> Sequence[Observation]:
        if self.version is None:
            self.version_calls += 1
            self.version = "22.05.8"
        return await super().queue(native_ids)

    def facts(self) -> Mapping[str, str]:
        return {} if self.version is None else {"scheduler_version": self.version}

    def adopt_facts(self, facts: Mapping[str, str]) -> None:
        self.adopted.append(dict(facts))
        found = facts.get("scheduler_version")
        if isinstance(found, str) and found:
            self.version = found


def _running(native_id: str, clock: VirtualClock) -> Observation:
    return Observation(
        native_id=native_id, state=State.RUNNING, source=Source.QUEUE, observed_at=clock.now()
    )


async def test_a_takeover_adopts_the_facts_and_waits_before_its_first_queue_call(
    db_path: Path,
) -> None:
    clock = VirtualClock()
    store = Store(db_path)
    first, second = Versioned(), Versioned()
    one = Tracker(store=store, backends={"fake": first}, clock=clock, holder="one", seed=1)
    two = Tracker(store=store, backends={"fake": second}, clock=clock, holder="two", seed=2)
    run = await one.submit(JobSpec(command=["x"]), backend="fake")
    native = run.items[0].native_id
    assert native is not None
    first.queue_answers[native] = second.queue_answers[native] = _running(native, clock)

    polled_at = clock.now()
    report = await one.poll_once()
    assert report.queue_calls == 1
    assert first.version_calls == 1
    lease = store.lease("fake")
    assert lease is not None
    assert lease.holder == "one"
    assert lease.last_poll_at == polled_at
    assert dict(lease.facts) == {"scheduler_version": "22.05.8"}  # renewed with them

    # The holder goes away (a clean exit releases its lease); the other one takes over
    # 0.2 s after the last poll: well inside one queue pace (fast_interval, 1 s).
    await one.aclose()
    clock.advance(0.2)
    report = await two.poll_once()
    taken = store.lease("fake")
    assert taken is not None
    assert taken.holder == "two"
    assert second.adopted == [{"scheduler_version": "22.05.8"}]
    assert report.queue_calls == 0  # no queue call at once on a takeover
    assert second.queue_calls == []

    # Once the pace after the previous holder's last poll has passed, it asks, and
    # never asks for the version (adopted).
    clock.advance(1.0)
    report = await two.poll_once()
    assert report.queue_calls == 1
    assert second.queue_calls == [(native,)]
    assert second.version_calls == 0
    await two.aclose()
    store.close()


async def test_a_backend_without_shares_facts_is_not_given_any(db_path: Path) -> None:
    clock = VirtualClock()
    store = Store(db_path)
    first, second = Versioned(), Versioned()
    second.capabilities = Capabilities(accounting=True, adopt=True, idempotent_submit=True)
    one = Tracker(store=store, backends={"fake": first}, clock=clock, holder="one", seed=1)
    two = Tracker(store=store, backends={"fake": second}, clock=clock, holder="two", seed=2)
    run = await one.submit(JobSpec(command=["x"]), backend="fake")
    native = run.items[0].native_id
    assert native is not None
    first.queue_answers[native] = second.queue_answers[native] = _running(native, clock)
    await one.poll_once()
    await one.aclose()
    clock.advance(2.0)
    report = await two.poll_once()
    assert second.adopted == []
    assert report.queue_calls == 1  # the pace after the last poll has passed already
    assert second.version_calls == 1  # it learned the version itself
    taken = store.lease("fake")
    assert taken is not None
    # It declares nothing to share: the stored facts stay as the previous holder left them.
    assert dict(taken.facts) == {"scheduler_version": "22.05.8"}
    await two.aclose()
    store.close()
