"""Leases: one poller per backend, on both stores (SQLite file and PostgreSQL), with
real concurrent processes for "exactly one holder"."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from attrs import evolve

import hpcstate as h
from hpcstate.runtime import Store
from hpcstate.runtime._store import Change, Lease, LeaseLost, open_store

from . import test_store
from .test_store import make_run, raw_sql

# The store tests' fixtures: every test here runs on an SQLite file and on PostgreSQL.
location = test_store.location
store = test_store.store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
TTL = timedelta(seconds=30)


def test_a_free_lease_is_taken_and_another_holder_is_refused(store: Store) -> None:
    assert store.lease("slurm") is None
    lease = store.acquire_lease("slurm", "host-a:100", ttl=TTL, now=T0)
    assert lease == Lease(
        backend="slurm",
        holder="host-a:100",
        generation=1,
        since=T0,
        renewed_at=T0,
        expires_at=T0 + TTL,
    )
    assert (
        store.acquire_lease("slurm", "host-b:200", ttl=TTL, now=T0 + timedelta(seconds=29)) is None
    )
    assert store.lease("slurm") == lease
    # Another backend has its own lease.
    other = store.acquire_lease("flux", "host-b:200", ttl=TTL, now=T0)
    assert other is not None
    assert other.holder == "host-b:200"
    assert [x.backend for x in store.leases()] == ["flux", "slurm"]


def test_renewal_extends_and_records_polls_and_scheduler_calls(store: Store) -> None:
    lease = store.acquire_lease("slurm", "a", ttl=TTL, now=T0)
    assert lease is not None
    t1, t2 = T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)
    lease = store.renew_lease(lease, ttl=TTL, now=t1, polled=True, scheduler_calls=2)
    lease = store.renew_lease(lease, ttl=TTL, now=t2, polled=False, scheduler_calls=1)
    status = store.lease("slurm")
    assert status is not None
    assert (status.holder, status.since, status.renewed_at) == ("a", T0, t2)
    assert status.expires_at == t2 + TTL
    assert status.last_poll_at == t1
    assert status.scheduler_calls == 3
    assert status.generation == 1
    # Acquiring again as the same holder renews it, same generation.
    again = store.acquire_lease("slurm", "a", ttl=TTL, now=t2 + timedelta(seconds=1))
    assert again is not None
    assert (again.generation, again.since) == (1, T0)


def test_an_expired_lease_is_taken_over_and_the_old_holder_stops(store: Store) -> None:
    store.create_run(make_run(count=1))
    old = store.acquire_lease("local", "a", ttl=TTL, now=T0)
    assert old is not None
    # Holder a pauses (kill -STOP, a long GC, a lost host) past its expiry.
    new = store.acquire_lease("local", "b", ttl=TTL, now=T0 + timedelta(seconds=31))
    assert new is not None
    assert (new.holder, new.generation, new.since) == ("b", 2, T0 + timedelta(seconds=31))
    # a wakes up: its renewal fails, and what it observed under the lost lease is not
    # written (the fencing token), while b's write lands.
    with pytest.raises(LeaseLost, match="b took it over"):
        store.renew_lease(old, ttl=TTL, now=T0 + timedelta(seconds=32))
    item = store.get_item("r1.0")
    step_a = h.submitted(item, native_id="1", at=T0 + timedelta(seconds=32))
    with pytest.raises(LeaseLost, match="lost the lease of local"):
        store.commit(
            [Change(item=step_a.item, expected_version=0, events=step_a.events)], lease=old
        )
    assert store.get_item("r1.0").version == 0
    assert store.events(item_id="r1.0") == []
    step_b = h.submitted(item, native_id="2", at=T0 + timedelta(seconds=33))
    result = store.commit(
        [Change(item=step_b.item, expected_version=0, events=step_b.events)], lease=new
    )
    assert result.applied == ("r1.0",)
    assert store.get_item("r1.0").native_id == "2"
    # a cannot take it back while b renews.
    assert store.acquire_lease("local", "a", ttl=TTL, now=T0 + timedelta(seconds=40)) is None


def test_an_expired_lease_nobody_took_is_renewed_by_its_holder(store: Store) -> None:
    lease = store.acquire_lease("slurm", "a", ttl=TTL, now=T0)
    assert lease is not None
    late = store.renew_lease(lease, ttl=TTL, now=T0 + timedelta(minutes=5))
    assert (late.generation, late.expires_at) == (1, T0 + timedelta(minutes=5) + TTL)


def test_a_released_lease_is_free_at_once(store: Store) -> None:
    lease = store.acquire_lease("slurm", "a", ttl=TTL, now=T0)
    assert lease is not None
    assert store.release_lease(lease, now=T0 + timedelta(seconds=1))
    assert not store.release_lease(lease, now=T0 + timedelta(seconds=1))  # already
    status = store.lease("slurm")
    assert status is not None
    assert status.released
    assert not status.live(T0 + timedelta(seconds=2))
    taken = store.acquire_lease("slurm", "b", ttl=TTL, now=T0 + timedelta(seconds=2))
    assert taken is not None
    assert (taken.holder, taken.generation, taken.released) == ("b", 2, False)
    with pytest.raises(LeaseLost):
        store.renew_lease(lease, ttl=TTL, now=T0 + timedelta(seconds=3))


@pytest.mark.parametrize(
    ("column", "value"), [("expires_at", "not a time"), ("since", "2026-13-99")]
)
def test_a_damaged_lease_row_is_free_and_the_next_poller_rewrites_it(
    store: Store, location: str, column: str, value: str
) -> None:
    # A lease row that cannot be read used to raise CorruptRow from lease(), leases()
    # and acquire_lease(): no process could poll that backend ever again.
    _damaged_lease_row_is_rewritten(store, location, column, value)


def test_a_lease_row_with_a_damaged_generation_is_rewritten(db_path: Path) -> None:
    # Only SQLite's untyped column can hold text there (PostgreSQL's refuses it).
    with Store(db_path) as store:
        _damaged_lease_row_is_rewritten(store, str(db_path), "generation", "x")


def _damaged_lease_row_is_rewritten(store: Store, location: str, column: str, value: str) -> None:
    store.create_run(make_run(count=1))
    old = store.acquire_lease("slurm", "a", ttl=TTL, now=T0)
    assert old is not None
    flux = store.acquire_lease("flux", "a", ttl=TTL, now=T0)
    assert flux is not None
    raw_sql(location, f"UPDATE leases SET {column} = ? WHERE backend = ?", (value, "slurm"))
    assert store.lease("slurm") is None
    assert store.leases() == [flux]  # the damaged row hides no other
    with pytest.raises(LeaseLost):
        store.renew_lease(old, ttl=TTL, now=T0 + timedelta(seconds=1))
    item = store.get_item("r1.0")
    step = h.submitted(item, native_id="1", at=T0 + timedelta(seconds=1))
    with pytest.raises(LeaseLost):
        store.commit([Change(item=step.item, expected_version=0, events=step.events)], lease=old)
    assert store.get_item("r1.0").version == 0
    at = T0 + timedelta(seconds=2)
    new = store.acquire_lease("slurm", "b", ttl=TTL, now=at)
    assert new is not None
    assert (new.holder, new.since, new.expires_at) == ("b", at, at + TTL)
    assert new.generation == (2 if column != "generation" else 1)
    assert store.lease("slurm") == new
    result = store.commit(
        [Change(item=step.item, expected_version=0, events=step.events)], lease=new
    )
    assert result.applied == ("r1.0",)


_RACER = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime, timedelta, timezone
    from pathlib import Path
    from hpcstate.runtime._store import open_store

    where, go, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    store = open_store(where, sweep=False)
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    now = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    lease = store.acquire_lease("slurm", name, ttl=timedelta(seconds=30), now=now)
    print("won" if lease is not None else "lost", flush=True)
    """
)


