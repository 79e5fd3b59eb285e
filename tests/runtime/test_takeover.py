"""A lease taken over, in the runtime: what ``Leases.hold`` hands the pure rule
(hpcstate._poll.record_takeover) and what the Tracker does with it, on a real SQLite
store and a virtual clock. The backend is scripted (it counts its queue calls: no real
scheduler here lets us count them exactly); the rule itself is tested in
tests/core/test_takeover.py.

Expected counts are worked out by hand: a self-reporting job's queue is a safety net
asked every ``queue_interval`` (60 s); the previous holder's last poll counts as the last
queue call after a takeover from ANOTHER holder; our own lapsed lease back is no
takeover (our own memory of the last queue call stands)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from hpcstate import State
from hpcstate.runtime import Store, Tracker
from hpcstate.runtime._leases import Held, Leases

from .fakes import ScriptedBackend, VirtualClock
from .test_cadence import REPORTING, ReportingBackend, _seen


def test_hold_says_whether_the_lease_is_new_and_the_other_holders_last_poll(
    db_path: Path,
) -> None:
    clock = VirtualClock()
    store = Store(db_path)
    backend = ScriptedBackend()
    followed: list[str] = []
    one = Leases(store, holder="one", ttl=10, on_follow=followed.append)
    two = Leases(store, holder="two", ttl=10, on_follow=followed.append)
    t0 = clock.now()

    first = one.hold("fake", backend, t0)
    assert first is not None
    assert (first.taken, first.previous_poll, first.lease.generation) == (True, None, 1)
    renewed = one.hold("fake", backend, t0 + timedelta(seconds=1))
    assert renewed is not None
    assert renewed == Held(lease=renewed.lease)  # not taken, no previous poll
    one.renew(renewed.lease, t0 + timedelta(seconds=1), polled=True, scheduler_calls=1)
    assert two.hold("fake", backend, t0 + timedelta(seconds=5)) is None  # one's is live

    # One stops renewing; its lease expires at 1 + 10 s. Two takes it over at 12 s.
    taken = two.hold("fake", backend, t0 + timedelta(seconds=12))
    assert taken is not None
    assert (taken.taken, taken.lease.generation) == (True, 2)
    assert taken.previous_poll == t0 + timedelta(seconds=1)  # one's last poll
    two.renew(taken.lease, t0 + timedelta(seconds=13), polled=True, scheduler_calls=1)

    # Two pauses past its lease and takes it back: its own lease, no takeover.
    back = two.hold("fake", backend, t0 + timedelta(seconds=30))
    assert back is not None
    assert (back.taken, back.previous_poll, back.lease.generation) == (True, None, 3)
    # The same after a restart (nothing held in memory): the lease names us.
    restarted = Leases(store, holder="two", ttl=10, on_follow=followed.append)
    again = restarted.hold("fake", backend, t0 + timedelta(seconds=50))
    assert again is not None
    assert (again.taken, again.previous_poll, again.lease.generation) == (True, None, 4)
    assert followed == []
    store.close()


async def test_our_own_lapsed_lease_back_keeps_our_queue_pace(db_path: Path) -> None:
    clock = VirtualClock()
    backend = ReportingBackend()
    tracker = Tracker(
        store=db_path,
        backends={"fake": backend},
        clock=clock,
        holder="one",
        seed=1,  # type: ignore[dict-item]
        queue_interval=60,
    )
    run = await tracker.submit(REPORTING, backend="fake")
    native = run.items[0].native_id
    assert native is not None
    backend.queue_answers[native] = _seen(native, clock, State.RUNNING)
    assert (await tracker.poll_once()).queue_calls == 1  # t=0: the first poll asks
    clock.advance(5)
    assert (await tracker.poll_once()).queue_calls == 0  # t=5: the report file is watched
    # No loop runs, so no heartbeat: the lease (renewed at 5 s, ttl 10 s) lapses. At 61 s
    # the tracker takes its own lease back: 61 s since its queue call at 0, so the safety
    # net is due. (Taken for another holder's, the last poll at 5 s would count as the
    # last queue call: only 56 s, no call.)
    clock.advance(56)
    report = await tracker.poll_once()
    lease = tracker.store.lease("fake")
    assert lease is not None
    assert (lease.holder, lease.generation) == ("one", 2)
    assert report.queue_calls == 1
    await tracker.aclose()


async def test_a_takeover_keeps_a_reporting_jobs_safety_net_queue_interval_apart(
    db_path: Path,
) -> None:
    clock = VirtualClock()
    first, second = ReportingBackend(), ReportingBackend()
    one = Tracker(
        store=db_path,
        backends={"fake": first},
        clock=clock,
        holder="one",
        seed=1,  # type: ignore[dict-item]
        queue_interval=60,
    )
    two = Tracker(
        store=db_path,
        backends={"fake": second},
        clock=clock,
        holder="two",
        seed=2,  # type: ignore[dict-item]
        queue_interval=60,
    )
    t0 = clock.now()
    run = await one.submit(REPORTING, backend="fake")
    native = run.items[0].native_id
    assert native is not None
    first.queue_answers[native] = second.queue_answers[native] = _seen(native, clock, State.RUNNING)
    assert (await one.poll_once()).queue_calls == 1  # t=0
    clock.advance(5)
    assert (await one.poll_once()).queue_calls == 0  # t=5: its last poll
    await one.aclose()  # a clean exit hands the lease over at once

    # Two takes over at 6 s and polls every 5 s (renewing its lease): its first queue call
    # comes at 5 + 60 = 65 s, queue_interval after the previous holder's last poll; a
    # fresh process without the takeover would have asked at once.
    clock.advance(1)
    last = t0 + timedelta(seconds=64.9)
    calls = []
    while clock.now() < last:
        calls.append((await two.poll_once()).queue_calls)
        clock.advance(min(5.0, (last - clock.now()).total_seconds()))
    calls.append((await two.poll_once()).queue_calls)  # at 64.9 s
    assert calls == [0] * len(calls)
    assert len(calls) == 13  # 6, 11, ..., 61 and 64.9 s
    lease = two.store.lease("fake")
    assert lease is not None
    assert (lease.holder, lease.generation) == ("two", 2)  # taken over once, held since
    clock.advance(0.1)
    assert (await two.poll_once()).queue_calls == 1  # at 65 s
    assert second.queue_calls == [(native,)]
    await two.aclose()
