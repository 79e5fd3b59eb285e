"""The PostgreSQL store: the SQLite store's semantics on a server many hosts share.

Selected by a ``postgresql://`` URL (:func:`hpcstate.runtime._store.open_store`). Needs
psycopg 3 (``pip install 'hpcstate[postgres]'``). Same tables, same documents, same
behaviour, by the same code: :class:`PostgresStore` is a :class:`Store` whose
connection speaks PostgreSQL. What differs, and why it keeps the semantics:

* Every write transaction first takes one transaction-scoped advisory lock, so writes
  are serialized as SQLite's are: a compare-and-set reads and writes versions with no
  other writer between, and the event log's ``seq`` grows in commit order (a follower
  that read up to ``seq`` N never misses an event committed later with a smaller one).
* The schema version lives in the table ``hpcstate_meta`` (SQLite: ``PRAGMA
  user_version``), as does a ``data_version`` counter that every write bumps (SQLite's
  ``PRAGMA data_version``): a cache stays current while it does not change.
* Every write transaction sends ``NOTIFY hpcstate_events`` (delivered at commit):
  :meth:`PostgresStore.wait_for_events` LISTENs, so followers on other hosts wake when
  a verdict lands instead of polling the server.
* ``items`` has a ``rowid`` column (BIGSERIAL): listings keep SQLite's insertion order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import urlsplit, urlunsplit

from ._errors import StoreEnvironmentError, StoreError, StoreFull, StoreReadOnly
from ._store import _LEASE_FACTS, _LEASES_TABLE, STORE_SCHEMA_VERSION, Store, SweepReport, is_url

log = logging.getLogger("hpcstate.runtime.store")

#: The advisory lock key of the store's writers (any constant; "hpcs" in ASCII).
_WRITE_LOCK: Final = 0x68706373
CHANNEL: Final = "hpcstate_events"

# _MIGRATIONS[n] turns a version-n database into version n+1, as the SQLite store's.
# The PostgreSQL store starts at the SQLite store's schema 2; step 0 -> 1 is empty.
_MIGRATIONS: Final[tuple[str, ...]] = (
    "",
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        backend TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        spec TEXT,
        options TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE items (
        rowid BIGSERIAL UNIQUE,
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id),
        backend TEXT NOT NULL,
        native_id TEXT,
        state TEXT NOT NULL,
        version BIGINT NOT NULL,
        updated_at TEXT NOT NULL,
        doc TEXT NOT NULL,
        submit_tag TEXT,
        submit_started_at TEXT,
        extra TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX items_run ON items(run_id);
    CREATE INDEX items_state ON items(state);
    CREATE INDEX items_native ON items(backend, native_id);
    CREATE TABLE events (
        seq BIGSERIAL PRIMARY KEY,
        item_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        version BIGINT NOT NULL,
        type TEXT NOT NULL,
        doc TEXT NOT NULL,
        UNIQUE (item_id, version)
    );
    CREATE INDEX events_run ON events(run_id, seq);
    CREATE TABLE self_reports (
        id BIGSERIAL PRIMARY KEY,
        run_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        reported_at TEXT NOT NULL,
        doc TEXT NOT NULL,
        consumed_at TEXT
    );
    CREATE INDEX self_reports_open ON self_reports(consumed_at);
    CREATE FUNCTION json_extract(doc TEXT, path TEXT) RETURNS TEXT
        LANGUAGE sql IMMUTABLE
        AS 'SELECT (doc::jsonb) #>> string_to_array(substr(path, 3), ''.'')';
    """,
    _LEASES_TABLE,
    _LEASE_FACTS,
)
assert len(_MIGRATIONS) == STORE_SCHEMA_VERSION

_META: Final = """
CREATE TABLE IF NOT EXISTS hpcstate_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO hpcstate_meta VALUES ('schema', 0), ('data_version', 0) ON CONFLICT DO NOTHING
"""


_QUERY_PASSWORD: Final = re.compile(r"(?i)((?:^|&)password=)[^&]*")


def redact(url: str) -> str:
    """The URL without its password (for messages and logs): the one before ``@`` and
    a ``password=`` parameter (libpq reads both)."""
    parts = urlsplit(url)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}:***@{netloc[1]}")
    parts = parts._replace(query=_QUERY_PASSWORD.sub(r"\1***", parts.query))
    return urlunsplit(parts)


_PLACEHOLDER: Final = re.compile(r"\?")


