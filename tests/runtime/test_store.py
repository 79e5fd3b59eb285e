"""The store: real SQLite files, a real PostgreSQL server, real concurrent processes.

Tests that take the ``store`` (or ``location``) fixture run against BOTH stores: an
SQLite file and a fresh schema on the PostgreSQL server named by
``HPCSTATE_TEST_POSTGRES_URL`` (``scripts/postgres-loopback start`` prints one). Without
that server they skip, saying so; under ``HPCSTATE_REQUIRE_CLUSTER=1`` (CI) a skip fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from attrs import evolve

import hpcstate as h
from hpcstate import Marker, Run, RunItem, State
from hpcstate.backend import JobSpec
from hpcstate.runtime import CorruptRow, Store, StoreError, default_db_path
from hpcstate.runtime._store import STORE_SCHEMA_VERSION, Change, open_store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

# -- both stores -----------------------------------------------------------------------

POSTGRES_URL_ENV = "HPCSTATE_TEST_POSTGRES_URL"


def postgres_schema_url() -> Iterator[str]:
    """A URL of a fresh, empty schema on the test server (dropped afterwards); skips
    with the reason where there is no server."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_URL_ENV} is not set (scripts/postgres-loopback start prints it)")
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'hpcstate[postgres]')")
    try:
        admin = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL server at {url}: {exc}")
    schema = f"test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            joiner = "&" if "?" in url else "?"
            yield f"{url}{joiner}options={quote(f'-csearch_path={schema}')}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def location(request: pytest.FixtureRequest, db_path: Path) -> Iterator[str]:
    """Where a store is: an SQLite file's path, or a postgresql:// URL."""
    if request.param == "sqlite":
        yield str(db_path)
    else:
        yield from postgres_schema_url()


@pytest.fixture
def store(location: str) -> Iterator[Store]:
    with open_store(location) as opened:
        yield opened


@pytest.fixture
def sqlite_store(db_path: Path) -> Iterator[Store]:
    with Store(db_path) as opened:
        yield opened


def is_postgres(location: str) -> bool:
    return location.startswith("postgresql://")


def raw_sql(location: str, sql: str, params: Sequence[Any] = ()) -> None:
    """Change the store behind its back (as a bug, a hand edit or damage would)."""
    if is_postgres(location):
        import psycopg

        with psycopg.connect(location, autocommit=True) as server:
            server.execute(sql.replace("?", "%s"), list(params))
        return
    with sqlite3.connect(location) as db:
        db.execute(sql, params)
    db.close()


def make_run(run_id: str = "r1", count: int = 2) -> Run:
    items = [
        h.new_item(id=f"{run_id}.{i}", run_id=run_id, backend="local", now=T0, array_index=i)
        for i in range(count)
    ]
    return Run(id=run_id, backend="local", name="demo", created_at=T0, items=items)


def queued(item: RunItem, native: str = "42") -> h.Step:
    return h.submitted(item, native_id=native, at=T0 + timedelta(seconds=1))


def test_run_round_trip_with_spec(store: Store) -> None:
    spec = JobSpec(command=["echo", "a b"], time_limit=timedelta(minutes=5), array="0-1")
    store.create_run(make_run(), spec=spec, options={"x": 1})
    run = store.get_run("r1")
    assert [i.id for i in run.items] == ["r1.0", "r1.1"]
    assert run.items[0].state is State.PENDING
    assert store.run_spec("r1") == spec
    assert store.run_options("r1") == {"x": 1}


def test_duplicate_run_is_refused(store: Store) -> None:
    store.create_run(make_run())
    with pytest.raises(StoreError, match="already exists"):
        store.create_run(make_run())


def test_compare_and_set_rejects_a_stale_version(store: Store) -> None:
    store.create_run(make_run())
    item = store.get_item("r1.0")
    step = queued(item)
    first = store.commit([Change(item=step.item, expected_version=0, events=step.events)])
    assert first.applied == ("r1.0",)
    # A second writer that also read version 0 must lose, and its events must not land.
    other = queued(item, native="43")
    second = store.commit([Change(item=other.item, expected_version=0, events=other.events)])
    assert second.conflicts == ("r1.0",)
    assert store.get_item("r1.0").native_id == "42"
    assert [e.event.native_id for e in store.events(run_id="r1")] == ["42"]