def test_processes_racing_for_a_lease_exactly_one_wins(location: str, tmp_path: Path) -> None:
    with open_store(location):
        pass  # created and migrated before the race
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, location, str(go), f"p{n}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    for racer in racers:
        assert racer.stdout is not None
        assert racer.stdout.readline().strip() == "ready"
    go.touch()
    outcomes = [r.communicate(timeout=120)[0].strip() for r in racers]
    assert all(r.returncode == 0 for r in racers)
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]
    winner = f"p{outcomes.index('won')}"
    with open_store(location) as opened:
        lease = opened.lease("slurm")
        assert lease is not None
        assert (lease.holder, lease.generation) == (winner, 1)


# -- facts: what a holder's backend learned, for the next holder (SharesFacts) ----------


def test_renewal_stores_facts_and_none_keeps_them(store: Store) -> None:
    lease = store.acquire_lease("slurm", "a", ttl=TTL, now=T0)
    assert lease is not None
    assert lease.facts == {}
    t1, t2 = T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)
    lease = store.renew_lease(lease, ttl=TTL, now=t1, facts={"slurm_version": "22.05.11"})
    assert lease.facts == {"slurm_version": "22.05.11"}
    lease = store.renew_lease(lease, ttl=TTL, now=t2, polled=True)  # facts=None: kept
    assert lease.facts == {"slurm_version": "22.05.11"}
    status = store.lease("slurm")
    assert status is not None
    assert status.facts == {"slurm_version": "22.05.11"}
    # Facts can be replaced, and emptied.
    lease = store.renew_lease(lease, ttl=TTL, now=t2, facts={"slurm_version": "23.02.1", "é": "ü"})
    assert store.lease("slurm").facts == {"slurm_version": "23.02.1", "é": "ü"}  # type: ignore[union-attr]
    store.renew_lease(lease, ttl=TTL, now=t2, facts={})
    assert store.leases()[0].facts == {}


