"""The SQLite store: runs, items, events, self-reports and leases in one file.

:func:`open_store` opens a store from a path or a ``postgresql://`` URL; the
PostgreSQL store (``_pg_store``) is this class on another connection, same semantics.

* WAL journal, ``busy_timeout``, and every write transaction begun IMMEDIATE: readers
  never block writers, and "database is locked" is retried with backoff, never raised
  to the caller as a crash.
* Every item change is a compare-and-set on (item id, version): of two processes that
  read the same version, exactly one write lands; the other learns it lost and
  re-reads.
* Items are JSON documents (``hpcstate.serial``) plus indexed columns; events are
  append-only, unique per (item, version).
* ``PRAGMA user_version`` is the store's schema version; :data:`_MIGRATIONS` upgrades
  an old file in place, step by step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from itertools import chain
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeGuard, TypeVar

from attrs import evolve, field, frozen

from hpcstate import (
    Event,
    Run,
    RunItem,
    SchemaError,
    State,
    check_invariants,
)
from hpcstate._machine import repair
from hpcstate._model import status_of
from hpcstate._states import ACTIVE
from hpcstate.backend import JobSpec
from hpcstate.serial import (
    DocumentWriter,
    dumps,
    event_from_dict,
    item_from_dict,
    spec_from_json,
    spec_to_json,
)

from ._errors import (
    CorruptRow,
    StoreEnvironmentError,
    StoreError,
    StoreFull,
    StoreReadOnly,
    StoreUnsafeFilesystem,
)
from ._store_fs import network_filesystem

log = logging.getLogger("hpcstate.runtime.store")

T = TypeVar("T")

#: The schema this hpcstate writes (``PRAGMA user_version``).
STORE_SCHEMA_VERSION: Final = 4

#: The active states as stored in the ``state`` column (for SQL), from the core's ACTIVE.
ACTIVE_STATES: Final = tuple(sorted(state.value for state in ACTIVE))

#: The leases table (the same SQL in both stores).
_LEASES_TABLE: Final = """
    CREATE TABLE leases (
        backend TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        generation INTEGER NOT NULL,
        since TEXT NOT NULL,
        renewed_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        last_poll_at TEXT,
        scheduler_calls INTEGER NOT NULL DEFAULT 0,
        released INTEGER NOT NULL DEFAULT 0
    );
    """

#: What a lease's holder learned about its scheduler, for the next holder (the same
#: SQL in both stores): a JSON object of strings.
_LEASE_FACTS: Final = "ALTER TABLE leases ADD COLUMN facts TEXT NOT NULL DEFAULT '{}'"

# _MIGRATIONS[n] turns a version-n database into version n+1. Never edit a shipped
# step: add a new one.
_MIGRATIONS: Final[tuple[str, ...]] = (
    # 0 -> 1: the first release: runs, items, events.
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        backend TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        spec TEXT
    );
    CREATE TABLE items (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id),
        backend TEXT NOT NULL,
        native_id TEXT,
        state TEXT NOT NULL,
        version INTEGER NOT NULL,
        updated_at TEXT NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX items_run ON items(run_id);
    CREATE INDEX items_state ON items(state);
    CREATE INDEX items_native ON items(backend, native_id);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        item_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        type TEXT NOT NULL,
        doc TEXT NOT NULL,
        UNIQUE (item_id, version)
    );
    CREATE INDEX events_run ON events(run_id, seq);
    """,
    # 1 -> 2: self-reports; per-run options; submit intent and runtime data per item.
    """
    ALTER TABLE runs ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE items ADD COLUMN submit_tag TEXT;
    ALTER TABLE items ADD COLUMN submit_started_at TEXT;
    ALTER TABLE items ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
    CREATE TABLE self_reports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        reported_at TEXT NOT NULL,
        doc TEXT NOT NULL,
        consumed_at TEXT
    );
    CREATE INDEX self_reports_open ON self_reports(consumed_at);
    """,
    # 2 -> 3: one poller per backend (leases).
    _LEASES_TABLE,
    # 3 -> 4: lease facts (what the holder learned about its scheduler).
    _LEASE_FACTS,
)

#: Page size of a new store file. The worst poll rewrites 100k item rows (~1 KB each)
#: and appends 200k event rows: with 16 KiB pages SQLite does that, and the checkpoint
#: after it, measurably faster than with the default 4 KiB (bench/runtime_poll.py).
#: An existing file keeps the size it was made with.
_PAGE_SIZE: Final = 16384
_BATCH: Final = 2000  # item documents encoded and written per executemany
_LOCKED_ATTEMPTS: Final = 60  # with backoff capped at 1 s: about a minute of contention


def default_db_path() -> Path:
    """``$HPCSTATE_DB``, else ``$XDG_STATE_HOME/hpcstate/hpcstate.db`` (XDG's default
    state directory is ``~/.local/state``)."""
    explicit = os.environ.get("HPCSTATE_DB")
    if explicit:
        return Path(explicit).expanduser()
    return state_dir() / "hpcstate.db"


_URL_SCHEMES: Final = ("postgresql://", "postgres://")


