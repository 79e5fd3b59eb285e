"""hpcstate.runtime: where the I/O lives.

The core (``hpcstate``) is pure; this package runs commands (locally or over SSH),
persists items in SQLite, and polls backends in batches. Public names:

Clocks
    :class:`Clock` (protocol: ``now() -> aware datetime``, ``async sleep(seconds)``),
    :class:`SystemClock`.
Runners
    :class:`LocalRunner` (asyncio subprocess), :class:`SshRunner` (asyncssh, one
    multiplexed connection), :func:`make_runner` ``(BackendConfig) -> Runner``.
    :class:`HostKeyRejected` and :class:`AuthenticationFailed` are permanent
    :class:`hpcstate.TransportError` subclasses (never retried).
Backends
    :class:`CommandBackend` ``(name=, dialect=, runner=, capabilities=, clock=)``: a
    :class:`hpcstate.backend.Backend` from a pure Dialect and a Runner.
    :mod:`hpcstate.runtime.local` holds the embedded ``local`` backend (``BACKEND``).
Store
    :class:`Store` (SQLite, WAL, compare-and-set), :func:`default_db_path`,
    :class:`StoreError`, :class:`CorruptRow`, :class:`SweepReport`,
    :class:`StoredEvent`, :class:`RunSummary`, :data:`STORE_SCHEMA_VERSION`;
    :class:`Change` and :class:`CommitResult` for ``Store.commit`` (compare-and-set).
Tracker
    :class:`Tracker` (asyncio), :class:`SyncTracker` (blocking facade),
    :class:`PollReport`, :class:`BackendStatus`, :class:`SubmitRefused` (``submit``
    could not hand the run to its backend: refused, or unreachable).
Self-report
    :func:`report` (call it from inside a job), :class:`SelfReport`, the environment
    variable names :data:`REPORT_FILE_ENV`, :data:`RUN_ID_ENV`, :data:`ITEM_ID_ENV`,
    :data:`DB_ENV`.
Output checks
    :class:`OutputCheck` (protocol), :class:`OutputSnapshot`, and the built-ins
    :class:`SuccessMarker`, :class:`ErrorPattern`, :class:`OutputStall`.
"""

from __future__ import annotations

from ._backend import CommandBackend as CommandBackend
from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._errors import AuthenticationFailed as AuthenticationFailed
from ._errors import CorruptRow as CorruptRow
from ._errors import HostKeyRejected as HostKeyRejected
from ._errors import StoreEnvironmentError as StoreEnvironmentError
from ._errors import StoreError as StoreError
from ._errors import StoreFull as StoreFull
from ._errors import StoreReadOnly as StoreReadOnly
from ._errors import StoreUnsafeFilesystem as StoreUnsafeFilesystem
from ._output import ErrorPattern as ErrorPattern
from ._output import OutputCheck as OutputCheck
from ._output import OutputSnapshot as OutputSnapshot
from ._output import OutputStall as OutputStall
from ._output import SuccessMarker as SuccessMarker
from ._pg_store import PostgresStore as PostgresStore
from ._report import DB_ENV as DB_ENV
from ._report import ITEM_ID_ENV as ITEM_ID_ENV
from ._report import REPORT_FILE_ENV as REPORT_FILE_ENV
from ._report import RUN_ID_ENV as RUN_ID_ENV
from ._report import SelfReport as SelfReport
from ._report import report as report
from ._runner import LocalRunner as LocalRunner
from ._runner import make_runner as make_runner
from ._ssh import SshRunner as SshRunner
from ._store import STORE_SCHEMA_VERSION as STORE_SCHEMA_VERSION
from ._store import Change as Change
from ._store import CommitResult as CommitResult
from ._store import Lease as Lease
from ._store import LeaseLost as LeaseLost
from ._store import RunSummary as RunSummary
from ._store import Store as Store
from ._store import StoredEvent as StoredEvent
from ._store import SweepReport as SweepReport
from ._store import default_db_path as default_db_path
from ._store import open_store as open_store
from ._tracker import BackendStatus as BackendStatus
from ._tracker import PollReport as PollReport
from ._tracker import SubmitRefused as SubmitRefused
from ._tracker import Tracker as Tracker
from ._tracker_sync import SyncTracker as SyncTracker

__all__ = [
    "DB_ENV",
    "ITEM_ID_ENV",
    "REPORT_FILE_ENV",
    "RUN_ID_ENV",
    "STORE_SCHEMA_VERSION",
    "AuthenticationFailed",
    "BackendStatus",
    "Change",
    "Clock",
    "CommandBackend",
    "CommitResult",
    "CorruptRow",
    "ErrorPattern",
    "HostKeyRejected",
    "Lease",
    "LeaseLost",
    "LocalRunner",
    "OutputCheck",
    "OutputSnapshot",
    "OutputStall",
    "PollReport",
    "PostgresStore",
    "RunSummary",
    "SelfReport",
    "SshRunner",
    "Store",
    "StoreEnvironmentError",
    "StoreError",
    "StoreFull",
    "StoreReadOnly",
    "StoreUnsafeFilesystem",
    "StoredEvent",
    "SubmitRefused",
    "SuccessMarker",
    "SweepReport",
    "SyncTracker",
    "SystemClock",
    "Tracker",
    "default_db_path",
    "make_runner",
    "open_store",
    "report",
]