_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from datetime import datetime, timezone
    import hpcstate as h
    from hpcstate.runtime._store import Change, open_store

    db, go, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    store = open_store(db, sweep=False)
    item = store.get_item("r1.0")          # both read version 0 before either writes
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    lost = 0
    while True:
        marker = h.Marker(code="writer", text=name)
        step = h.add_marker(item, marker, at=datetime.now(timezone.utc))
        result = store.commit([Change(item=step.item, expected_version=item.version,
                                      events=step.events)])
        if result.applied:
            break
        lost += 1
        item = store.get_item("r1.0")      # re-read what the winner wrote, try again
    print(f"done lost={lost}", flush=True)
    """
)


def test_two_processes_compare_and_set_exactly_one_wins(
    store: Store, location: str, tmp_path: Path
) -> None:
    store.create_run(make_run())
    go = tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, location, str(go), name],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("alpha", "beta")
    ]
    for writer in writers:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
    go.touch()
    outputs = [w.communicate(timeout=60)[0].strip() for w in writers]
    assert all(w.returncode == 0 for w in writers)
    # Exactly one lost its first compare-and-set and re-read before writing.
    assert sorted(outputs) == ["done lost=0", "done lost=1"]
    item = store.get_item("r1.0")
    assert item.version == 2
    assert {m.text for m in item.markers} == {"alpha", "beta"}  # neither overwrote the other
    assert [e.event.version for e in store.events(item_id="r1.0")] == [1, 2]


_LOCK_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    db.execute("COMMIT")
    """
)


def test_database_locked_is_retried_not_raised(db_path: Path) -> None:
    store = Store(db_path, busy_timeout=0.05)
    store.create_run(make_run())
    holder = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(db_path), "1.0"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    step = queued(store.get_item("r1.0"))
    result = store.commit([Change(item=step.item, expected_version=0, events=step.events)])
    holder.wait(timeout=30)
    assert result.applied == ("r1.0",)
    assert store.lock_retries > 0  # it did wait for the other process, and did not crash
    store.close()


def _corrupt(location: str, item_id: str, doc: str) -> None:
    raw_sql(location, "UPDATE items SET doc = ? WHERE id = ?", (doc, item_id))


def test_corrupt_row_is_named_and_the_others_survive(store: Store, location: str) -> None:
    store.create_run(make_run(count=3))
    _corrupt(location, "r1.1", "{not json")
    with pytest.raises(CorruptRow, match=r"table 'items', id 'r1\.1'") as info:
        store.get_run("r1")
    assert info.value.row_id == "r1.1"
    good, bad = store.active_items()
    assert [r.item.id for r in good] == ["r1.0", "r1.2"]
    assert [b.row_id for b in bad] == ["r1.1"]
    assert store.get_item("r1.2").state is State.PENDING
    report = store.sweep()
    assert report.corrupt == ("r1.1",)
    assert report.checked == 3


def test_row_failing_the_schema_is_a_corrupt_row(store: Store, location: str) -> None:
    store.create_run(make_run(count=2))
    doc = h.serial.item_to_dict(store.get_item("r1.0"))
    doc["state"] = "exploded"
    _corrupt(location, "r1.0", json.dumps(doc))
    with pytest.raises(CorruptRow, match=r"r1\.0"):
        store.get_item("r1.0")
    assert store.get_item("r1.1").id == "r1.1"


# The first store schema, written out by hand as it was released.
_V1_SCHEMA = """
CREATE TABLE runs (id TEXT PRIMARY KEY, backend TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',
                   created_at TEXT NOT NULL, spec TEXT);
CREATE TABLE items (id TEXT PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(id),
                    backend TEXT NOT NULL, native_id TEXT, state TEXT NOT NULL,
                    version INTEGER NOT NULL, updated_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL,
                     run_id TEXT NOT NULL, version INTEGER NOT NULL, type TEXT NOT NULL,
                     doc TEXT NOT NULL, UNIQUE (item_id, version));
PRAGMA user_version = 1;
"""