def is_url(location: object) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL: a PostgreSQL store."""
    return isinstance(location, str) and location.startswith(_URL_SCHEMES)


def open_store(location: str | os.PathLike[str] | None = None, *, sweep: bool = True) -> Store:
    """THE way to open a state database: a ``postgresql://`` URL opens a PostgreSQL
    store (needs ``hpcstate[postgres]``), anything else is the path of an SQLite file;
    None means ``$HPCSTATE_DB`` (a URL or a path), else the default file
    (:func:`default_db_path`). Both kinds behave the same (:class:`Store`)."""
    if location is None:
        location = os.environ.get("HPCSTATE_DB") or None
    return Store(location, sweep=sweep)  # a URL makes it a PostgresStore (Store.__new__)


def state_dir() -> Path:
    """``$XDG_STATE_HOME/hpcstate`` (default ``~/.local/state/hpcstate``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser() / "hpcstate"


def format_time(value: datetime) -> str:
    """Fixed-width UTC text: sorts and compares as strings in SQL."""
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")[:26] + "Z"


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


# -- records ---------------------------------------------------------------------------


@frozen(kw_only=True)
class SweepReport:
    """What an invariant sweep found: ids of rows repaired, left broken, unreadable."""

    checked: int
    repaired: tuple[str, ...] = ()
    unrepairable: tuple[str, ...] = ()
    corrupt: tuple[str, ...] = ()


def _frozen_facts(facts: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(facts))


@frozen(kw_only=True)
class Lease:
    """Who polls a backend for everyone sharing the store, until when.

    ``generation`` grows by one each time the lease changes hands: a fencing token
    (pass the lease to :meth:`Store.commit` and a holder that lost it writes nothing).
    ``since`` is when this holder took it; ``last_poll_at`` and ``scheduler_calls``
    (its total under this generation) are what it reported at each renewal.
    ``facts`` is what the holder's backend learned about its scheduler and shares
    (``SharesFacts``, e.g. ``{"slurm_version": "22.05.11"}``). A takeover keeps
    ``facts`` and ``last_poll_at``: the new holder adopts the facts instead of asking
    again, and paces its first poll from the last one."""

    backend: str
    holder: str
    generation: int
    since: datetime
    renewed_at: datetime
    expires_at: datetime
    last_poll_at: datetime | None = None
    scheduler_calls: int = 0
    released: bool = False
    facts: Mapping[str, str] = field(factory=dict, converter=_frozen_facts, hash=False)

    def live(self, now: datetime) -> bool:
        """Held (not released) and not expired at ``now``."""
        return not self.released and now < self.expires_at


def _still_held(current: Lease | None, lease: Lease) -> TypeGuard[Lease]:
    """Whether the stored lease is still ``lease``: same holder, same generation, not
    released (a takeover bumps the generation, so an old holder can never write)."""
    return (
        current is not None
        and not current.released
        and (current.holder, current.generation) == (lease.holder, lease.generation)
    )


class LeaseLost(StoreError):
    """The lease this process polled under was taken over (or expired, or released):
    it must stop polling and write nothing it observed under it."""


@frozen(kw_only=True)
class StoredEvent:
    """An event with its position in the store's append-only log."""

    seq: int
    event: Event


@frozen(kw_only=True)
class RunSummary:
    """One run without its items' documents (for listings)."""

    id: str
    backend: str
    name: str
    created_at: datetime
    status: State
    item_count: int
    counts: Mapping[State, int] = field(factory=dict)
    #: Set when the run's own row is damaged: what is wrong, in one sentence (the text
    #: fields then show undecodable bytes as ``\\xNN``; ``get_run`` raises CorruptRow).
    damage: str | None = None


@frozen(kw_only=True)
class StoredReport:
    """A self-report row: ``doc`` is what the job wrote (see ``_report``)."""

    id: int
    run_id: str
    item_id: str
    reported_at: datetime
    doc: Mapping[str, Any]


@frozen(kw_only=True)
class Change:
    """One compare-and-set: write ``item`` if the stored version is ``expected_version``.

    ``extra`` replaces the item's runtime data; ``submit_tag``/``submit_started`` record
    a submit intent (``clear_submit`` removes it once the answer is stored)."""

    item: RunItem
    expected_version: int
    events: tuple[Event, ...] = ()
    extra: Mapping[str, Any] | None = None
    submit_tag: str | None = None
    submit_started: datetime | None = None
    clear_submit: bool = False


@frozen(kw_only=True)
class CommitResult:
    applied: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    last_seq: int = 0


@frozen(kw_only=True)
class ItemRow:
    """An item with the runtime data stored next to it."""

    item: RunItem
    extra: Mapping[str, Any]
    submit_tag: str | None
    submit_started_at: datetime | None


_dumps: Final = dumps  # compact JSON: every stored document


class _Documents:
    """Item and event documents (``hpcstate.serial.DocumentWriter``) and time columns,
    for one commit: the timestamps it formats are remembered until it is dropped."""

    __slots__ = ("_columns", "event", "item")

    def __init__(self) -> None:
        writer = DocumentWriter()
        self.item = writer.item
        self.event = writer.event
        self._columns: dict[datetime, str] = {}

    def column_time(self, value: datetime) -> str:
        """:func:`format_time`, remembered."""
        text = self._columns.get(value)
        if text is None:
            text = format_time(value)
            if value.tzinfo is timezone.utc and type(value) is datetime:
                self._columns[value] = text
        return text

    def update_row(self, change: Change) -> tuple[Any, ...]:
        """The parameters of :data:`_UPDATE_ITEM` for ``change``."""
        item = change.item
        return (
            item.native_id,
            item.state.value,
            item.version,
            self.column_time(item.updated_at),
            self.item(item),
            item.id,
            change.expected_version,
        )


_UPDATE_ITEM: Final = (
    "UPDATE items SET native_id = ?, state = ?, version = ?, updated_at = ?, doc = ? "
    "WHERE id = ? AND version = ?"
)
_INSERT_EVENT: Final = (
    "INSERT INTO events (item_id, run_id, version, type, doc) VALUES (?, ?, ?, ?, ?)"
)
#: Events per multi-row INSERT: 5 parameters each stays under 999, the smallest
#: SQLITE_MAX_VARIABLE_NUMBER (SQLite before 3.32).
_EVENT_ROWS: Final = 199
_INSERT_EVENT_ROWS: Final = (
    "INSERT INTO events (item_id, run_id, version, type, doc) VALUES "
    + ",".join(["(?, ?, ?, ?, ?)"] * _EVENT_ROWS)
)


def _update_plain(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        db.executemany(_UPDATE_ITEM, rows)


# -- repairs ---------------------------------------------------------------------------


# -- damage and the environment --------------------------------------------------------


class _Undecodable(str):
    """A text column whose bytes are not valid UTF-8 (decoded with surrogateescape, so
    no byte is lost). Decoders treat such a value as a damaged row."""

    __slots__ = ()


def _text(raw: bytes) -> str:
    """The connection's text_factory: a damaged text column never fails a whole query."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _Undecodable(raw.decode("utf-8", "surrogateescape"))


def _shown(value: object) -> str:
    """``value`` as printable text (an undecodable byte becomes ``\\xNN``)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return str(value)


def _damaged(columns: Mapping[str, object]) -> str | None:
    """A plain sentence naming the first column that is not valid UTF-8 text."""
    for name, value in columns.items():
        if isinstance(value, _Undecodable):
            return f"its {name} column holds bytes that are not valid UTF-8 text"
    return None


#: SQLite primary result codes (the low byte of an extended code).
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT = 3, 8, 10, 11
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 13, 14, 26


def _sqlite_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF
    text = str(exc)  # Python 3.10: the message is all there is
    for words, value in (
        ("disk is full", _SQLITE_FULL),
        ("readonly database", _SQLITE_READONLY),
        ("disk I/O error", _SQLITE_IOERR),
        ("malformed", _SQLITE_CORRUPT),
        ("not a database", _SQLITE_NOTADB),
        ("unable to open", _SQLITE_CANTOPEN),
    ):
        if words in text:
            return value
    return None


def _has_surrogates(value: object) -> bool:
    if isinstance(value, _Undecodable):
        return True
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _run_damage(backend: object, name: object, created: object) -> str | None:
    """What is wrong with a runs row's own columns, or None."""
    damage = _damaged({"backend": backend, "name": name, "created_at": created})
    if damage is not None:
        return damage
    for column, value in (("backend", backend), ("name", name)):
        if not isinstance(value, str):
            return f"its {column} column is {value!r}, not text"
    try:
        parse_time(created)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return f"its created_at column is {_shown(created)!r}, not a time"
    return None


def _disk_full(directory: Path) -> bool:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return False
    return stats.f_bavail == 0 or (stats.f_files > 0 and stats.f_favail == 0)


# -- the store -------------------------------------------------------------------------


#: SQLite's default ``wal_autocheckpoint``: the WAL is checkpointed once it holds this
#: many pages (here by :class:`_Checkpointer`, off the committing thread).
_CHECKPOINT_PAGES: Final = 1000
#: Checkpoints in a row (background ones, then one inline) that a WAL still past that
#: threshold gets: the last is run inline by the commit, as SQLite would have.
_CHECKPOINT_BEHIND: Final = 2
#: Seconds the checkpoint thread waits for work before it ends (a new one starts when
#: needed), so a store that is never closed does not keep a thread for long.
_CHECKPOINT_IDLE: Final = 30.0


class _Checkpointer:
    """Checkpoints a store's WAL from a second connection on a thread, so that the
    commit that wrote a large batch does not also copy it into the database file.

    The writer runs with ``wal_autocheckpoint = 0`` and ``journal_size_limit`` = the
    WAL's size at :data:`_CHECKPOINT_PAGES` pages (a WAL restarted after a checkpoint is
    cut back to it, so the file's size tells how much the WAL holds). After each commit,
    :meth:`after_commit` looks at that size: past the limit, it wakes the thread, which
    runs ``PRAGMA wal_checkpoint(PASSIVE)`` (what SQLite's automatic checkpoint runs;
    it never blocks readers or the writer). If the thread cannot start or its checkpoint
    failed, or the WAL stayed past the limit after a background checkpoint, or doubled
    while one ran, the commit checkpoints inline (logged, never raised).
    Nothing stored changes: a checkpoint copies committed pages, whoever runs it."""

    def __init__(self, path: Path, page_size: int) -> None:
        self._path = path
        self._wal = path.with_name(path.name + "-wal")
        #: The WAL file's size at _CHECKPOINT_PAGES pages (32-byte header, 24 per frame).
        self.limit = 32 + _CHECKPOINT_PAGES * (page_size + 24)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None  # the thread's own connection
        self._wanted = False  # a checkpoint is asked for and not yet started
        self._running = False
        self._closed = False
        self._over = 0  # background checkpoints in a row after which it stayed past
        self._requested = 0  # the WAL's size when the thread was last asked
        self._pid = os.getpid()
        #: Why background checkpoints stopped (None: they run); commits check inline.
        self.failed: str | None = None
        #: Checkpoints run by the thread, and inline by commits (for tests and logs).
        self.background = 0
        self.inline = 0
        _CHECKPOINTERS.add(self)

    def after_commit(self, inline: Callable[[], None]) -> None:
        """After each commit of the writer (holding the store's lock): wake the thread
        if the WAL is past the limit, or call ``inline`` if the thread cannot do it."""
        try:
            size = os.stat(self._wal).st_size
        except OSError:
            return
        if size <= self.limit:
            self._over = 0
            return
        # The WAL restarts (and is cut back to the limit) only when a write begins after
        # a checkpoint has copied all of it. While the thread works on it, later commits
        # (the same poll's small ones) leave it be, unless the WAL has doubled since (the
        # thread cannot keep up). A commit that finds it still past the limit after the
        # thread's checkpoint ended (a write began while it ran, so it did not restart)
        # checkpoints inline: only what was added since, as SQLite would have.
        with self._cond:
            if self.failed is None and not self._closed:
                if self._wanted or self._running:
                    if size <= 2 * self._requested:
                        return
                    why = "it doubled while the background checkpoint ran"
                elif self._over < _CHECKPOINT_BEHIND - 1:
                    self._over += 1
                    self._wanted = True
                    self._requested = size
                    if self._start():
                        self._cond.notify_all()
                        return
                    why = "no thread"
                else:
                    why = "it did not restart after the background checkpoint"
                log.debug("%s: checkpointing the WAL inline: %s", self._path, why)
        self._over = 0
        inline()
        self.inline += 1

    def _start(self) -> bool:
        """Start the thread if none runs (holding ``_cond``); False if it cannot."""
        if self._thread is not None:
            return True
        thread = threading.Thread(target=self._run, name="hpcstate-checkpoint", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # can't start new thread
            self._wanted = False
            self.failed = f"cannot start a thread: {exc}"
            log.warning("%s: %s; the WAL is checkpointed inline", self._path, self.failed)
            return False
        self._thread = thread
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._wanted and not self._closed:
                    if not self._cond.wait(_CHECKPOINT_IDLE) and not self._wanted:
                        break
                if self._closed or not self._wanted:
                    self._stop_locked()
                    return
                self._wanted = False
                self._running = True
            try:
                self._checkpoint()
            except Exception as exc:  # logged; the commits checkpoint inline from now on
                with self._cond:
                    self.failed = f"the background checkpoint failed: {exc!r}"
                    self._running = False
                    log.warning("%s: %s; the WAL is checkpointed inline", self._path, self.failed)
                    self._stop_locked()
                    self._cond.notify_all()
                return
            with self._cond:
                self._running = False
                self.background += 1
                self._cond.notify_all()

    def _stop_locked(self) -> None:
        """The thread's last act (holding ``_cond``): close its connection."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        self._thread = None

    def _checkpoint(self) -> None:
        if self._db is None:
            self._db = sqlite3.connect(
                str(self._path), timeout=1.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA synchronous = NORMAL")  # syncs as the writer's would
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def idle(self, timeout: float) -> bool:
        """Wait until no background checkpoint is pending or running (tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._wanted or self._running), timeout)

    def close(self) -> None:
        """Stop the thread: a checkpoint running finishes first (PASSIVE: it waits for
        no lock). After a fork, the parent's thread is not in this process: nothing to
        wait for (its connection is left alone, see :func:`_checkpointers_after_fork`)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _after_fork(self) -> None:
        """In a forked child: the thread did not come along; its connection belongs to
        the parent's SQLite state and is never used or closed here (SQLite's rule)."""
        if self._db is not None:
            _ABANDONED.append(self._db)
        self._db = None
        self._thread = None
        self._cond = threading.Condition()
        self._wanted = self._running = False
        self._pid = os.getpid()


_CHECKPOINTERS: weakref.WeakSet[_Checkpointer] = weakref.WeakSet()
_ABANDONED: list[sqlite3.Connection] = []


def _checkpointers_after_fork() -> None:
    for checkpointer in list(_CHECKPOINTERS):
        checkpointer._after_fork()


os.register_at_fork(after_in_child=_checkpointers_after_fork)


class Store:
    """The state database. ``path`` defaults to :func:`default_db_path`.

    ``sweep`` runs the invariant sweep when the file is opened. Safe to share between
    threads (calls are serialized) and between processes (SQLite locking + CAS).

    The environment's problems are :class:`StoreEnvironmentError` subclasses, each
    naming the file or directory: a state directory that cannot be created; a file
    (or directory) that can be read but not written, which is opened read-only so that
    reads work and every write raises :class:`StoreReadOnly`; a full disk
    (:class:`StoreFull`, the transaction is rolled back, nothing stored is lost); a
    network file system (:class:`StoreUnsafeFilesystem`, unless ``allow_network_fs``
    or ``HPCSTATE_ALLOW_NETWORK_FS=1``: then the file is used without WAL, safe only
    while one host at a time uses it). A damaged file is a :class:`StoreError` naming
    it; a damaged row is a :class:`CorruptRow` naming it, and never hides the others.
    """

    def __new__(cls, path: str | os.PathLike[str] | None = None, **_: Any) -> Store:
        # Store("postgresql://...") is a PostgresStore (see open_store); so is Store()
        # when HPCSTATE_DB is such a URL.
        if path is None:
            path = os.environ.get("HPCSTATE_DB") or None
        if cls is Store and is_url(path):
            from ._pg_store import PostgresStore

            return super().__new__(PostgresStore)
        return super().__new__(cls)

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        sweep: bool = True,
        busy_timeout: float = 5.0,
        allow_network_fs: bool | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.location = str(self.path)
        self._lock = threading.RLock()
        self._random = random.Random()
        #: How many times a write waited on another process's lock and retried.
        self.lock_retries = 0
        #: Why the store is read-only (None: it is writable).
        self.read_only: str | None = None
        self._text_factory: Callable[[bytes], str] = _text
        #: Runs whose own row is damaged, as list_runs showed them: id -> what is wrong.
        self._damaged_runs: dict[str, str] = {}
        #: Checkpoints the WAL off the committing thread (None: read-only or no WAL).
        self._checkpointer: _Checkpointer | None = None
        if allow_network_fs is None:
            allow_network_fs = os.environ.get("HPCSTATE_ALLOW_NETWORK_FS", "") == "1"
        journal = self._check_environment(allow_network_fs)
        self._db = self._connect(busy_timeout)
        try:
            # Only a new, empty file takes it (SQLite ignores it once the file exists).
            self._db.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            if self.read_only is None:
                self._retry_locked(
                    lambda: self._db.execute(f"PRAGMA journal_mode = {journal}").fetchone()
                )
                self._db.execute("PRAGMA synchronous = NORMAL")
                if journal == "WAL":
                    page_size = int(
                        self._retry_locked(lambda: self._db.execute("PRAGMA page_size").fetchone())[
                            0
                        ]
                    )
                    checkpointer = _Checkpointer(self.path, page_size)
                    self._db.execute("PRAGMA wal_autocheckpoint = 0")
                    self._db.execute(f"PRAGMA journal_size_limit = {checkpointer.limit}")
                    self._checkpointer = checkpointer
            self._migrate()
            self._read("SELECT COUNT(*) FROM sqlite_master")  # the schema pages are sound
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise self._error(exc, "is not a usable hpcstate database") from exc
        except StoreError as exc:
            self._db.close()
            cause = exc.__cause__
            if type(exc) is StoreError and isinstance(cause, sqlite3.DatabaseError):
                raise self._error(cause, "is not a usable hpcstate database") from cause
            raise
        except BaseException:
            self._db.close()
            raise
        self.last_sweep: SweepReport | None = None
        if sweep:
            try:
                self.last_sweep = self.sweep()
            except BaseException:
                self.close()
                raise
        # Reads decode text in C from now on; a query that meets bytes that are not
        # UTF-8 is read again with _text (see _read), so damage is named, not fatal.
        self._text_factory = self._db.text_factory = str

    def _check_environment(self, allow_network_fs: bool) -> str:
        """Create the state directory, decide read-only or not, refuse a network file
        system. Returns the journal mode to use."""
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if not self.path.exists():  # (an existing file in it can still be read)
                raise StoreEnvironmentError(
                    f"cannot create the state directory {directory} "
                    f"({exc.strerror or exc}); set HPCSTATE_DB or XDG_STATE_HOME to a "
                    "writable place",
                    location=str(directory),
                ) from exc
        unsafe = network_filesystem(self.path)
        journal = "WAL"
        if unsafe is not None:
            name, mount = unsafe
            if not allow_network_fs:
                raise StoreUnsafeFilesystem(
                    f"{self.path} is on {name} ({mount.fstype} mounted at "
                    f"{mount.mount_point}): SQLite's locking is not safe on a network file "
                    "system and the store could be damaged silently. Put the store on a "
                    "local disk (HPCSTATE_DB=/path/on/local/disk), or use a PostgreSQL "
                    "store (HPCSTATE_DB=postgresql://...); HPCSTATE_ALLOW_NETWORK_FS=1 "
                    "uses it anyway, without WAL, if only one host ever uses it",
                    location=str(self.path),
                )
            log.warning(
                "%s is on %s; used without WAL because HPCSTATE_ALLOW_NETWORK_FS=1: only "
                "one host at a time may use it",
                self.path,
                name,
            )
            journal = "DELETE"
        if self.path.exists():
            if not os.access(self.path, os.W_OK):
                self.read_only = f"the file {self.path} is not writable"
            elif not os.access(directory, os.W_OK | os.X_OK):
                self.read_only = f"its directory {directory} is not writable"
        elif not os.access(directory, os.W_OK | os.X_OK):
            raise StoreEnvironmentError(
                f"cannot create the state database {self.path}: the directory {directory} "
                "is not writable",
                location=str(directory),
            )
        return journal

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        target, uri = str(self.path), False
        if self.read_only is not None:
            target, uri = f"{self.path.absolute().as_uri()}?mode=ro", True
            wal = self.path.with_name(self.path.name + "-wal")
            if not os.access(self.path.parent, os.W_OK) and not wal.exists():
                # WAL readers need the -shm file, which nobody can create here: and
                # since nobody can write the WAL either, the file cannot change.
                target += "&immutable=1"
            log.info("%s opened read-only: %s", self.path, self.read_only)
        try:
            db = sqlite3.connect(
                target,
                timeout=busy_timeout,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                check_same_thread=False,
                uri=uri,
            )
        except sqlite3.Error as exc:
            raise self._error(exc, "cannot be opened") from exc
        db.text_factory = self._text_factory = _text  # while opening and sweeping
        try:
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        except sqlite3.Error as exc:
            db.close()
            raise self._error(exc, "cannot be opened") from exc
        return db

    def _error(self, exc: sqlite3.Error, what: str = "cannot be used") -> StoreError:
        """The StoreError (or environment error) for an SQLite failure, naming the file."""
        code = _sqlite_code(exc)
        where = str(self.path)
        if code == _SQLITE_FULL or (code == _SQLITE_IOERR and _disk_full(self.path.parent)):
            return StoreFull(
                f"the disk holding the state database {where} is full ({exc}); the change "
                "was not stored and nothing stored before is lost: free some space and retry",
                location=where,
            )
        if code == _SQLITE_READONLY:
            return StoreReadOnly(
                f"the state database {where} cannot be written ({exc}); reading it works",
                location=where,
            )
        if code in (_SQLITE_CANTOPEN, _SQLITE_PERM):
            return StoreEnvironmentError(
                f"the state database {where} cannot be opened ({exc})", location=where
            )
        if code == _SQLITE_IOERR:
            return StoreEnvironmentError(
                f"reading or writing the state database {where} failed ({exc})",
                location=where,
            )
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return StoreError(
                f"the state database {where} {what}: the file is damaged or is not an "
                f"hpcstate database ({exc}); copy it aside before changing it"
            )
        return StoreError(f"the state database {where} {what}: {exc}")

    # -- plumbing -----------------------------------------------------------------------

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
            self._db.close()

    def _checkpoint_inline(self) -> None:
        """A PASSIVE checkpoint on the writer's connection (what SQLite's automatic
        checkpoint does), when the background one cannot: logged, never raised."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("%s: checkpointing the WAL failed: %s", self.path, exc)

    def _retry_locked(self, action: Callable[[], T]) -> T:
        """Run ``action``; if another process holds the lock past busy_timeout, back off
        (with jitter) and try again. Any other SQLite failure is a StoreError."""
        delay = 0.01
        for attempt in range(_LOCKED_ATTEMPTS):
            try:
                return action()
            except sqlite3.OperationalError as exc:  # noqa: PERF203 (retry loop)
                text = str(exc)
                if "locked" not in text and "busy" not in text:
                    raise self._error(exc) from exc
                if attempt == _LOCKED_ATTEMPTS - 1:
                    raise StoreError(
                        f"state database {self.path} stayed locked by another process: {exc}"
                    ) from exc
                self.lock_retries += 1
                log.debug("database locked (attempt %d), retrying", attempt + 1)
                time.sleep(delay * (0.5 + self._random.random()))
                delay = min(1.0, delay * 2)
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            except UnicodeDecodeError as exc:
                raise StoreError(
                    f"the state database {self.path} holds text that is not UTF-8"
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction (takes the write lock up front). An SQLite failure
        inside rolls it back and is raised as a StoreError (StoreFull, StoreReadOnly...)."""
        if self.read_only is not None:
            raise StoreReadOnly(
                f"the state database {self.path} is read-only ({self.read_only}): "
                "reading works, changing it does not",
                location=str(self.path),
            )
        with self._lock:
            self._retry_locked(lambda: self._db.execute("BEGIN IMMEDIATE"))
            # What a write reads (versions, run ids to prune) may meet damaged text.
            self._db.text_factory = _text
            try:
                yield self._db
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
                    raise self._error(exc) from exc
                raise
            else:
                try:
                    self._retry_locked(lambda: self._db.execute("COMMIT"))
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                    raise
                if self._checkpointer is not None:
                    try:
                        self._checkpointer.after_commit(self._checkpoint_inline)
                    except Exception:  # never into the caller: the commit is done
                        log.warning("%s: checkpointing the WAL failed", self.path, exc_info=True)
            finally:
                self._db.text_factory = self._text_factory

    @contextlib.contextmanager
    def _durable(self) -> Iterator[None]:
        """Around a write that must survive a power loss or an OS crash, not only a
        killed process: WAL with ``synchronous=NORMAL`` (the store's setting, for
        speed) may lose the last commits then; ``FULL`` syncs the log at commit."""
        with self._lock:
            self._retry_locked(lambda: self._db.execute("PRAGMA synchronous = FULL"))
            try:
                yield
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA synchronous = NORMAL")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._retry_locked(lambda: self._db.execute(sql, params).fetchall())
            except StoreError as exc:
                cause = exc.__cause__
                if not isinstance(cause, UnicodeDecodeError) and "decode" not in str(cause):
                    raise
            # A damaged text column: read again, decoding each column in Python, so the
            # damaged rows are found and named and the others read (the slow path).
            self._db.text_factory = _text
            try:
                return self._retry_locked(lambda: self._db.execute(sql, params).fetchall())
            finally:
                self._db.text_factory = self._text_factory

    def _migrate(self) -> None:
        with self._lock:
            version = self._read("PRAGMA user_version")[0][0]
            if version > STORE_SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has store schema {version}, newer than this hpcstate "
                    f"understands ({STORE_SCHEMA_VERSION}); upgrade hpcstate"
                )
            if version == STORE_SCHEMA_VERSION:
                return
            if self.read_only is not None:
                raise StoreReadOnly(
                    f"{self.path} has store schema {version} and must be upgraded to "
                    f"{STORE_SCHEMA_VERSION}, but it is read-only ({self.read_only})",
                    location=str(self.path),
                )
            with self._write() as db:
                # Re-read under the write lock: another process may have migrated.
                version = db.execute("PRAGMA user_version").fetchone()[0]
                for step in range(version, STORE_SCHEMA_VERSION):
                    for statement in _MIGRATIONS[step].split(";"):
                        if statement.strip():
                            db.execute(statement)
                    log.info("%s: store schema %d -> %d", self.path, step, step + 1)
                db.execute(f"PRAGMA user_version = {STORE_SCHEMA_VERSION}")

    #: What a duplicate primary key raises (the PostgreSQL store has its own).
    _duplicate_errors: tuple[type[BaseException], ...] = (sqlite3.IntegrityError,)

    async def wait_for_events(self, after: int, *, timeout: float) -> int:
        """Wait until the event log holds an event after ``after`` (a ``seq``), or
        ``timeout`` seconds pass; returns :meth:`last_event_seq`. This store looks at
        SQLite's data_version (a cheap read of the file header) every 0.1 s and reads
        the log only when it moved: followers on one host need no server. The
        PostgreSQL store is woken by LISTEN/NOTIFY."""
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        seen: tuple[int, int] = (-1, -1)
        while True:
            # data_version moves on other connections' commits, total_changes on ours.
            version = (self.data_version(), self._db.total_changes)
            if version != seen:
                seen = version
                last = self.last_event_seq()
                if last > after:
                    return last
            remaining = deadline - loop.time()
            if remaining <= 0:
                return self.last_event_seq()
            await asyncio.sleep(min(0.1, remaining))

    def data_version(self) -> int:
        """Changes whenever ANOTHER connection commits (SQLite's PRAGMA data_version):
        a cache of this store is current while it stays the same."""
        return int(self._read("PRAGMA data_version")[0][0])

    @property
    def schema_version(self) -> int:
        return int(self._read("PRAGMA user_version")[0][0])

    # -- decoding -----------------------------------------------------------------------

    @staticmethod
    def _item_from_row(row_id: str, version: int, doc: str) -> RunItem:
        damage = _damaged({"id": row_id, "document": doc})
        if damage is not None:
            raise CorruptRow("items", _shown(row_id), damage)
        try:
            item = item_from_dict(json.loads(doc))
        except (ValueError, SchemaError, TypeError) as exc:
            raise CorruptRow("items", row_id, f"its document cannot be read: {exc}") from exc
        except Exception as exc:  # whatever the decoder raises, the row is unreadable
            raise CorruptRow("items", row_id, f"its document cannot be read: {exc!r}") from exc
        if item.id != row_id or item.version != version:
            raise CorruptRow(
                "items",
                row_id,
                f"its document says id {item.id!r} version {item.version}, "
                f"its columns say id {row_id!r} version {version!r}",
            )
        return item

    def _item_rows(
        self, where: str, params: Sequence[Any]
    ) -> tuple[list[ItemRow], list[CorruptRow]]:
        rows = self._read(
            "SELECT id, version, doc, extra, submit_tag, submit_started_at FROM items "
            f"WHERE {where} ORDER BY rowid",
            params,
        )
        good: list[ItemRow] = []
        bad: list[CorruptRow] = []
        for row_id, version, doc, extra, tag, started in rows:
            try:
                good.append(self._item_row(row_id, version, doc, extra, tag, started))
            except CorruptRow as exc:  # noqa: PERF203 (one bad row must not hide the others)
                bad.append(exc)
        return good, bad

    @classmethod
    def _item_row(
        cls, row_id: str, version: int, doc: str, extra: str, tag: str | None, started: str | None
    ) -> ItemRow:
        item = cls._item_from_row(row_id, version, doc)
        damage = _damaged({"extra": extra, "submit_tag": tag, "submit_started_at": started})
        if damage is not None:
            raise CorruptRow("items", row_id, damage)
        try:
            extra_doc = json.loads(extra) if extra else {}
        except ValueError as exc:
            raise CorruptRow("items", row_id, f"its extra column cannot be read: {exc}") from exc
        if not isinstance(extra_doc, dict):
            raise CorruptRow("items", row_id, "its extra column is not a JSON object")
        if tag is not None and not isinstance(tag, str):
            raise CorruptRow("items", row_id, f"its submit_tag column is {tag!r}, not text")
        try:
            started_at = parse_time(started) if started else None
        except (ValueError, TypeError) as exc:
            raise CorruptRow(
                "items", row_id, f"its submit_started_at column is {started!r}, not a time"
            ) from exc
        return ItemRow(item=item, extra=extra_doc, submit_tag=tag, submit_started_at=started_at)

    # -- runs -----------------------------------------------------------------------------

    def create_run(
        self,
        run: Run,
        *,
        spec: JobSpec | None = None,
        options: Mapping[str, Any] | None = None,
        extras: Mapping[str, Mapping[str, Any]] | None = None,
        events: Sequence[Event] = (),
    ) -> None:
        """Store a new run and its items (one transaction). ``extras`` maps item ids
        to runtime data; ``events`` are the items' first events (an adopted job's
        Submitted)."""
        extras = extras or {}
        documents = _Documents()
        with self._write() as db:
            try:
                db.execute(
                    "INSERT INTO runs (id, backend, name, created_at, spec, options) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        run.id,
                        run.backend,
                        run.name,
                        format_time(run.created_at),
                        spec_to_json(spec) if spec is not None else None,
                        _dumps(dict(options or {})),
                    ),
                )
            except self._duplicate_errors:
                raise StoreError(f"a run with id {run.id!r} already exists") from None
            db.executemany(
                "INSERT INTO items (id, run_id, backend, native_id, state, version, "
                "updated_at, doc, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        item.id,
                        item.run_id,
                        item.backend,
                        item.native_id,
                        item.state.value,
                        item.version,
                        format_time(item.updated_at),
                        documents.item(item),
                        _dumps(dict(extras.get(item.id, {}))),
                    )
                    for item in run.items
                ],
            )
            self._insert_events(db, events, documents)

    def get_run(self, run_id: str) -> Run:
        """The run with all its items. Raises StoreError if unknown, CorruptRow if one
        of its rows cannot be read (the message names the row)."""
        damage = self._damaged_runs.get(run_id)
        if damage is not None or _has_surrogates(run_id):
            raise CorruptRow("runs", _shown(run_id), damage or "its id is not valid UTF-8 text")
        rows = self._read("SELECT backend, name, created_at FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise StoreError(f"no run with id {run_id!r} in {self.path}")
        backend, name, created = rows[0]
        damage = _run_damage(backend, name, created)
        if damage is not None:
            raise CorruptRow("runs", run_id, damage)
        good, bad = self._item_rows("run_id = ?", (run_id,))
        if bad:
            raise bad[0]
        try:
            return Run(
                id=run_id,
                backend=backend,
                name=name,
                created_at=parse_time(created),
                items=tuple(r.item for r in good),
            )
        except Exception as exc:  # the items do not belong together (ids, backends)
            raise CorruptRow("runs", run_id, f"its items do not form a run: {exc}") from exc

    def has_run(self, run_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM runs WHERE id = ?", (run_id,)))

    def run_spec(self, run_id: str) -> JobSpec | None:
        rows = self._read("SELECT spec FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise StoreError(f"no run with id {run_id!r} in {self.path}")
        if rows[0][0] is None:
            return None
        damage = _damaged({"spec": rows[0][0]})
        if damage is not None:
            raise CorruptRow("runs", run_id, damage)
        try:
            return spec_from_json(rows[0][0])
        except Exception as exc:
            raise CorruptRow("runs", run_id, f"its job description cannot be read: {exc}") from exc

    def run_options(self, run_id: str) -> dict[str, Any]:
        rows = self._read("SELECT options FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise StoreError(f"no run with id {run_id!r} in {self.path}")
        damage = _damaged({"options": rows[0][0]})
        if damage is not None:
            raise CorruptRow("runs", run_id, damage)
        try:
            options = json.loads(rows[0][0])
        except (ValueError, TypeError) as exc:
            raise CorruptRow("runs", run_id, f"its options column cannot be read: {exc}") from exc
        if not isinstance(options, dict):
            raise CorruptRow("runs", run_id, "its options column is not a JSON object")
        return options

    def list_runs(self, *, active_only: bool = False, limit: int | None = None) -> list[RunSummary]:
        """Runs, newest first, with per-state item counts (no item documents loaded)."""
        sql = "SELECT id, backend, name, created_at FROM runs"
        if active_only:
            marks = ",".join("?" * len(ACTIVE_STATES))
            sql += f" WHERE id IN (SELECT run_id FROM items WHERE state IN ({marks}))"
        sql += " ORDER BY created_at DESC, id"
        params: list[Any] = list(ACTIVE_STATES) if active_only else []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        runs = self._read(sql, params)
        counts: dict[object, dict[State, int]] = {r[0]: {} for r in runs}
        if runs:
            for run_id, state, count in self._read(
                "SELECT run_id, state, COUNT(*) FROM items GROUP BY run_id, state"
            ):
                if run_id in counts:
                    with contextlib.suppress(ValueError):
                        counts[run_id][State(state)] = count
        out: list[RunSummary] = []
        for run_id, backend, name, created in runs:
            damage = _run_damage(backend, name, created) or (
                "its id is not valid UTF-8 text" if _has_surrogates(run_id) else None
            )
            try:
                created_at = parse_time(created)
            except (ValueError, TypeError):
                created_at = datetime(1970, 1, 1, tzinfo=timezone.utc)
            if damage is not None:
                # Listed (never hidden) with printable text; get_run names the damage.
                self._damaged_runs[_shown(run_id)] = damage
            out.append(
                RunSummary(
                    id=_shown(run_id),
                    backend=_shown(backend),
                    name=_shown(name),
                    created_at=created_at,
                    status=_status_of(counts.get(run_id, {})),
                    item_count=sum(counts.get(run_id, {}).values()),
                    counts=counts.get(run_id, {}),
                    damage=damage,
                )
            )
        return out

    # -- items ----------------------------------------------------------------------------

    def get_item(self, item_id: str) -> RunItem:
        return self.get_item_row(item_id).item

    def get_item_row(self, item_id: str) -> ItemRow:
        good, bad = self._item_rows("id = ?", (item_id,))
        if bad:
            raise bad[0]
        if not good:
            raise StoreError(f"no item with id {item_id!r} in {self.path}")
        return good[0]

    def active_items(self, backend: str | None = None) -> tuple[list[ItemRow], list[CorruptRow]]:
        """Items not yet terminal; unreadable rows come back separately (never hidden,
        never hiding the others)."""
        marks = ",".join("?" * len(ACTIVE_STATES))
        where = f"state IN ({marks})"
        params: list[Any] = list(ACTIVE_STATES)
        if backend is not None:
            where += " AND backend = ?"
            params.append(backend)
        return self._item_rows(where, params)

    def items_by_id(self, ids: Iterable[str]) -> tuple[list[ItemRow], list[CorruptRow]]:
        wanted: list[str] = []
        good: list[ItemRow] = []
        bad: list[CorruptRow] = []
        for item_id in ids:
            if _has_surrogates(item_id):  # a damaged id (from active_versions): cannot be bound
                bad.append(CorruptRow("items", _shown(item_id), "its id is not valid UTF-8 text"))
            else:
                wanted.append(item_id)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            g, b = self._item_rows(f"id IN ({','.join('?' * len(chunk))})", chunk)
            good += g
            bad += b
        return good, bad

    def active_versions(self) -> dict[str, int]:
        """id -> version of every active item: cheap, to see what others changed."""
        marks = ",".join("?" * len(ACTIVE_STATES))
        rows = self._read(f"SELECT id, version FROM items WHERE state IN ({marks})", ACTIVE_STATES)
        return dict(rows)

    def versions_of(self, ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        clean = [i for i in ids if not _has_surrogates(i)]
        for start in range(0, len(clean), 500):
            chunk = clean[start : start + 500]
            found.update(
                self._read(
                    f"SELECT id, version FROM items WHERE id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
            )
        return found

    def claim_submit(self, item_id: str, *, version: int, tag: str, at: datetime) -> bool:
        """Record the intent to submit a PENDING item under ``tag``. Returns False if
        the item changed or another process already claimed it: only one submits.

        The claim is on disk when this returns, even across a power loss or an OS
        crash (see :meth:`_durable`): a claim lost after the job went out would let
        a restarted tracker submit it again."""
        with self._durable(), self._write() as db:
            cursor = db.execute(
                "UPDATE items SET submit_tag = ?, submit_started_at = ? "
                "WHERE id = ? AND version = ? AND state = 'pending' AND submit_started_at IS NULL",
                (tag, format_time(at), item_id, version),
            )
            return cursor.rowcount == 1

    def release_submit(self, item_id: str, *, version: int) -> bool:
        """Drop a submit claim (the tag lookup said nothing was created)."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE items SET submit_started_at = NULL WHERE id = ? AND version = ?",
                (item_id, version),
            )
            return cursor.rowcount == 1

    def recent_terminal(self, since: datetime) -> tuple[list[ItemRow], list[CorruptRow]]:
        """Terminal items changed after ``since`` (unconfirmed ones may still be
        corrected by a late accounting record)."""
        marks = ",".join("?" * len(ACTIVE_STATES))
        return self._item_rows(
            f"state NOT IN ({marks}) AND updated_at > ?", [*ACTIVE_STATES, format_time(since)]
        )

    def unconfirmed_verdicts(self, since: datetime) -> tuple[list[ItemRow], list[CorruptRow]]:
        """COMPLETED or GONE items changed after ``since`` that no authoritative source
        confirmed (a late accounting record may still correct them). Confirmed rows are
        filtered out in SQL, so a day of finished work is not decoded for nothing."""
        where = (
            "state IN ('completed', 'gone') AND native_id IS NOT NULL AND updated_at > ?"
            " AND json_extract(doc, '$.stats.confirmed_by') IS NULL"
        )
        params = [format_time(since)]
        try:
            rows, bad = self._item_rows(where, params)
        except StoreError as exc:
            # An SQLite built without JSON functions, or ONE damaged document that the
            # SQL filter cannot read (SQLite: "malformed JSON"; PostgreSQL: "invalid
            # input syntax for type json"), which fails the whole query: filter in
            # Python instead, where a damaged row is named and never hides the others.
            # The environment's problems (unreachable, read-only...) are raised.
            if type(exc) is not StoreError:
                raise
            log.debug("unconfirmed verdicts read without the JSON filter: %s", exc)
            rows, bad = self._item_rows(where.rsplit(" AND json_extract", 1)[0], params)
        return [r for r in rows if not r.item.confirmed], bad

    def find_runs(self, backend: str, native_id: str) -> list[str]:
        """Ids of the runs with an item that is ``native_id`` on ``backend`` (oldest
        first; a recycled id may name jobs of several runs). Uses the
        ``(backend, native_id)`` index: no scan of the runs."""
        rows = self._read(
            "SELECT run_id FROM items WHERE backend = ? AND native_id = ? "
            "GROUP BY run_id ORDER BY MIN(rowid)",
            (backend, native_id),
        )
        return [r[0] for r in rows]

    def commit(self, changes: Sequence[Change], *, lease: Lease | None = None) -> CommitResult:
        """Apply compare-and-sets in one transaction. A change whose expected version is
        not the stored one is skipped (with its events) and listed in ``conflicts``.
        With ``lease`` (what a poller observed under), nothing is written and LeaseLost
        is raised if that lease changed hands or was released in the meantime.

        Holding the write lock, it reads the stored versions first, then writes the
        changes that match in batches (documents are encoded a batch at a time, so a
        poll of 100k changes does not hold 100k encoded documents at once)."""
        if not changes:
            return CommitResult()
        applied: list[str] = []
        conflicts: list[str] = []
        with self._write() as db:
            if lease is not None:
                current = self._held_lease(db, lease)
                if not _still_held(current, lease):
                    raise LeaseLost(
                        f"{lease.holder} lost the lease of {lease.backend}: "
                        f"{len(changes)} change(s) it observed were not stored"
                    )
            stored: dict[str, int] = {}
            ids = [c.item.id for c in changes]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                stored.update(
                    db.execute(
                        f"SELECT id, version FROM items WHERE id IN ({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                )
            winners: list[Change] = []
            for change in changes:
                if stored.get(change.item.id) == change.expected_version:
                    winners.append(change)
                    # A second change of the same item in this batch must build on this one.
                    stored[change.item.id] = change.item.version
                else:
                    conflicts.append(change.item.id)
            documents = _Documents()
            for start in range(0, len(winners), _BATCH):
                batch = winners[start : start + _BATCH]
                plain: list[tuple[Any, ...]] = []
                for change in batch:
                    if (
                        change.extra is None
                        and change.submit_tag is None
                        and not change.clear_submit
                    ):
                        plain.append(documents.update_row(change))
                    else:
                        _update_plain(db, plain)  # keep the order of the changes
                        plain = []
                        self._update_one(db, change, documents)
                _update_plain(db, plain)
                self._insert_events(db, [e for change in batch for e in change.events], documents)
                applied += (change.item.id for change in batch)
            last = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        if conflicts:
            log.info("compare-and-set lost for %d item(s): %s", len(conflicts), conflicts[:5])
        return CommitResult(applied=tuple(applied), conflicts=tuple(conflicts), last_seq=last)

    @staticmethod
    def _update_one(db: sqlite3.Connection, change: Change, documents: _Documents) -> None:
        sets = "native_id = ?, state = ?, version = ?, updated_at = ?, doc = ?"
        params = list(documents.update_row(change)[:5])
        if change.extra is not None:
            sets += ", extra = ?"
            params.append(_dumps(dict(change.extra)))
        if change.submit_tag is not None:
            sets += ", submit_tag = ?, submit_started_at = ?"
            started = change.submit_started
            params += [change.submit_tag, format_time(started) if started else None]
        elif change.clear_submit:
            sets += ", submit_started_at = NULL"
        db.execute(
            f"UPDATE items SET {sets} WHERE id = ? AND version = ?",
            [*params, change.item.id, change.expected_version],
        )

    @staticmethod
    def _insert_events(
        db: sqlite3.Connection, events: Sequence[Event], documents: _Documents
    ) -> None:
        """Append ``events`` in their order (``seq`` follows it). Whole groups of
        :data:`_EVENT_ROWS` go in one multi-row INSERT each (one statement per group
        instead of one per event)."""
        if not events:
            return
        rows = [(e.item_id, e.run_id, e.version, e.TAG, documents.event(e)) for e in events]
        whole = len(rows) - len(rows) % _EVENT_ROWS
        for start in range(0, whole, _EVENT_ROWS):
            group = list(chain.from_iterable(rows[start : start + _EVENT_ROWS]))
            db.execute(_INSERT_EVENT_ROWS, group)
        if whole < len(rows):
            db.executemany(_INSERT_EVENT, rows[whole:])

    # -- events ---------------------------------------------------------------------------

    def events(
        self,
        *,
        run_id: str | None = None,
        item_id: str | None = None,
        after: int = 0,
        limit: int | None = None,
        skip_corrupt: bool = False,
    ) -> list[StoredEvent]:
        """Events in log order (``seq``); per item that is version order. An unreadable
        row raises CorruptRow, or with ``skip_corrupt`` is logged and left out."""
        sql = "SELECT seq, item_id, doc FROM events WHERE seq > ?"
        params: list[Any] = [after]
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
        if item_id is not None:
            sql += " AND item_id = ?"
            params.append(item_id)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        out: list[StoredEvent] = []
        for seq, row_item, doc in self._read(sql, params):
            try:
                damage = _damaged({"item_id": row_item, "document": doc})
                if damage is not None:
                    raise ValueError(damage)
                event = event_from_dict(json.loads(doc))
            except Exception as exc:  # whatever the decoder raises, the row is unreadable
                problem = CorruptRow(
                    "events", str(seq), f"this event of item {_shown(row_item)!r}: {exc}"
                )
                if not skip_corrupt:
                    raise problem from exc
                log.error("%s (skipped)", problem)
                continue
            out.append(StoredEvent(seq=seq, event=event))
        return out

    def last_event_seq(self) -> int:
        return int(self._read("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0])

    # -- self-reports -------------------------------------------------------------------

    def add_self_report(
        self, *, run_id: str, item_id: str, reported_at: datetime, doc: Mapping[str, Any]
    ) -> int:
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO self_reports (run_id, item_id, reported_at, doc) VALUES (?, ?, ?, ?)",
                (run_id, item_id, format_time(reported_at), _dumps(dict(doc))),
            )
            return int(cursor.lastrowid or 0)

    def open_self_reports(self) -> list[StoredReport]:
        out: list[StoredReport] = []
        for row_id, run_id, item_id, reported, doc in self._read(
            "SELECT id, run_id, item_id, reported_at, doc FROM self_reports "
            "WHERE consumed_at IS NULL ORDER BY id"
        ):
            damage = _damaged(
                {"run_id": run_id, "item_id": item_id, "reported_at": reported, "doc": doc}
            )
            try:
                if damage is not None:
                    raise ValueError(damage)
                at = parse_time(reported)
            except (ValueError, TypeError) as exc:
                log.warning("self-report %s cannot be read (%s); ignored", row_id, exc)
                continue
            try:
                parsed = json.loads(doc)
            except (ValueError, TypeError):
                log.warning("self_reports row %s is not JSON; ignored", row_id)
                parsed = {}
            out.append(
                StoredReport(
                    id=row_id,
                    run_id=run_id,
                    item_id=item_id,
                    reported_at=at,
                    doc=parsed if isinstance(parsed, dict) else {},
                )
            )
        return out

    def has_open_self_reports(self) -> bool:
        return bool(self._read("SELECT 1 FROM self_reports WHERE consumed_at IS NULL LIMIT 1"))

    def consume_self_reports(self, ids: Sequence[int], *, at: datetime) -> None:
        if ids:
            with self._write() as db:
                db.executemany(
                    "UPDATE self_reports SET consumed_at = ? WHERE id = ?",
                    [(format_time(at), i) for i in ids],
                )

    # -- maintenance --------------------------------------------------------------------

    def sweep(self, *, now: datetime | None = None) -> SweepReport:
        """Repair rows that break the core's invariants; count and log, never raise."""
        checked = 0
        repaired: list[str] = []
        unrepairable: list[str] = []
        corrupt: list[str] = []
        try:
            rows = self._read("SELECT id, version, doc FROM items ORDER BY rowid")
        except StoreError as exc:
            log.error("could not check the stored jobs in %s: %s", self.path, exc)
            return SweepReport(checked=0)
        changes: list[Change] = []
        for row_id, version, doc in rows:
            checked += 1
            try:
                item = self._item_from_row(row_id, version, doc)
            except CorruptRow as exc:
                log.error("%s", exc)
                corrupt.append(_shown(row_id))
                continue
            problems = check_invariants(item)
            if not problems:
                continue
            step = repair(item, at=now or datetime.now(timezone.utc))
            if step is None:
                log.error(
                    "stored job %s is inconsistent and cannot be repaired: %s",
                    row_id,
                    "; ".join(problems),
                )
                unrepairable.append(row_id)
                continue
            log.warning("stored job %s was inconsistent, repaired: %s", row_id, "; ".join(problems))
            changes.append(
                Change(item=step.item, expected_version=item.version, events=step.events)
            )
        if changes and self.read_only is not None:
            log.warning(
                "%d stored job(s) in %s need a repair that cannot be written: %s",
                len(changes),
                self.path,
                self.read_only,
            )
        elif changes:
            try:
                result = self.commit(changes)
                repaired = list(result.applied)
            except StoreError as exc:
                log.error("could not store the repairs of %s: %s", self.path, exc)
        report = SweepReport(
            checked=checked,
            repaired=tuple(repaired),
            unrepairable=tuple(unrepairable),
            corrupt=tuple(corrupt),
        )
        if repaired or unrepairable or corrupt:
            log.warning(
                "checked the %d stored jobs in %s: %d repaired, %d could not be repaired, "
                "%d cannot be read",
                checked,
                self.path,
                len(repaired),
                len(unrepairable),
                len(corrupt),
            )
        return report

    # -- leases: one poller per backend ---------------------------------------------------

    def _stored_lease(self, db: Any, backend: str) -> Lease | None:
        row = db.execute(
            f"SELECT {_LEASE_COLUMNS} FROM leases WHERE backend = ?", (backend,)
        ).fetchone()
        return _lease_from_row(row) if row else None

    def _held_lease(self, db: Any, lease: Lease) -> Lease | None:
        """The stored lease of ``lease.backend`` for a holder checking it still holds
        it; a damaged row is a lost lease (nobody can prove to hold it; the next
        :meth:`acquire_lease` replaces the row)."""
        try:
            return self._stored_lease(db, lease.backend)
        except CorruptRow as exc:
            raise LeaseLost(
                f"{lease.holder} no longer holds the lease of {lease.backend}: {exc}"
            ) from exc

    @staticmethod
    def _damaged_lease_generation(db: Any, backend: str) -> int:
        """The generation of a damaged lease row, where that column still reads."""
        row = db.execute("SELECT generation FROM leases WHERE backend = ?", (backend,)).fetchone()
        try:
            return max(0, int(row[0])) if row else 0
        except (TypeError, ValueError, OverflowError):
            return 0

    @staticmethod
    def _put_lease(db: Any, lease: Lease, *, new: bool) -> None:
        values = (
            lease.holder,
            lease.generation,
            format_time(lease.since),
            format_time(lease.renewed_at),
            format_time(lease.expires_at),
            format_time(lease.last_poll_at) if lease.last_poll_at else None,
            lease.scheduler_calls,
            int(lease.released),
            _facts_text(lease.facts),
            lease.backend,
        )
        if new:
            db.execute(
                "INSERT INTO leases (holder, generation, since, renewed_at, expires_at, "
                "last_poll_at, scheduler_calls, released, facts, backend) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        else:
            db.execute(
                "UPDATE leases SET holder = ?, generation = ?, since = ?, renewed_at = ?, "
                "expires_at = ?, last_poll_at = ?, scheduler_calls = ?, released = ?, "
                "facts = ? WHERE backend = ?",
                values,
            )

    def acquire_lease(
        self, backend: str, holder: str, *, ttl: timedelta, now: datetime | None = None
    ) -> Lease | None:
        """Take the lease of ``backend`` for ``holder`` until ``now + ttl``, if it is
        free, expired, released or already ``holder``'s (then it is renewed). Returns
        None while another holder's lease is live. Of any number of processes that try
        at once, exactly one gets it (writes are serialized, the check is inside).
        A takeover (a new generation) keeps the previous row's ``facts`` and
        ``last_poll_at``, so the new holder reads them from the returned lease."""
        at = now or datetime.now(timezone.utc)
        with self._write() as db:
            try:
                current = self._stored_lease(db, backend)
            except CorruptRow as exc:
                # Nobody can prove to hold a lease whose row cannot be read (a holder
                # that tries gets LeaseLost): it is free, and this write replaces it.
                lease = Lease(
                    backend=backend,
                    holder=holder,
                    generation=self._damaged_lease_generation(db, backend) + 1,
                    since=at,
                    renewed_at=at,
                    expires_at=at + ttl,
                )
                self._put_lease(db, lease, new=False)
                log.warning("%s; %s took the lease over and rewrote the row", exc, holder)
                return lease
            if current is not None and current.live(at) and current.holder != holder:
                return None
            if current is not None and current.live(at):  # already ours
                lease = evolve(current, renewed_at=at, expires_at=at + ttl)
            else:
                lease = Lease(
                    backend=backend,
                    holder=holder,
                    generation=current.generation + 1 if current else 1,
                    since=at,
                    renewed_at=at,
                    expires_at=at + ttl,
                    last_poll_at=current.last_poll_at if current else None,
                    facts=current.facts if current else {},
                )
            self._put_lease(db, lease, new=current is None)
        if current is None or current.generation != lease.generation:
            log.info(
                "%s now polls %s (lease generation %d%s)",
                holder,
                backend,
                lease.generation,
                f", after {current.holder}" if current is not None else "",
            )
        return lease

    def renew_lease(
        self,
        lease: Lease,
        *,
        ttl: timedelta,
        now: datetime | None = None,
        polled: bool = False,
        scheduler_calls: int = 0,
        facts: Mapping[str, str] | None = None,
    ) -> Lease:
        """Extend ``lease`` to ``now + ttl`` (once per poll cycle), recording a poll
        (``polled``), the scheduler calls it made since the last renewal and, unless
        ``facts`` is None (then the stored ones stay), what its backend learned. Raises
        LeaseLost if another holder took it over or it was released: the caller must
        stop polling. An expired lease nobody took is renewed (nobody else polled)."""
        at = now or datetime.now(timezone.utc)
        with self._write() as db:
            current = self._held_lease(db, lease)
            if not _still_held(current, lease):
                raise LeaseLost(
                    f"{lease.holder} no longer holds the lease of {lease.backend} "
                    + (
                        f"({current.holder} took it over)"
                        if current is not None and current.holder != lease.holder
                        else "(it was released or taken over)"
                    )
                )
            renewed = evolve(
                current,
                renewed_at=at,
                expires_at=at + ttl,
                last_poll_at=at if polled else current.last_poll_at,
                scheduler_calls=current.scheduler_calls + scheduler_calls,
                facts=current.facts if facts is None else facts,
            )
            self._put_lease(db, renewed, new=False)
        return renewed

    def release_lease(self, lease: Lease, *, now: datetime | None = None) -> bool:
        """Give the lease up (a clean exit): another process may take it at once.
        False if it was not ``lease``'s any more (nothing changed then)."""
        at = now or datetime.now(timezone.utc)
        with self._write() as db:
            cursor = db.execute(
                "UPDATE leases SET released = 1, expires_at = ? "
                "WHERE backend = ? AND holder = ? AND generation = ? AND released = 0",
                (format_time(at), lease.backend, lease.holder, lease.generation),
            )
            return bool(cursor.rowcount == 1)

    def lease(self, backend: str) -> Lease | None:
        """The stored lease of ``backend`` (live or not; see :meth:`Lease.live`).
        A damaged row reads as None (no one holds it; :meth:`acquire_lease` replaces it)."""
        rows = self._read(f"SELECT {_LEASE_COLUMNS} FROM leases WHERE backend = ?", (backend,))
        return _readable_lease(rows[0]) if rows else None

    def leases(self) -> list[Lease]:
        """Every backend's stored lease (for ``hpcstate backends`` and metrics); a
        damaged row is left out (logged) and never hides the others."""
        rows = self._read(f"SELECT {_LEASE_COLUMNS} FROM leases ORDER BY backend")
        return [lease for lease in map(_readable_lease, rows) if lease is not None]

    def prune(self, *, older_than: timedelta, now: datetime) -> int:
        """Delete runs whose items are all terminal and unchanged for ``older_than``
        (with their events and self-reports). Returns the number of runs deleted."""
        cutoff = format_time(now - older_than)
        marks = ",".join("?" * len(ACTIVE_STATES))
        with self._write() as db:
            doomed = [
                r[0]
                for r in db.execute(
                    "SELECT run_id FROM items GROUP BY run_id "
                    f"HAVING SUM(CASE WHEN state IN ({marks}) THEN 1 ELSE 0 END) = 0 "
                    "AND MAX(updated_at) < ?",
                    [*ACTIVE_STATES, cutoff],
                )
            ]
            doomed += [
                r[0]
                for r in db.execute(
                    "SELECT id FROM runs WHERE id NOT IN (SELECT run_id FROM items) "
                    "AND created_at < ?",
                    (cutoff,),
                )
            ]
            for table, column in (
                ("events", "run_id"),
                ("self_reports", "run_id"),
                ("items", "run_id"),
                ("runs", "id"),
            ):
                db.executemany(f"DELETE FROM {table} WHERE {column} = ?", [(r,) for r in doomed])
        if doomed:
            log.info("pruned %d finished run(s) older than %s", len(doomed), older_than)
        return len(doomed)


_LEASE_COLUMNS: Final = (
    "backend, holder, generation, since, renewed_at, expires_at, last_poll_at, "
    "scheduler_calls, released, facts"
)


def _facts_text(facts: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(facts.items())), ensure_ascii=False)


def _facts_from_text(backend: object, text: object) -> Mapping[str, str]:
    """The stored facts of a lease row. They are advice (a backend asks its scheduler
    again without them): damaged facts read as none, logged, and never make the lease
    itself unreadable."""
    try:
        facts = (
            json.loads(text)
            if isinstance(text, str) and not isinstance(text, _Undecodable)
            else None
        )
    except ValueError:
        facts = None
    if isinstance(facts, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in facts.items()
    ):
        return facts
    log.warning(
        "the facts of the lease of %s cannot be read (%s); read as none",
        _shown(backend),
        _shown(text),
    )
    return {}


def _lease_from_row(row: Sequence[Any]) -> Lease:
    backend, holder, generation, since, renewed, expires, polled, calls, released, facts = row
    try:
        return Lease(
            backend=backend,
            holder=holder,
            generation=int(generation),
            since=parse_time(since),
            renewed_at=parse_time(renewed),
            expires_at=parse_time(expires),
            last_poll_at=parse_time(polled) if polled else None,
            scheduler_calls=int(calls),
            released=bool(released),
            facts=_facts_from_text(backend, facts),
        )
    except (ValueError, TypeError) as exc:
        raise CorruptRow("leases", _shown(backend), f"it cannot be read: {exc}") from exc


def _readable_lease(row: Sequence[Any]) -> Lease | None:
    try:
        return _lease_from_row(row)
    except CorruptRow as exc:
        log.warning("%s; read as free (the next poller takes it over)", exc)
        return None


def _status_of(counts: Mapping[State, int]) -> State:
    """Run.status from state counts alone (it depends only on which states occur)."""
    return status_of([state for state, n in counts.items() if n])