def test_a_takeover_keeps_the_facts_and_the_last_poll(store: Store) -> None:
    old = store.acquire_lease("slurm", "a", ttl=TTL, now=T0)
    assert old is not None
    polled_at = T0 + timedelta(seconds=10)
    store.renew_lease(
        old,
        ttl=TTL,
        now=polled_at,
        polled=True,
        scheduler_calls=4,
        facts={"slurm_version": "22.05.11"},
    )
    # a dies; b takes the expired lease over and reads what a learned and when it polled.
    at = T0 + timedelta(seconds=45)
    new = store.acquire_lease("slurm", "b", ttl=TTL, now=at)
    assert new is not None
    assert new == Lease(
        backend="slurm",
        holder="b",
        generation=2,
        since=at,
        renewed_at=at,
        expires_at=at + TTL,
        last_poll_at=polled_at,
        scheduler_calls=0,
        facts={"slurm_version": "22.05.11"},
    )
    assert store.lease("slurm") == new
    # The same after a clean release.
    assert store.release_lease(new, now=at + timedelta(seconds=1))
    third = store.acquire_lease("slurm", "c", ttl=TTL, now=at + timedelta(seconds=2))
    assert third is not None
    assert (third.generation, third.last_poll_at, third.facts) == (
        3,
        polled_at,
        {"slurm_version": "22.05.11"},
    )


def test_a_lease_is_frozen_with_its_facts() -> None:
    facts = {"slurm_version": "22.05.11"}
    lease = Lease(
        backend="slurm",
        holder="a",
        generation=1,
        since=T0,
        renewed_at=T0,
        expires_at=T0,
        facts=facts,
    )
    facts["slurm_version"] = "changed"
    assert lease.facts == {"slurm_version": "22.05.11"}
    with pytest.raises(TypeError):
        lease.facts["slurm_version"] = "x"  # type: ignore[index]
    # Still hashable, as before facts (equal leases hash alike).
    assert hash(lease) == hash(evolve(lease, facts={"slurm_version": "22.05.11"}))


@pytest.mark.parametrize("damage", ["not json", "[1, 2]", '{"slurm_version": 22}'])
def test_damaged_facts_read_as_none_and_the_lease_still_holds(
    store: Store, location: str, damage: str
) -> None:
    lease = store.acquire_lease("slurm", "a", ttl=TTL, now=T0)
    assert lease is not None
    store.renew_lease(lease, ttl=TTL, now=T0, facts={"slurm_version": "22.05.11"})
    raw_sql(location, "UPDATE leases SET facts = ? WHERE backend = ?", (damage, "slurm"))
    status = store.lease("slurm")
    assert status is not None
    assert (status.holder, status.generation, status.facts) == ("a", 1, {})
    # The holder keeps it (advice, not the lease), and its next facts repair the row.
    renewed = store.renew_lease(lease, ttl=TTL, now=T0 + timedelta(seconds=1), facts={"x": "y"})
    assert renewed.facts == {"x": "y"}
    assert store.lease("slurm").facts == {"x": "y"}  # type: ignore[union-attr]