def test_old_store_schema_opens_and_is_migrated(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    item = queued(h.new_item(id="old.0", run_id="old", backend="slurm", now=T0)).item
    with sqlite3.connect(db_path) as db:
        db.executescript(_V1_SCHEMA)
        db.execute(
            "INSERT INTO runs VALUES ('old', 'slurm', 'legacy', '2026-03-01T12:00:00.000000Z', NULL)"
        )
        db.execute(
            "INSERT INTO items VALUES ('old.0', 'old', 'slurm', '42', 'queued', 1, "
            "'2026-03-01T12:00:01.000000Z', ?)",
            (json.dumps(h.serial.item_to_dict(item)),),
        )
    with Store(db_path) as store:
        assert store.schema_version == STORE_SCHEMA_VERSION
        assert store.get_run("old").items == (item,)
        assert store.run_options("old") == {}
        # The tables added since version 1 work.
        store.add_self_report(run_id="old", item_id="old.0", reported_at=T0, doc={"a": 1})
        assert [r.item_id for r in store.open_self_reports()] == ["old.0"]


def test_newer_store_schema_is_refused_clearly(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema 99, newer than this hpcstate"):
        Store(db_path)


def test_not_a_database_is_a_clear_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable hpcstate database"):
        Store(db_path)


def _broken_queued_item() -> RunItem:
    item = queued(h.new_item(id="r1.0", run_id="r1", backend="local", now=T0)).item
    # What a bug or a hand edit could leave: a queued item owning an execution.
    return evolve(
        item, handle="123:456:boot", stats=evolve(item.stats, started_at=T0 + timedelta(seconds=5))
    )


def test_invariant_sweep_repairs_counts_and_can_be_switched_off(location: str) -> None:
    with open_store(location) as store:
        store.create_run(make_run())
        broken = _broken_queued_item()
        assert h.check_invariants(broken)
        raw_sql(
            location,
            "UPDATE items SET doc = ?, version = 1, state = 'queued' WHERE id = 'r1.0'",
            (json.dumps(h.serial.item_to_dict(broken)),),
        )
    with open_store(location, sweep=False) as untouched:
        assert untouched.get_item("r1.0").handle == "123:456:boot"
        assert untouched.last_sweep is None
    with open_store(location) as swept:
        assert swept.last_sweep is not None
        assert swept.last_sweep.repaired == ("r1.0",)
        assert swept.last_sweep.checked == 2
        fixed = swept.get_item("r1.0")
        assert fixed.handle is None
        assert fixed.stats.started_at is None
        assert fixed.state is State.QUEUED
        assert fixed.version == 2
        assert h.check_invariants(fixed) == ()
        assert swept.sweep().repaired == ()  # idempotent


def test_prune_removes_only_old_finished_runs(store: Store) -> None:
    store.create_run(make_run("old", count=1))
    store.create_run(make_run("live", count=1))
    item = store.get_item("old.0")
    step = h.cancel_before_submit(item, at=T0)
    store.commit([Change(item=step.item, expected_version=0, events=step.events)])
    assert store.prune(older_than=timedelta(days=30), now=T0 + timedelta(days=1)) == 0
    assert store.prune(older_than=timedelta(days=30), now=T0 + timedelta(days=31)) == 1
    assert not store.has_run("old")
    assert store.has_run("live")  # still pending: never pruned
    assert store.events(run_id="old") == []


def test_list_runs_counts_states(store: Store) -> None:
    store.create_run(make_run("a", count=2))
    step = h.cancel_before_submit(store.get_item("a.0"), at=T0)
    store.commit([Change(item=step.item, expected_version=0, events=step.events)])
    (summary,) = store.list_runs()
    assert summary.item_count == 2
    assert summary.counts == {State.CANCELLED: 1, State.PENDING: 1}
    # Some items done, some still to go: the run is under way (the core's Run.status).
    assert summary.status is State.RUNNING
    assert summary.status is store.get_run("a").status
    assert store.list_runs(active_only=True)[0].id == "a"


def test_find_runs_by_native_id_uses_the_index(store: Store, location: str) -> None:
    for run_id, native in (("a", "42"), ("b", "43"), ("c", "42")):
        store.create_run(make_run(run_id, count=1))
        step = queued(store.get_item(f"{run_id}.0"), native=native)
        store.commit([Change(item=step.item, expected_version=0, events=step.events)])
    assert store.find_runs("local", "42") == ["a", "c"]  # a recycled id: oldest first
    assert store.find_runs("local", "43") == ["b"]
    assert store.find_runs("slurm", "42") == []
    assert store.find_runs("local", "4") == []
    if is_postgres(location):
        return  # PostgreSQL plans by table size: with 3 rows it scans, as it should
    plan = store._read(  # the lookup is an index search, not a scan of the items
        "EXPLAIN QUERY PLAN SELECT run_id FROM items WHERE backend = ? AND native_id = ?",
        ("local", "42"),
    )
    assert any("USING INDEX items_native" in str(row) for row in plan)


def test_unconfirmed_verdicts_leave_out_confirmed_and_old_ones(store: Store) -> None:
    store.create_run(make_run("a", count=3))
    later = T0 + timedelta(minutes=20)
    changes = []
    for index, (state, final) in enumerate(
        ((State.COMPLETED, True), (State.COMPLETED, False), (State.GONE, False))
    ):
        item = queued(store.get_item(f"a.{index}"), native=str(index)).item
        obs = h.Observation(
            native_id=str(index),
            source=h.Source.ACCOUNTING if final else h.Source.QUEUE,
            observed_at=T0 + timedelta(seconds=5),
            state=state if state is not State.GONE else None,
            absence=h.Absence.UNKNOWN if state is State.GONE else None,
            final=final,
        )
        step = h.advance(item, obs)
        if step.item.state is State.SETTLING:
            step = h.tick(step.item, now=later, grace=timedelta(seconds=60))
        changes.append(Change(item=step.item, expected_version=0))
    store.commit(changes)
    assert [i.state for i in store.get_run("a").items] == [
        State.COMPLETED,
        State.COMPLETED,
        State.GONE,
    ]
    rows, bad = store.unconfirmed_verdicts(T0)
    assert bad == []
    assert [r.item.id for r in rows] == ["a.1", "a.2"]
    assert store.unconfirmed_verdicts(later + timedelta(seconds=1)) == ([], [])


def test_unconfirmed_verdicts_name_a_document_that_is_not_json_and_keep_the_others(
    store: Store, location: str
) -> None:
    # The SQL filter reads each document as JSON (SQLite: "malformed JSON"; PostgreSQL:
    # "invalid input syntax for type json"): one damaged row used to fail the query,
    # and with it the accounting re-checks of every job.
    store.create_run(make_run("a", count=3))
    changes = []
    for index in range(3):
        item = queued(store.get_item(f"a.{index}"), native=str(index)).item
        obs = h.Observation(
            native_id=str(index),
            source=h.Source.QUEUE,
            observed_at=T0 + timedelta(seconds=5),
            state=State.COMPLETED,
            final=False,
        )
        step = h.advance(item, obs)
        step = h.tick(step.item, now=T0 + timedelta(minutes=20), grace=timedelta(seconds=60))
        changes.append(Change(item=step.item, expected_version=0))
    store.commit(changes)
    raw_sql(location, "UPDATE items SET doc = ? WHERE id = ?", ("{not json", "a.1"))
    rows, bad = store.unconfirmed_verdicts(T0)
    assert [r.item.id for r in rows] == ["a.0", "a.2"]
    assert len(bad) == 1
    assert "'a.1'" in str(bad[0])


def test_a_write_after_the_server_dropped_the_connection_connects_again(
    store: Store, location: str
) -> None:
    # A server restart, an idle timeout or a terminated backend closes the store's
    # connection: reads connected again, but the next write failed "cannot be reached"
    # (a CLI submit exited 74 against a healthy server).
    if not is_postgres(location):
        pytest.skip("PostgreSQL only: an SQLite file has no connection to lose")
    import psycopg

    with psycopg.connect(location, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [store._conn.info.backend_pid])  # type: ignore[attr-defined]
    store.create_run(make_run())
    assert [r.id for r in store.list_runs()] == ["r1"]


def test_events_can_skip_a_corrupt_row(store: Store, location: str) -> None:
    store.create_run(make_run("a", count=2))
    for index in range(2):
        step = queued(store.get_item(f"a.{index}"), native=str(index))
        store.commit([Change(item=step.item, expected_version=0, events=step.events)])
    raw_sql(location, "UPDATE events SET doc = '[1, 2]' WHERE item_id = 'a.0'")
    with pytest.raises(CorruptRow, match="events"):
        store.events()
    assert [e.event.item_id for e in store.events(skip_corrupt=True)] == ["a.1"]


def test_default_path_follows_env_and_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HPCSTATE_DB", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "hpcstate" / "hpcstate.db"
    monkeypatch.setenv("HPCSTATE_DB", str(tmp_path / "explicit.db"))
    assert default_db_path() == tmp_path / "explicit.db"
    with Store() as store:
        assert store.path == tmp_path / "explicit.db"


def test_wal_mode_is_on(sqlite_store: Store) -> None:
    with sqlite3.connect(sqlite_store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_marker_survives_round_trip(store: Store) -> None:
    store.create_run(make_run(count=1))
    item = store.get_item("r1.0")
    step = h.add_marker(item, Marker(code="x", text="ünïcode ✓"), at=T0)
    store.commit([Change(item=step.item, expected_version=0, events=step.events)])
    assert store.get_item("r1.0").markers == (Marker(code="x", text="ünïcode ✓"),)


# -- opening either store; PostgreSQL specifics ----------------------------------------


def test_open_store_picks_the_store_by_location(
    location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpcstate.runtime._pg_store import PostgresStore

    kind = PostgresStore if is_postgres(location) else Store
    for opened in (open_store(location), Store(location)):
        with opened:
            assert type(opened) is kind
            opened.create_run(make_run(f"r{secrets.token_hex(3)}", count=1))
    monkeypatch.setenv("HPCSTATE_DB", location)
    for from_env in (open_store(), Store()):
        with from_env:
            assert type(from_env) is kind
            assert len(from_env.list_runs()) == 2
            assert from_env.schema_version == STORE_SCHEMA_VERSION


@pytest.mark.postgres
def test_postgres_newer_store_schema_is_refused_clearly() -> None:
    for url in postgres_schema_url():
        with open_store(url):
            pass
        raw_sql(url, "UPDATE hpcstate_meta SET value = 99 WHERE key = 'schema'")
        with pytest.raises(StoreError, match="schema 99, newer than this hpcstate"):
            open_store(url)


@pytest.mark.postgres
def test_postgres_url_password_is_never_shown() -> None:
    for url in postgres_schema_url():
        with open_store(url) as store:
            assert ":***@" in store.location
            assert "hpcstate:hpcstate@" not in store.location
            with pytest.raises(StoreError) as info:
                store.get_run("nope")
            assert ":***@" in str(info.value)


def test_postgres_server_down_is_an_environment_error() -> None:
    from hpcstate.runtime import StoreEnvironmentError

    pytest.importorskip("psycopg")
    with pytest.raises(StoreEnvironmentError) as info:
        open_store("postgresql://u:secret@127.0.0.1:9/none?connect_timeout=2")
    assert "secret" not in str(info.value)
    assert info.value.location == "postgresql://u:***@127.0.0.1:9/none?connect_timeout=2"


def test_two_processes_creating_one_run_id_one_is_refused(store: Store, location: str) -> None:
    with open_store(location) as other:
        store.create_run(make_run("same"))
        with pytest.raises(StoreError, match="already exists"):
            other.create_run(make_run("same"))
        # The failed transaction left nothing half-written, and the store still writes.
        other.create_run(make_run("next"))
        assert [r.id for r in store.list_runs()] == ["next", "same"]


async def test_a_follower_is_woken_by_a_commit_in_another_process(
    store: Store, location: str
) -> None:
    store.create_run(make_run(count=1))
    before = store.last_event_seq()
    assert await store.wait_for_events(before, timeout=0.2) == before  # nothing new: times out
    writer = textwrap.dedent(
        """
        import sys
        from datetime import datetime, timedelta, timezone
        import hpcstate as h
        from hpcstate.runtime._store import Change, open_store
        with open_store(sys.argv[1], sweep=False) as store:
            item = store.get_item("r1.0")
            step = h.submitted(item, native_id="9", at=datetime.now(timezone.utc))
            store.commit([Change(item=step.item, expected_version=0, events=step.events)])
        """
    )
    waiting = asyncio.ensure_future(store.wait_for_events(before, timeout=60))
    await asyncio.sleep(0.3)  # the follower is waiting (and listening) before the write
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", writer, location)
    assert await proc.wait() == 0
    seq = await asyncio.wait_for(waiting, timeout=60)
    assert seq > before
    (event,) = store.events(after=before)
    assert isinstance(event.event, h.Submitted)
    assert event.event.native_id == "9"


async def test_a_follower_is_woken_by_a_commit_of_its_own_store(store: Store) -> None:
    store.create_run(make_run(count=1))
    before = store.last_event_seq()

    async def write_soon() -> None:
        await asyncio.sleep(0.3)
        item = store.get_item("r1.0")
        step = queued(item)
        store.commit([Change(item=step.item, expected_version=0, events=step.events)])

    writer = asyncio.ensure_future(write_soon())
    # Woken by the commit, long before its own 600 s timeout (wait_for fails first).
    seq = await asyncio.wait_for(store.wait_for_events(before, timeout=600), timeout=60)
    await writer
    assert seq == store.last_event_seq() > before


async def test_a_follower_whose_listening_connection_was_dropped_listens_again(
    store: Store, location: str
) -> None:
    # The server closed the LISTEN connection (a restart, an idle timeout): the next
    # wait raised "cannot be reached" although the server was up again.
    if not is_postgres(location):
        pytest.skip("PostgreSQL only: SQLite followers have no connection to lose")
    import psycopg

    store.create_run(make_run(count=1))
    before = store.last_event_seq()
    assert await store.wait_for_events(before, timeout=0.2) == before  # now listening
    with psycopg.connect(location, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(%s)",
            [store._listener.info.backend_pid],  # type: ignore[attr-defined]
        )

    async def write_soon() -> None:
        await asyncio.sleep(0.5)
        with open_store(location, sweep=False) as other:
            step = queued(other.get_item("r1.0"))
            other.commit([Change(item=step.item, expected_version=0, events=step.events)])

    writer = asyncio.ensure_future(write_soon())
    seq = await asyncio.wait_for(store.wait_for_events(before, timeout=600), timeout=60)
    await writer
    assert seq == store.last_event_seq() > before


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://hpcstate:s3cret@127.0.0.1:1/db",
        "postgresql://127.0.0.1:1/db?user=hpcstate&password=s3cret&sslmode=disable",
        "postgres://127.0.0.1:1/db?PASSWORD=s3cret",
    ],
)
def test_a_password_in_the_url_is_never_shown(url: str) -> None:
    # libpq takes a password before the @ and as a password= parameter: the second was
    # shown in every message and log line naming the store.
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError) as info:
        open_store(url)  # nothing listens on port 1: cannot be reached
    assert "s3cret" not in str(info.value)
    assert "127.0.0.1:1/db" in str(info.value)