def _pg_sql(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (the store's SQL has no other
    ``?`` and no ``%``)."""
    return _PLACEHOLDER.sub("%s", sql)


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError(
            "a postgresql:// store needs psycopg 3, which is not installed; "
            "to add it: pip install 'hpcstate[postgres]'"
        ) from exc
    return psycopg


class _Connection:
    """The part of sqlite3.Connection the store's SQL uses, on a psycopg connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(_pg_sql(sql), list(params) if params else None)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            with self.conn.cursor() as cursor:
                cursor.executemany(_pg_sql(sql), rows)


class PostgresStore(Store):
    """The state database on a PostgreSQL server (``url``: ``postgresql://...``).

    Behaves as :class:`Store` (compare-and-set, append-only events, migrations, the
    sweep at open, prune). ``connect_timeout`` bounds each connection attempt (s)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        sweep: bool = True,
        connect_timeout: float = 10.0,
        **_sqlite_only: Any,  # busy_timeout, allow_network_fs: Store(url, ...) passes them
    ) -> None:
        self._psycopg = _import_psycopg()
        url = url or os.environ.get("HPCSTATE_DB", "")
        if not is_url(url):
            raise StoreError(f"not a postgresql:// URL: {redact(url)!r}")
        self.url = url
        self.location = redact(url)
        self.path = Path(self.location)  # for messages only: there is no file
        self._lock = threading.RLock()
        self._random = random.Random()
        self.lock_retries = 0
        self.read_only: str | None = None
        self._damaged_runs: dict[str, str] = {}
        self._connect_timeout = connect_timeout
        self._listener: Any = None
        self._conn: Any = None
        self._pg_connect()
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise
        self.last_sweep: SweepReport | None = None
        if sweep:
            self.last_sweep = self.sweep()

    @property
    def _duplicate_errors(self) -> tuple[type[BaseException], ...]:  # type: ignore[override]
        return (self._psycopg.errors.UniqueViolation,)

    # -- plumbing -----------------------------------------------------------------------

    def _pg_connect(self) -> None:
        try:
            self._conn = self._psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self._connect_timeout))
            )
        except self._psycopg.Error as exc:
            raise StoreEnvironmentError(
                f"cannot connect to the PostgreSQL store {self.location}: "
                f"{str(exc).strip() or type(exc).__name__}",
                location=self.location,
            ) from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
        listener, self._listener = self._listener, None
        if listener is not None and not listener.closed:
            listener.pgconn.finish()  # its socket, synchronously (no event loop needed)

    def _pg_error(self, exc: Exception) -> StoreError:
        errors = self._psycopg.errors
        text = str(exc).strip()
        if isinstance(exc, errors.DiskFull | errors.OutOfMemory):
            return StoreFull(
                f"the PostgreSQL store {self.location} is full ({text}); the change was not "
                "stored and nothing stored before is lost",
                location=self.location,
            )
        if isinstance(exc, errors.ReadOnlySqlTransaction):
            return StoreReadOnly(
                f"the PostgreSQL store {self.location} cannot be written ({text}); "
                "reading it works",
                location=self.location,
            )
        if isinstance(exc, errors.InsufficientPrivilege):
            return StoreEnvironmentError(
                f"the PostgreSQL store {self.location} refused: {text}", location=self.location
            )
        if isinstance(exc, self._psycopg.OperationalError):
            return StoreEnvironmentError(
                f"the PostgreSQL store {self.location} cannot be reached: {text}",
                location=self.location,
            )
        return StoreError(f"the PostgreSQL store {self.location}: {text}")

    def _alive(self) -> None:
        """Reconnect a connection the server closed (restart, idle timeout)."""
        if self._conn is None or self._conn.closed:
            log.info("reconnecting to %s", self.location)
            self._pg_connect()

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        """One transaction holding the store's write lock (writers are serialized, as
        SQLite's are); it bumps data_version and notifies followers at commit."""
        with self._lock:
            db = self._begin()
            try:
                yield cast(Any, db)
                db.execute("UPDATE hpcstate_meta SET value = value + 1 WHERE key = 'data_version'")
                db.execute(f"NOTIFY {CHANNEL}")
                db.execute("COMMIT")
            except self._duplicate_errors:
                self._rollback(db)
                raise
            except self._psycopg.Error as exc:
                self._rollback(db)
                raise self._pg_error(exc) from exc
            except BaseException:
                self._rollback(db)
                raise

    def _rollback(self, db: _Connection) -> None:
        if not self._conn.closed:
            with contextlib.suppress(self._psycopg.Error):
                db.execute("ROLLBACK")

    def _begin(self) -> _Connection:
        """BEGIN and take the write lock. A connection the server closed since the last
        call (a restart, an idle timeout, a terminated backend) is opened again and the
        BEGIN retried once: nothing was written yet, so that is safe (a failure later in
        the transaction is not retried: its outcome may be unknown)."""
        for attempt in (1, 2):
            self._alive()
            db = _Connection(self._conn)
            try:
                db.execute("BEGIN")
                db.execute("SELECT pg_advisory_xact_lock(?)", (_WRITE_LOCK,))
            except self._psycopg.Error as exc:
                self._rollback(db)
                if attempt == 2 or not self._conn.closed:
                    raise self._pg_error(exc) from exc
                log.info("connection to %s lost; writing again", self.location)
            else:
                return db
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _durable(self) -> Iterator[None]:
        """A PostgreSQL commit is durable already (``synchronous_commit``, on by
        default; a server that turns it off chose otherwise)."""
        yield

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            for attempt in (1, 2):
                self._alive()
                try:
                    return list(_Connection(self._conn).execute(sql, params).fetchall())
                except self._psycopg.OperationalError as exc:
                    if attempt == 2 or not self._conn.closed:
                        raise self._pg_error(exc) from exc
                    log.info("connection to %s lost; reading again", self.location)
                except self._psycopg.Error as exc:
                    raise self._pg_error(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _migrate(self) -> None:
        with self._lock:
            try:
                with self._conn.transaction():
                    self._conn.execute("SELECT pg_advisory_xact_lock(%s)", [_WRITE_LOCK])
                    for statement in _META.split(";"):
                        self._conn.execute(statement)
                    row = self._conn.execute(
                        "SELECT value FROM hpcstate_meta WHERE key = 'schema'"
                    ).fetchone()
                    version = int(row[0])
                    if version > STORE_SCHEMA_VERSION:
                        raise StoreError(
                            f"{self.location} has store schema {version}, newer than this "
                            f"hpcstate understands ({STORE_SCHEMA_VERSION}); upgrade hpcstate"
                        )
                    for step in range(version, STORE_SCHEMA_VERSION):
                        if _MIGRATIONS[step].strip():
                            self._conn.execute(_MIGRATIONS[step])
                        log.info("%s: store schema %d -> %d", self.location, step, step + 1)
                    self._conn.execute(
                        "UPDATE hpcstate_meta SET value = %s WHERE key = 'schema'",
                        [STORE_SCHEMA_VERSION],
                    )
            except self._psycopg.Error as exc:
                raise self._pg_error(exc) from exc

    def data_version(self) -> int:
        return int(self._read("SELECT value FROM hpcstate_meta WHERE key = 'data_version'")[0][0])

    @property
    def schema_version(self) -> int:
        return int(self._read("SELECT value FROM hpcstate_meta WHERE key = 'schema'")[0][0])

    def add_self_report(self, *, run_id: str, item_id: str, reported_at: datetime, doc: Any) -> int:
        from ._store import _dumps, format_time

        with self._write() as db:
            row = db.execute(
                "INSERT INTO self_reports (run_id, item_id, reported_at, doc) "
                "VALUES (?, ?, ?, ?) RETURNING id",
                (run_id, item_id, format_time(reported_at), _dumps(dict(doc))),
            ).fetchone()
            return int(row[0])

    # -- followers ----------------------------------------------------------------------

    async def wait_for_events(self, after: int, *, timeout: float) -> int:
        """Wait until the event log holds an event after ``after``, or ``timeout``
        seconds pass; returns :meth:`last_event_seq`. LISTENs on its own connection:
        a writer's NOTIFY (at its commit) wakes it; no polling of the server."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        reconnected = False
        while True:
            if self._listener is None or self._listener.closed:
                try:
                    self._listener = await self._psycopg.AsyncConnection.connect(
                        self.url,
                        autocommit=True,
                        connect_timeout=max(1, int(self._connect_timeout)),
                    )
                    await self._listener.execute(f"LISTEN {CHANNEL}")
                except self._psycopg.Error as exc:
                    raise self._pg_error(exc) from exc
            # Listening before looking: a commit between the two still wakes us.
            last = self.last_event_seq()
            remaining = deadline - loop.time()
            if last > after or remaining <= 0:
                return last
            try:
                async for _ in self._listener.notifies(timeout=remaining, stop_after=1):
                    pass
            except self._psycopg.Error as exc:
                # The server closed the listening connection (a restart, an idle
                # timeout): listen again once, then look again (nothing is missed).
                if reconnected or not self._listener.closed:
                    raise self._pg_error(exc) from exc
                log.info("listening connection to %s lost; listening again", self.location)
                reconnected = True
