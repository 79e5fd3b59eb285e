"""A store written by an older hpcstate opens with today's code and keeps its data.

SQLite: a copy of a real store file made by the release of each schema
(``tests/schema/store/``). PostgreSQL: a database brought to the old schema by the
shipped migration steps (never edited once shipped), filled the way that release did.
Expected values are written by hand from ``tests/schema/store/README.md``.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hpcstate import State
from hpcstate.runtime._store import STORE_SCHEMA_VERSION, Lease, Store, open_store

from .test_store import postgres_schema_url

STORE_FILES = Path(__file__).resolve().parents[1] / "schema" / "store"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
TTL = timedelta(seconds=30)
SCHEMA_3_LEASE = Lease(
    backend="slurm",
    holder="host-a:100",
    generation=1,
    since=T0,
    renewed_at=T0 + timedelta(seconds=10),
    expires_at=T0 + timedelta(seconds=40),
    last_poll_at=T0 + timedelta(seconds=10),
    scheduler_calls=3,
)


def _schema_3_data_is_all_there(store: Store) -> None:
    assert store.schema_version == STORE_SCHEMA_VERSION == 4
    run = store.get_run("v3")
    assert run.name == "made by schema 3"
    assert [(i.id, i.state, i.native_id, i.version) for i in run.items] == [
        ("v3.0", State.QUEUED, "42", 1),
        ("v3.1", State.PENDING, None, 0),
    ]
    assert store.run_options("v3") == {"k": "v"}
    spec = store.run_spec("v3")
    assert spec is not None
    assert (list(spec.command or ()), spec.array) == (["echo", "hi"], "0-1")
    assert [(e.seq, type(e.event).__name__) for e in store.events(run_id="v3")] == [
        (1, "Submitted")
    ]
    assert [(r.item_id, dict(r.doc)) for r in store.open_self_reports()] == [("v3.0", {"exit": 0})]
    # The lease reads as it was written, with no facts (schema 3 had none) ...
    assert store.lease("slurm") == SCHEMA_3_LEASE
    assert store.lease("slurm").facts == {}  # type: ignore[union-attr]
    # ... and the new column works: facts are stored and a takeover keeps them.
    held = store.acquire_lease("slurm", "host-a:100", ttl=TTL, now=T0 + timedelta(seconds=20))
    assert held is not None
    renewed = store.renew_lease(
        held, ttl=TTL, now=T0 + timedelta(seconds=25), facts={"slurm_version": "22.05.11"}
    )
    assert renewed.facts == {"slurm_version": "22.05.11"}
    taken = store.acquire_lease("slurm", "host-b:200", ttl=TTL, now=T0 + timedelta(minutes=5))
    assert taken is not None
    assert (taken.generation, taken.facts) == (2, {"slurm_version": "22.05.11"})
    assert taken.last_poll_at == T0 + timedelta(seconds=10)


def test_an_sqlite_store_of_schema_3_opens_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "hpcstate.db"
    shutil.copyfile(STORE_FILES / "schema-3.db", path)
    with Store(path) as store:
        _schema_3_data_is_all_there(store)
    with Store(path) as again:  # migrated once: opens as today's schema
        assert again.schema_version == STORE_SCHEMA_VERSION
        assert again.get_item("v3.0").native_id == "42"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from postgres_schema_url()


@pytest.mark.postgres
def test_a_postgres_store_of_schema_3_opens_and_keeps_its_data(postgres_url: str) -> None:
    import psycopg

    from hpcstate.runtime import _pg_store

    old = sqlite3.connect(STORE_FILES / "schema-3.db")
    with psycopg.connect(postgres_url, autocommit=True) as db, db.transaction():
        for statement in _pg_store._META.split(";"):
            db.execute(statement)
        for step in _pg_store._MIGRATIONS[:3]:  # shipped steps: schema 3 as released
            if step.strip():
                db.execute(step)
        db.execute("UPDATE hpcstate_meta SET value = 3 WHERE key = 'schema'")
        # The same rows as the SQLite file of schema 3 (same SQL in both stores); the
        # serial columns (events.seq, self_reports.id) are numbered by the server.
        for table in ("runs", "items", "events", "self_reports", "leases"):
            cursor = old.execute(f"SELECT * FROM {table}")
            columns = [c[0] for c in cursor.description]
            serial = {"events": "seq", "self_reports": "id"}.get(table)
            keep = [i for i, name in enumerate(columns) if name != serial]
            columns = [columns[i] for i in keep]
            for whole in cursor:
                row = [whole[i] for i in keep]
                db.execute(
                    f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join(['%s'] * len(columns))})",
                    list(row),
                )
    old.close()
    with open_store(postgres_url) as store:
        _schema_3_data_is_all_there(store)
