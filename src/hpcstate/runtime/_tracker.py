"""The tracker: submits, polls in batches, persists every step, tells subscribers.

Per backend and poll: ONE ``queue(ids)`` for the items that are queued, running or
settling, and ONE ``accounting(...)`` for the items that need it (settling, or an
unconfirmed verdict still inside its grace window), only if the backend has
accounting. Observations are applied in ``observed_at`` order through the pure
machine (``hpcstate.advance``), then ``hpcstate.tick``; each result is written with a
compare-and-set, so two trackers on one store never overwrite each other.

Everything needed to resume is in the store: a restarted tracker re-reads the active
items, looks a PENDING item's submit tag up before submitting it again, and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import logging
import os
import random
import secrets
import socket
from collections import defaultdict
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, Final

from attrs import evolve, frozen

from hpcstate import (
    DEFAULT_GRACE,
    FAILURES,
    TERMINAL,
    Absence,
    BackendError,
    CommandFailed,
    ConfigError,
    Event,
    HpcStateError,
    IllegalTransition,
    Marker,
    MarkerCode,
    Observation,
    Run,
    RunItem,
    Source,
    State,
    StatsUpdated,
    Step,
    Submitted,
    add_marker,
    advance,
    cancel_before_submit,
    expand_array_spec,
    grace_deadline,
    new_item,
    registry,
    submit_rejected,
    submitted,
    tick,
)
from hpcstate._machine import CANCEL_FAILED
from hpcstate.backend import AccountingQuery, Backend, BackendConfig, JobSpec, Submission

from ._clock import Clock, SystemClock
from ._errors import AuthenticationFailed, HostKeyRejected, StoreError
from ._output import OutputCheck, OutputSnapshot, check_from_dict, check_to_dict
from ._report import DB_ENV, ITEM_ID_ENV, REPORT_FILE_ENV, RUN_ID_ENV, SelfReport, report_file_name
from ._store import (
    ACTIVE_STATES,
    Change,
    CommitResult,
    ItemRow,
    Lease,
    LeaseLost,
    Store,
    StoredEvent,
)

log = logging.getLogger("hpcstate.runtime.tracker")

_ACTIVE: Final = frozenset(State(s) for s in ACTIVE_STATES)
_POLLED: Final = frozenset({State.QUEUED, State.RUNNING, State.SETTLING})
#: A submit claim older than this, still unanswered, belongs to a dead tracker.
_CLAIM_STALE: Final = timedelta(seconds=300)
#: The marker of an item whose submit may or may not have reached its backend (it was
#: unreachable, and so was the tag lookup): never submitted again, only looked up.
SUBMIT_IN_DOUBT: Final = MarkerCode.SUBMIT_IN_DOUBT.value
#: Compare-and-set attempts of add_marker against concurrent writers.
_MARKER_ATTEMPTS: Final = 20


class SubmitRefused(BackendError):
    """``Tracker.submit`` could not hand the run to its backend: the scheduler refused
    it (``CommandFailed``), the transport refused us for good (``HostKeyRejected``,
    ``AuthenticationFailed``), or the backend could not be reached and nothing was
    found under the submission's tag. The refused items are stored as FAILED (reason
    ``submit_rejected``, confirmed: they never ran); ``run`` is the run as stored,
    ``reason`` the backend's or transport's message, ``__cause__`` the original error.
    ``unreachable`` is True when the backend could not be reached (a transient cause:
    submitting again later may work). ``in_doubt`` is True when not even a lookup of
    the submission's tag answered, so the job MAY exist: the items then stay PENDING
    with the ``submit_in_doubt`` marker and are never submitted again; the tracker looks
    the tag up once the backend answers and records the job, or ends them FAILED. The
    CLI exits 69 (EX_UNAVAILABLE) for it."""

    def __init__(
        self, run: Run, reason: str, *, unreachable: bool = False, in_doubt: bool = False
    ) -> None:
        self.run = run
        self.reason = reason
        self.unreachable = unreachable
        self.in_doubt = in_doubt
        if unreachable:
            super().__init__(f"{run.backend} could not be reached to submit: {reason}")
        else:
            super().__init__(f"{run.backend} rejected the submission: {reason}")


@frozen(kw_only=True)
class BackendStatus:
    """Whether the tracker could reach a backend at its last attempt."""

    name: str
    reachable: bool = True
    last_error: str = ""
    since: datetime | None = None  # when it became unreachable
    consecutive_failures: int = 0


@frozen(kw_only=True)
class PollReport:
    """What one poll cycle did (counts), for logs, tests and benchmarks."""

    at: datetime
    items: int = 0
    queue_calls: int = 0
    accounting_calls: int = 0
    observations: int = 0
    events: int = 0
    illegal: int = 0
    conflicts: int = 0
    submitted: int = 0
    self_reports: int = 0
    corrupt: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    settling: int = 0
    #: Unexpected exceptions (bugs) caught from one item, check or backend since the
    #: previous poll (a submit() call's included): each was logged with its traceback,
    #: and the rest went on.
    failures: tuple[str, ...] = ()


class _Entry:
    """The tracker's cached copy of one stored item (slots: 100k of them stay small)."""

    __slots__ = ("checked_at", "extra", "item", "submit_started_at", "submit_tag", "version")

    def __init__(self, row: ItemRow) -> None:
        self.item: RunItem = row.item
        self.version: int = row.item.version
        self.extra: Mapping[str, Any] = row.extra
        self.submit_tag: str | None = row.submit_tag
        self.submit_started_at: datetime | None = row.submit_started_at
        #: When accounting was last asked about this unconfirmed verdict (late checks).
        self.checked_at: datetime | None = None


class _NativeIndex:
    """native id -> item ids, without a list per job in the common one-item case."""

    __slots__ = ("first", "more")

    def __init__(self, items: Iterable[RunItem]) -> None:
        self.first: dict[str, str] = {}
        self.more: dict[str, list[str]] = {}
        for item in items:
            native = item.native_id
            if native is None:
                continue
            if native in self.first:
                self.more.setdefault(native, []).append(item.id)
            else:
                self.first[native] = item.id

    def native_ids(self) -> tuple[str, ...]:
        return tuple(self.first)


@frozen
class _Refusal:
    reason: str
    cause: BaseException | None
    unreachable: bool
    in_doubt: bool = False


class _Watcher:
    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()


Callback = Callable[[Event], "Awaitable[None] | None"]


class Tracker:
    """Tracks runs on any number of backends. Use as ``async with Tracker(...) as t``
    (starts the poll loop), or drive it yourself with :meth:`poll_once`.

    ``backends`` maps names to Backend objects or BackendConfigs; other names are
    loaded from the registry (``hpcstate.registry.load(name)``) on first use.
    ``concurrency`` caps, per backend, the submitted items without a verdict
    (queued + running + settling); PENDING items are submitted as slots free up.
    ``grace`` is how long a settling item waits for confirmation before the
    unconfirmed fallback. An unconfirmed verdict (that fallback, or GONE) is asked of
    accounting every poll during ``grace``, then at most every ``late_check_interval``
    seconds (default ``max_interval``) until a record comes, accounting declares the job
    purged, or ``late_check_window`` (default 1 day) has passed since the verdict.

    Cadence (docs/concepts/runtime.md#cadence). Accounting is asked about a settling item
    once it has settled for ``accounting_lag`` seconds (a record is rarely complete at
    the job's end), and at most once per ``accounting_interval`` seconds per backend;
    every item due then goes in the same call. Jobs that report their own end (a backend's
    ``reports_itself(spec)``, e.g. Slurm's ``self_report_wrapper`` option) are watched
    through their report files every ``fast_interval`` (no scheduler RPC), and the queue
    of a backend whose active items all report is only a safety net, asked every
    ``queue_interval`` seconds (jobs killed before they could report, node failures).
    ``retention`` prunes finished runs older than that (checked once a day).
    ``sweep=False`` skips the store's invariant sweep at open. The tracker closes its
    backends (and the store, if it opened it) in :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        store: Store | str | os.PathLike[str] | None = None,
        backends: Mapping[str, Backend | BackendConfig] | None = None,
        clock: Clock | None = None,
        grace: timedelta = DEFAULT_GRACE,
        fast_interval: float = 1.0,
        max_interval: float = 30.0,
        max_error_interval: float = 120.0,
        concurrency: Mapping[str, int] | None = None,
        sweep: bool = True,
        wake_check_interval: float = 0.5,
        retention: timedelta | None = None,
        seed: int | None = None,
        late_check_window: timedelta = timedelta(days=1),
        late_check_interval: float | None = None,
        queue_interval: float = 60.0,
        accounting_lag: float = 1.0,
        accounting_interval: float = 4.0,
        default_backend: str = "local",
        poll_lease: bool = True,
        lease_ttl: float = 10.0,
        holder: str | None = None,
    ) -> None:
        if late_check_window < timedelta(0):
            raise ConfigError(f"late_check_window must not be negative, got {late_check_window}")
        for knob, seconds in (
            ("fast_interval", fast_interval),
            ("queue_interval", queue_interval),
            ("accounting_lag", accounting_lag),
            ("accounting_interval", accounting_interval),
            ("lease_ttl", lease_ttl),
        ):
            if not seconds >= 0:  # also refuses NaN
                raise ConfigError(f"{knob} must be a number of seconds >= 0, got {seconds!r}")
        self.store = store if isinstance(store, Store) else Store(store, sweep=sweep)
        self._own_store = not isinstance(store, Store)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.grace = grace
        self.fast_interval = fast_interval
        self.max_interval = max_interval
        self.max_error_interval = max_error_interval
        self.wake_check_interval = wake_check_interval
        self.concurrency: dict[str, int] = dict(concurrency or {})
        self.retention = retention
        self.late_check_window = late_check_window
        self.late_check_interval = (
            max_interval if late_check_interval is None else late_check_interval
        )
        self.queue_interval = queue_interval
        self.accounting_lag = accounting_lag
        #: The backend ``submit`` uses when none is named.
        self.default_backend = default_backend
        #: One poller per backend among the processes sharing the store (see
        #: docs/concepts/runtime.md#one-poller-per-backend).
        self.poll_lease = poll_lease
        self.lease_ttl = lease_ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._leases: dict[str, Lease] = {}  # lease key -> the lease this process holds
        self._following: set[str] = set()  # backends another process polls for us
        self._wake_data_version = -1
        self.accounting_interval = accounting_interval
        self._last_queue_at: dict[str, datetime] = {}  # backend -> its last queue call
        self._queue_quiet: dict[str, int] = {}  # backend -> queue calls in a row, no event
        self._last_accounting_at: dict[str, datetime] = {}  # ... its last accounting call
        self._last_prune: datetime | None = None
        self._backends: dict[str, Backend] = {}
        self._configs: dict[str, BackendConfig] = {}
        for name, value in (backends or {}).items():
            if isinstance(value, BackendConfig):
                self._configs[name] = value
            else:
                self._backends[name] = value
        self._random = random.Random(seed)
        self._entries: dict[str, _Entry] = {}
        # Terminal, unconfirmed (COMPLETED by the grace fallback, or GONE), within the
        # late-check window: accounting may still correct them.
        self._unconfirmed: dict[str, _Entry] = {}
        self._corrupt: set[str] = set()
        self._data_version = -1
        self._checks: dict[str, tuple[OutputCheck, ...]] = {}  # run id -> checks
        self._run_limits: dict[str, int] = {}  # run id -> max running (array %N)
        self._status: dict[str, BackendStatus] = {}
        # Backends none of whose cached items carries an "unreachable" marker.
        self._no_unreachable_markers: set[str] = set()
        self._watchers: list[_Watcher] = []
        self._callbacks: list[tuple[str | None, Callback]] = []
        self._seen_seq = self.store.last_event_seq()
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._loop_task: asyncio.Task[None] | None = None
        self._aux_tasks: list[asyncio.Task[None]] = []
        self._watch_tasks: dict[str, tuple[frozenset[str], asyncio.Task[None]]] = {}
        self._poll_lock = asyncio.Lock()
        self._quiet_polls = 0
        self._error_polls = 0
        self._last_submit_at: datetime | None = None
        self._closed = False
        self._loaded = False
        #: Totals since start (tests and benchmarks read them).
        self.illegal_transitions = 0
        self.conflicts = 0
        self.polls = 0
        self.failures = 0
        self._failures: list[str] = []  # this poll's, for its PollReport
        self._force_refresh = False

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Tracker:
        """A tracker configured by the file the ``hpcstate`` command reads: the
        ``[backends.NAME]`` tables, ``default_backend`` (what ``submit`` uses when no
        backend is named), ``database`` (the store) and the ``[tracker]`` cadence. The
        environment applies as for the command (``HPCSTATE_CONFIG``, ``HPCSTATE_DB``,
        ``HPCSTATE_BACKEND``; ``env`` None: ``os.environ``). ``path`` None: the default
        location, which may be absent (then every installed backend with its defaults,
        and ``local`` as the default). ``options`` are Tracker arguments that win over
        the file (``store=``, ``clock=``, ``grace=``...). Raises ConfigError with one
        line naming the file and the key."""
        from hpcstate.config import load_config

        config = load_config(path, env=env)
        arguments: dict[str, Any] = {
            "store": config.database,
            "backends": dict(config.backends),
            "default_backend": config.default_backend,
            **config.tracker.kwargs(),
        }
        arguments.update(options)
        return cls(**arguments)

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Tracker:
        self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start the background poll loop (idempotent)."""
        if self._closed:
            raise StoreError("this tracker is closed")
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.ensure_future(self._run_loop())
            self._aux_tasks.append(asyncio.ensure_future(self._wake_checker()))
            if self.poll_lease:
                self._aux_tasks.append(asyncio.ensure_future(self._heartbeat()))

    async def aclose(self) -> None:
        """Stop polling, close backends (and the store if the tracker opened it)."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._loop_task, *self._aux_tasks) if t is not None]
        tasks += [task for _, task in self._watch_tasks.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)
        for backend in self._backends.values():
            with contextlib.suppress(Exception):
                await backend.close()
        for lease in list(self._leases.values()):
            # A clean exit hands polling over at once (not after the lease expires).
            with contextlib.suppress(Exception):
                self.store.release_lease(lease, now=self.clock.now())
        self._leases.clear()
        if self._own_store:
            self.store.close()

    def wake(self) -> None:
        """Poll now instead of waiting for the interval (a self-report, a push event)."""
        self._wake.set()

    # -- backends -------------------------------------------------------------------------

    def add_backend(self, name: str, backend: Backend | BackendConfig) -> None:
        if isinstance(backend, BackendConfig):
            self._configs[name] = backend
        else:
            self._backends[name] = backend

    def backend(self, name: str) -> Backend:
        """The backend called ``name``, created on first use. Raises BackendNotFound."""
        found = self._backends.get(name)
        if found is not None:
            return found
        config = self._configs.get(name) or BackendConfig(name=name, kind=name)
        made = registry.load(config.kind).make_backend(config)
        self._backends[name] = made
        return made

    def backend_status(self, name: str) -> BackendStatus:
        return self._status.get(name) or BackendStatus(name=name)

    # -- reading --------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        return self.store.get_run(run_id)

    # -- submit / track / cancel / wait ----------------------------------------------------

    def _new_run_id(self) -> str:
        return self.clock.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)

    async def submit(
        self,
        spec: JobSpec,
        *,
        backend: str | None = None,
        name: str = "",
        output_checks: Sequence[OutputCheck] = (),
        run_id: str | None = None,
    ) -> Run:
        """Create a run (one item, or one per array task) and submit it as far as the
        concurrency cap allows; ``backend`` None is :attr:`default_backend`. Returns the
        run as stored afterwards. Raises :class:`SubmitRefused` if the backend refused
        it or could not be reached (the run is stored FAILED: it never ran), and
        BackendNotFound or ConfigError for a backend that cannot be made."""
        async with self._poll_lock:
            return await self._submit(
                spec, backend or self.default_backend, name, output_checks, run_id
            )

    async def _submit(
        self,
        spec: JobSpec,
        backend: str,
        name: str,
        output_checks: Sequence[OutputCheck],
        run_id: str | None,
    ) -> Run:
        target = self.backend(backend)
        now = self.clock.now()
        run_id = run_id or self._new_run_id()
        indexes: tuple[int | None, ...] = (None,)
        limit: int | None = None
        if spec.array:
            indexes = expand_array_spec(spec.array)
            if "%" in spec.array:
                limit = int(spec.array.rsplit("%", 1)[1].strip("]") or "0") or None
        name = name or spec.name
        items = [
            new_item(
                id=f"{run_id}.{index if index is not None else 0}",
                run_id=run_id,
                backend=backend,
                now=now,
                name=name,
                array_index=index,
            )
            for index in indexes
        ]
        run = Run(id=run_id, backend=backend, name=name, created_at=now, items=items)
        whole_array = spec.array is not None and target.capabilities.array_jobs
        extras = {item.id: self._item_extra(target, spec, run_id, item) for item in items}
        documents = [d for d in (check_to_dict(c) for c in output_checks) if d is not None]
        options: dict[str, Any] = {"output_checks": documents, "whole_array": whole_array}
        if limit:
            options["max_running"] = limit
            self._run_limits[run_id] = limit
        self._checks[run_id] = tuple(output_checks)
        self.store.create_run(run, spec=spec, options=options, extras=extras)
        self._last_submit_at = now
        await self._refresh()
        refusals: dict[str, _Refusal] = {}
        await self._submit_pending(backend, target, only_run=run_id, refusals=refusals)
        self.wake()
        stored = self.store.get_run(run_id)
        if refusals:
            first = next(iter(refusals.values()))
            raise SubmitRefused(
                stored, first.reason, unreachable=first.unreachable, in_doubt=first.in_doubt
            ) from first.cause
        return stored

    def _item_extra(
        self, backend: Backend, spec: JobSpec, run_id: str, item: RunItem
    ) -> dict[str, Any]:
        """Where this item reports to (and reads its output from)."""
        from .local import LocalBackend

        if isinstance(backend, LocalBackend):
            return {"report": "db"}
        base = PurePosixPath(spec.stdout).parent if spec.stdout else None
        if base is None:
            base = PurePosixPath(spec.working_directory) if spec.working_directory else None
        template = f"hpcstate-report-{run_id}.{{array_index}}.json"
        if spec.array is None:
            template = f"hpcstate-report-{item.id}.json"
        path = str(base / template) if base is not None else template
        reports_itself = getattr(backend, "reports_itself", None)
        watched = (
            reports_itself is not None
            and backend.capabilities.self_report  # its running items' files are read
            and getattr(backend, "read_text_files", None) is not None
            and bool(reports_itself(spec))
        )
        return {
            "report": "file",
            "report_template": path,
            "report_file": report_file_name(path, item.array_index),
            "stdout": spec.stdout,
            # The job writes that file when its payload ends (else it is only read once
            # the item settles, in case the user's own script wrote it).
            "self_reports": watched,
        }

    def _spec_for(
        self, spec: JobSpec, run_id: str, items: Sequence[_Entry], tag: str, *, whole: bool
    ) -> JobSpec:
        env = dict(spec.environment)
        env[RUN_ID_ENV] = run_id
        first = items[0]
        if not whole:
            env[ITEM_ID_ENV] = first.item.id
        if first.extra.get("report") == "db":
            env[DB_ENV] = str(self.store.path.resolve())
        else:
            template = first.extra.get("report_template")
            if template:
                env[REPORT_FILE_ENV] = template if whole else first.extra["report_file"]
        changes: dict[str, Any] = {"environment": env, "tag": tag}
        if not whole and spec.array is not None:
            # The backend runs tasks one by one (no native arrays): one job per task.
            from .local import ARRAY_INDEX_ENV

            env[ARRAY_INDEX_ENV] = str(first.item.array_index)
            changes["array"] = None
        return evolve(spec, **changes)

    async def track(self, backend: str, native_id: str, *, name: str = "") -> Run:
        """Adopt a job submitted by other means, by its native id."""
        async with self._poll_lock:
            return await self._track(backend, native_id, name)

    async def _track(self, backend: str, native_id: str, name: str) -> Run:
        target = self.backend(backend)
        if not target.capabilities.adopt:
            raise ConfigError(f"backend {backend!r} cannot adopt jobs it did not submit")
        now = self.clock.now()
        run_id = self._new_run_id()
        item = new_item(id=f"{run_id}.0", run_id=run_id, backend=backend, now=now, name=name)
        step = submitted(item, native_id=native_id, at=now)
        run = Run(id=run_id, backend=backend, name=name, created_at=now, items=[step.item])
        self.store.create_run(run, options={"adopted": True}, events=step.events)
        self._last_submit_at = now
        await self._refresh()
        self.wake()
        return self.store.get_run(run_id)

    async def cancel(self, run_id: str) -> Run:
        """Cancel every unfinished item of a run: PENDING ones are cancelled here;
        submitted ones get a cancel_requested marker and a backend cancel (the
        verdict comes from the backend, as always)."""
        async with self._poll_lock:
            return await self._cancel(run_id)

    async def _cancel(self, run_id: str) -> Run:
        run = self.store.get_run(run_id)
        to_cancel: dict[str, dict[str, None]] = defaultdict(dict)  # ordered sets
        marker = Marker(code=MarkerCode.CANCEL_REQUESTED.value, text="cancel requested")

        def cancelling(row: ItemRow) -> Change | None:
            item = row.item
            if item.state in TERMINAL:
                return None
            now = self.clock.now()
            if item.state is State.PENDING and row.submit_started_at is None:
                step = cancel_before_submit(item, at=now)
            else:
                # Submitted, or being submitted (claimed): the submitter re-reads on its
                # conflict, sees the marker and cancels the job it created.
                step = add_marker(item, marker, at=now)
                if item.native_id is not None:
                    to_cancel[item.backend][item.native_id] = None
            if step.item is item:
                return None
            return Change(item=step.item, expected_version=item.version, events=step.events)

        rows, _ = self.store.items_by_id(i.id for i in run.items)
        changes = [c for row in rows if (c := cancelling(row)) is not None]
        _, lost = await self._commit_redoing(changes, cancelling)
        for backend_name, ids in to_cancel.items():
            await self._send_cancel(rows, backend_name, ids)
        await self._refresh()
        self.wake()
        if lost:
            raise StoreError(
                f"run {run_id}: other writers kept changing item(s) {', '.join(lost)}; "
                f"their cancel request was not stored after {_MARKER_ATTEMPTS} attempts "
                "(the jobs already known were asked to cancel)"
            )
        return self.store.get_run(run_id)

    async def _send_cancel(
        self, rows: Sequence[ItemRow], backend_name: str, ids: Mapping[str, None]
    ) -> None:
        """The backend's cancel call; if it fails (it may or may not have acted), say so
        on the items (``cancel_failed``), so that their vanishing is never read as the
        cancel's doing, and raise."""
        try:
            await self.backend(backend_name).cancel(list(ids))
        except Exception as exc:
            await self._cancel_failed(rows, backend_name, ids, exc)
            raise

    async def _cancel_failed(
        self, rows: Sequence[ItemRow], backend_name: str, ids: Mapping[str, None], exc: Exception
    ) -> None:
        marker = Marker(
            code=CANCEL_FAILED,
            text=f"the cancel may not have reached backend {backend_name}: {exc}",
        )

        def marking(row: ItemRow) -> Change | None:
            item = row.item
            if item.backend != backend_name or item.native_id not in ids or item.terminal:
                return None
            step = add_marker(item, marker, at=self.clock.now())
            if step.item is item:
                return None
            return Change(item=step.item, expected_version=item.version, events=step.events)

        fresh, _ = self.store.items_by_id(row.item.id for row in rows)
        changes = [c for row in fresh if (c := marking(row)) is not None]
        await self._commit_redoing(changes, marking)

    async def _commit_redoing(
        self, changes: Sequence[Change], redo: Callable[[ItemRow], Change | None]
    ) -> tuple[list[Change], list[str]]:
        """Commit ``changes`` as compare-and-sets. An item another writer changed first
        is re-read and ``redo(row)`` rebuilds its change on what that writer stored
        (None: nothing left to do there), for up to ``_MARKER_ATTEMPTS`` rounds. Returns
        the changes that landed and the ids still conflicting after the last round (the
        caller reports them); a conflict is never dropped silently."""
        landed: list[Change] = []
        pending = list(changes)
        for _ in range(_MARKER_ATTEMPTS):
            if not pending:
                break
            result = self.store.commit(pending)
            await self._dispatch_committed(pending, result.applied, result.last_seq)
            applied = set(result.applied)
            landed += [c for c in pending if c.item.id in applied]
            if not result.conflicts:
                return landed, []
            self.conflicts += len(result.conflicts)
            self._force_refresh = True
            rows, bad = self.store.items_by_id(result.conflicts)
            for problem in bad:
                log.error("%s: cannot re-apply a change to it", problem)
            pending = [c for row in rows if (c := redo(row)) is not None]
        return landed, [c.item.id for c in pending]

    async def add_marker(self, item_id: str, marker: Marker) -> RunItem:
        """Attach ``marker`` to one item (a no-op if it is already there), with its
        StatsUpdated event, as a compare-and-set: a concurrent writer is re-read and the
        marker added to what it wrote. Never changes the state or the verdict. Returns
        the item as stored. Raises StoreError if the item is unknown."""
        async with self._poll_lock:
            for _ in range(_MARKER_ATTEMPTS):
                item = self.store.get_item(item_id)
                step = add_marker(item, marker, at=self.clock.now())
                if step.item is item:
                    return item
                change = Change(item=step.item, expected_version=item.version, events=step.events)
                result = self.store.commit([change])
                if result.applied:
                    entry = self._entries.get(item_id) or self._unconfirmed.get(item_id)
                    if entry is not None:
                        entry.item = step.item
                        entry.version = step.item.version
                    await self._dispatch_committed([change], result.applied, result.last_seq)
                    return step.item
            raise StoreError(
                f"item {item_id}: other writers kept changing it; marker {marker.code!r} "
                f"not added after {_MARKER_ATTEMPTS} attempts"
            )

    async def wait(self, run_id: str, *, timeout: float | None = None) -> Run:
        """Return the run once every item has a verdict (starts the poll loop if it is
        not running). Raises TimeoutError after ``timeout`` seconds."""
        self.start()

        async def finished() -> Run:
            while True:
                run = self.store.get_run(run_id)
                if all(item.state in TERMINAL for item in run.items):
                    return run
                async with self._progress:
                    await self._progress.wait()

        try:
            return await asyncio.wait_for(finished(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"run {run_id} not finished after {timeout} s") from None

    # -- subscribers ------------------------------------------------------------------------

    def subscribe(self, callback: Callback, *, run_id: str | None = None) -> Callable[[], None]:
        """Call ``callback(event)`` for each new event (of ``run_id``, or all), in
        order, once. It may be a coroutine function. Returns an unsubscribe function."""
        entry = (run_id, callback)
        self._callbacks.append(entry)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(entry)

        return unsubscribe

    async def watch(
        self, run_id: str | None = None, *, replay: bool | None = None
    ) -> AsyncGenerator[Event, None]:
        """Events as they happen, each once, in order per item (by version). With
        ``replay`` (the default when watching one run), first the stored history. For
        one run, the iteration ends when every item of the run has a verdict."""
        if replay is None:
            replay = run_id is not None
        watcher = _Watcher(run_id)
        self._watchers.append(watcher)  # before replaying: nothing can fall in between
        delivered: dict[str, int] = {}
        open_items: set[str] | None = None
        try:
            if run_id is not None:
                run = self.store.get_run(run_id)
                open_items = {i.id for i in run.items if i.state not in TERMINAL}
            backlog = self.store.events(run_id=run_id) if replay else []
            pending = [stored.event for stored in backlog]
            while True:
                if pending:
                    event: Event | None = pending.pop(0)
                else:
                    if open_items is not None and not open_items:
                        return
                    event = await watcher.queue.get()
                if event is None:
                    return
                if event.version <= delivered.get(event.item_id, -1):
                    continue
                delivered[event.item_id] = event.version
                if open_items is not None and event.state in TERMINAL:
                    open_items.discard(event.item_id)
                yield event
        finally:
            with contextlib.suppress(ValueError):
                self._watchers.remove(watcher)

    async def _deliver(self, events: Iterable[Event]) -> None:
        for event in events:
            for watcher in self._watchers:
                if watcher.run_id is None or watcher.run_id == event.run_id:
                    watcher.queue.put_nowait(event)
            for run_filter, callback in list(self._callbacks):
                if run_filter is not None and run_filter != event.run_id:
                    continue
                try:
                    result = callback(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("event callback %r failed on %s", callback, event)

    async def _dispatch_committed(
        self, changes: Sequence[Change], applied: Sequence[str], last_seq: int
    ) -> None:
        """Deliver the events of the changes that landed, after any event another
        process wrote before them (the log's order)."""
        if not (self._watchers or self._callbacks):
            self._seen_seq = max(self._seen_seq, last_seq)
            return
        done = set(applied)
        mine = [e for c in changes if c.item.id in done for e in c.events]
        first_mine = last_seq - len(mine)
        if first_mine > self._seen_seq:
            await self._deliver_foreign(until=first_mine)
        await self._deliver(mine)
        self._seen_seq = max(self._seen_seq, last_seq)

    async def _deliver_foreign(self, until: int | None = None) -> None:
        if not (self._watchers or self._callbacks):
            self._seen_seq = max(self._seen_seq, until or self.store.last_event_seq())
            return
        stored: list[StoredEvent] = self.store.events(after=self._seen_seq, skip_corrupt=True)
        for entry in stored:
            if until is not None and entry.seq > until:
                break
            await self._deliver([entry.event])
            self._seen_seq = entry.seq

    # -- the cache ------------------------------------------------------------------------

    async def _refresh(self, *, force: bool = True) -> None:
        """Bring the cache in line with the store (other processes write too). Without
        ``force``, skipped when no other connection committed since the last look."""
        data_version = self.store.data_version()
        if self._force_refresh:
            force, self._force_refresh = True, False
        if not force and self._loaded and data_version == self._data_version:
            return
        self._data_version = data_version
        versions = self.store.active_versions()
        stale = [
            i for i, v in versions.items() if (e := self._entries.get(i)) is None or e.version != v
        ]
        for gone in [i for i in self._entries if i not in versions]:
            entry = self._entries.pop(gone)
            self._remember_unconfirmed(gone)
            del entry
        corrupt: set[str] = set()
        if stale:
            with _gc_paused():
                rows, bad = self.store.items_by_id(stale)
            fresh = self._loaded and bool(self._leases)
            for row in rows:
                if row.item.state in _ACTIVE:
                    if fresh and row.item.id not in self._entries:
                        # Submitted by a process this one polls for: the fast pace of a
                        # submit applies to it too.
                        self._last_submit_at = self.clock.now()
                    self._entries[row.item.id] = _Entry(row)
                    if row.item.markers:
                        self._no_unreachable_markers.discard(row.item.backend)
            for problem in bad:
                if problem.row_id not in self._corrupt:
                    log.error("%s (skipped; the other items are tracked)", problem)
                corrupt.add(problem.row_id)
        # Unreadable rows are never cached, so each refresh reads all of them again.
        self._corrupt = corrupt
        if not self._loaded:
            self._loaded = True
            rows, _ = self.store.unconfirmed_verdicts(self.clock.now() - self.late_check_window)
            for row in rows:
                if _late_checkable(row.item):
                    self._unconfirmed[row.item.id] = _Entry(row)
            await self._load_run_settings({e.item.run_id for e in self._entries.values()})

    def _remember_unconfirmed(self, item_id: str) -> None:
        with contextlib.suppress(StoreError):
            row = self.store.get_item_row(item_id)
            if _late_checkable(row.item):
                self._unconfirmed[item_id] = _Entry(row)

    async def _load_run_settings(self, run_ids: Iterable[str]) -> None:
        for run_id in run_ids:
            if run_id in self._checks:
                continue
            try:
                options = self.store.run_options(run_id)
                checks = tuple(check_from_dict(d) for d in options.get("output_checks", ()))
            except Exception as exc:  # a bad row must not stop the other runs
                log.error("run %s: cannot load its output checks: %s", run_id, exc)
                checks = ()
                options = {}
            self._checks[run_id] = checks
            with contextlib.suppress(TypeError, ValueError):
                if options.get("max_running"):
                    self._run_limits[run_id] = int(options["max_running"])

    # -- the poll cycle -----------------------------------------------------------------------

    async def poll_once(self) -> PollReport:
        """Run exactly one poll cycle (submit, queue, accounting, tick, persist)."""
        async with self._poll_lock:
            return await self._poll()

    async def _poll(self) -> PollReport:
        now = self.clock.now()
        self.polls += 1
        if self.retention is not None and (
            self._last_prune is None or now - self._last_prune > timedelta(days=1)
        ):
            self._last_prune = now
            try:
                self.store.prune(older_than=self.retention, now=now)
            except Exception as exc:
                log.warning("pruning old runs failed: %s", exc)
        await self._refresh(force=False)
        await self._load_run_settings({e.item.run_id for e in self._entries.values()})
        if self._seen_seq < self.store.last_event_seq():
            await self._deliver_foreign()
        reports, consumed = self._self_report_observations(now)
        self._expire_late_checks(now)
        by_backend: dict[str, list[_Entry]] = defaultdict(list)
        for entry in (*self._entries.values(), *self._unconfirmed.values()):
            by_backend[entry.item.backend].append(entry)
        results = await asyncio.gather(
            *(self._poll_backend_guarded(name, reports, now) for name in by_backend)
        )
        polled = {name for name, r in zip(by_backend, results, strict=True) if r.get("polled")}
        # A report of an item whose backend another process polls is that process's.
        used = [i for i, backend in consumed if backend is None or backend in polled]
        if used:
            self.store.consume_self_reports(used, at=now)
        report = PollReport(
            at=now,
            items=sum(len(v) for v in by_backend.values()),
            queue_calls=sum(r["queue_calls"] for r in results),
            accounting_calls=sum(r["accounting_calls"] for r in results),
            observations=sum(r["observations"] for r in results),
            events=sum(r["events"] for r in results),
            illegal=sum(r["illegal"] for r in results),
            conflicts=sum(r["conflicts"] for r in results),
            submitted=sum(r["submitted"] for r in results),
            self_reports=len(used),
            corrupt=tuple(sorted(self._corrupt)),
            errors=tuple(e for r in results for e in r["errors"]),
            settling=sum(1 for e in self._entries.values() if e.item.state is State.SETTLING),
            failures=tuple(self._failures),
        )
        self._failures.clear()
        self._after_poll(report)
        async with self._progress:
            self._progress.notify_all()
        return report

    def _self_report_observations(
        self, now: datetime
    ) -> tuple[dict[str, list[Observation]], list[tuple[int, str | None]]]:
        """Open self-reports from the store as observations keyed by item id, and the
        ids of the reports this poll may use up, with their item's backend (None: an
        item this tracker does not poll, finished or unknown)."""
        found: dict[str, list[Observation]] = defaultdict(list)
        consumed: list[tuple[int, str | None]] = []
        for stored in self.store.open_self_reports():
            entry = self._entries.get(stored.item_id)
            if entry is not None and entry.item.native_id is None:
                continue  # its submit answer is not stored yet: keep it for later
            consumed.append((stored.id, entry.item.backend if entry is not None else None))
            if entry is None or entry.item.native_id is None:
                continue  # finished already (too late to matter) or unknown
            try:
                parsed = SelfReport.from_dict(stored.doc)
                found[stored.item_id].append(parsed.observation(entry.item.native_id, now))
            except Exception as exc:  # one bad report must not stop the poll
                log.warning("self-report %d of item %s ignored: %s", stored.id, stored.item_id, exc)
        return found, consumed

    def _failed(self, what: str, exc: BaseException) -> None:
        """An unexpected exception (a bug) from one item, check or backend: log it with
        its traceback, count it, and let the poll go on with the rest."""
        log.error("%s raised %s: %s", what, type(exc).__name__, exc, exc_info=exc)
        self.failures += 1
        self._failures.append(f"{what}: {type(exc).__name__}: {exc}")

    async def _guarded(self, what: str, work: Awaitable[int]) -> int:
        """``await work``; an exception (not a cancellation) is logged and counted, and
        the answer is 0."""
        try:
            return await work
        except Exception as exc:
            self._failed(what, exc)
            return 0

    def _expire_late_checks(self, now: datetime) -> None:
        """Stop asking about unconfirmed verdicts older than the late-check window."""
        cutoff = now - self.late_check_window
        expired = [i for i, e in self._unconfirmed.items() if e.item.updated_at < cutoff]
        for item_id in expired:
            log.info(
                "item %s: no record confirmed its %s verdict within %s; no longer asking",
                item_id,
                self._unconfirmed[item_id].item.state,
                self.late_check_window,
            )
            del self._unconfirmed[item_id]

    def _late_check_due(self, entry: _Entry, now: datetime) -> bool:
        """Every poll during the grace after the verdict, then at the slow rate."""
        if entry.item.updated_at + self.grace > now or entry.checked_at is None:
            return True
        return (now - entry.checked_at).total_seconds() >= self.late_check_interval

    async def _poll_backend_guarded(
        self, name: str, reports: Mapping[str, list[Observation]], now: datetime
    ) -> dict[str, Any]:
        """One backend's share of the poll; a bug in it (or in its backend) is logged
        and counted and never reaches the other backends or the caller."""
        counts: dict[str, Any] = {
            "queue_calls": 0,
            "accounting_calls": 0,
            "observations": 0,
            "events": 0,
            "illegal": 0,
            "conflicts": 0,
            "submitted": 0,
            "errors": [],
        }
        try:
            await self._poll_backend(name, reports, now, counts)
        except Exception as exc:
            self._failed(f"polling backend {name}", exc)
            counts["errors"].append(f"{name}: poll raised {type(exc).__name__}: {exc}")
            # The cache may be behind what was written: read it all again next time.
            self._force_refresh = True
        return counts

    async def _poll_backend(
        self,
        name: str,
        reports: Mapping[str, list[Observation]],
        now: datetime,
        counts: dict[str, Any],
    ) -> None:
        try:
            backend = self.backend(name)
        except Exception as exc:  # unknown name, or a plugin that fails to load
            if not any(e.item.backend == name for e in self._entries.values()):
                # Only old verdicts to re-check, on a backend this tracker does not
                # have: not an error of this poll; leave them to a tracker that has it.
                for item_id in [i for i, e in self._unconfirmed.items() if e.item.backend == name]:
                    del self._unconfirmed[item_id]
                log.info("backend %s unavailable (%s): its late checks are skipped", name, exc)
                return
            counts["errors"].append(f"{name}: {exc}")
            self._mark_status(name, str(exc), now)
            return
        counts["submitted"] = await self._submit_pending(name, backend)  # anyone submits
        lease: Lease | None = None
        if self.poll_lease:
            lease = self._hold(name, backend, now)
            if lease is None:
                # Another process polls this backend for everyone sharing the store: its
                # commits reach us through the store (refresh, event log).
                self._follow(name)
                return
        self._following.discard(name)
        counts["polled"] = True
        # Pending items may have just been submitted: take them from the cache again.
        entries = [e for e in self._entries.values() if e.item.backend == name]
        polled = [e for e in entries if e.item.state in _POLLED and e.item.native_id is not None]
        # Self-reports and output checks come first: they are older than the queue.
        extras: dict[str, list[Observation]] = defaultdict(list)
        for entry in polled:
            found = reports.get(entry.item.id)
            if found:
                extras[entry.item.id].extend(found)
        await self._output_checks(backend, polled, extras, now)
        by_native = _NativeIndex(e.item for e in polled)
        error: str | None = None
        queue_obs: Sequence[Observation] = ()
        queue_called = False
        if polled and self._queue_due(name, polled, now):
            self._last_queue_at[name] = now
            queue_called = True
            try:
                counts["queue_calls"] += 1
                queue_obs = await backend.queue(by_native.native_ids())
            except Exception as exc:
                error = self._describe(name, "queue", exc)
        working: dict[str, RunItem] = {e.item.id: e.item for e in entries}
        late = self._late_checks(name, backend, now)
        for entry in late:
            working[entry.item.id] = entry.item
        # What every change is computed from: its version is the compare-and-set key.
        base = dict(working)
        events: dict[str, list[Event]] = {}
        with _gc_paused():
            # Apply what we have so far, to know who needs accounting.
            self._apply(working, by_native, queue_obs, extras, events, counts)
        # Reports in files: of running items (if the backend's jobs report), and of
        # those that left the queue and await their verdict.
        reports_found, read_error = await self._remote_reports(backend, working, polled)
        if read_error is not None and error is None and not queue_called:
            # Nothing else reached the backend this poll: it is not known to be reachable.
            error = self._describe(name, "reading report files", read_error)
        if reports_found:
            with _gc_paused():
                self._apply(working, _NativeIndex(()), (), reports_found, events, counts)
        if error is None and backend.capabilities.accounting:
            error = await self._accounting(name, backend, working, late, events, counts, now)
        if error is not None:
            counts["errors"].append(error)
            self._mark_status(name, error, now)
        else:
            self._clear_status(name)
        with _gc_paused():
            settling = State.SETTLING
            for item_id, item in working.items():
                if item.state is settling:
                    try:
                        step = tick(item, now=now, grace=self.grace)
                    except Exception as exc:
                        self._failed(f"item {item_id}: tick", exc)
                        continue
                    if step.item is not item:
                        working[item_id] = step.item
                        events.setdefault(item_id, []).extend(step.events)
            self._reachability_markers(name, working, events, now, reachable=error is None)
            changes, result = self._persist(base, working, events, counts, lease=lease)
        if counts.get("lease_lost"):
            self._follow(name)
            return
        if lease is not None:
            calls = counts["queue_calls"] + counts["accounting_calls"]
            self._renew(lease, now, polled=True, scheduler_calls=calls)
        if queue_called:
            quiet = 0 if changes or counts["submitted"] else self._queue_quiet.get(name, 0) + 1
            self._queue_quiet[name] = quiet
        if changes:
            await self._dispatch_committed(changes, result.applied, result.last_seq)
        await self._cancel_failed_by_output(backend, counts.get("output_failures", []))
        self._sync_watch(name, backend)

    def _queue_due(self, name: str, polled: Sequence[_Entry], now: datetime) -> bool:
        """Is this backend's queue asked this poll?

        Jobs that report their own end make the loop poll every ``fast_interval`` to read
        their files; the queue is then a safety net, asked every ``queue_interval``. Other
        jobs keep the pace they would have without them (fast after a submit, backing off
        while nothing changes), not the report files' pace. Without reporting jobs every
        poll asks the queue, as the loop's own interval already paces the polls. A settling
        item whose grace is about to run out is asked about in any case: only the queue
        can say it is still there."""
        last = self._last_queue_at.get(name)
        if last is None:
            return True
        elapsed = (now - last).total_seconds()
        cancel = MarkerCode.CANCEL_REQUESTED.value
        silent = reporting = False
        soon = now + timedelta(seconds=2 * self.fast_interval)  # see next_interval
        for entry in polled:
            item = entry.item
            if _reports_itself(entry) and not item.has_marker(cancel):
                reporting = True
            else:
                silent = True
            deadline = grace_deadline(item, self.grace)
            if deadline is not None and deadline <= soon:
                return True
        if silent:
            if not reporting and not self._reporting_anywhere():
                return True
            return elapsed >= 0.75 * self._queue_pace(name, now)  # 0.75: the loop's jitter
        return elapsed >= self.queue_interval

    def _reporting_anywhere(self) -> bool:
        """A job that reports its own end is queued or running (the loop runs fast)."""
        return any(
            e.item.state in _POLLED and e.item.state is not State.SETTLING and _reports_itself(e)
            for e in self._entries.values()
        )

    def _queue_pace(self, name: str, now: datetime) -> float:
        """The adaptive interval of the loop, per backend: fast after a submit, then 1.5x
        per queue call that changed nothing, up to ``max_interval``."""
        if self._recent_submit(now):
            return self.fast_interval
        return self._backoff(self._queue_quiet.get(name, 0))

    def _recent_submit(self, now: datetime) -> bool:
        """Within ten fast intervals of a submit: its first sightings come soon."""
        return (
            self._last_submit_at is not None
            and (now - self._last_submit_at).total_seconds() < 10 * self.fast_interval
        )

    def _backoff(self, quiet: int) -> float:
        """The interval after ``quiet`` polls that changed nothing: 1.5x each, capped."""
        pace: float = self.fast_interval * 1.5 ** float(quiet)
        return min(self.max_interval, pace)

    def _late_checks(self, name: str, backend: Backend, now: datetime) -> list[_Entry]:
        """The unconfirmed verdicts of this backend to ask accounting about this poll."""
        mine = [e for e in self._unconfirmed.values() if e.item.backend == name]
        if not backend.capabilities.accounting:
            # Nothing will ever confirm them (the local backend's wait status, Flux or
            # k8s without accounting): stop carrying them.
            for entry in mine:
                del self._unconfirmed[entry.item.id]
            return []
        return [e for e in mine if self._late_check_due(e, now)]

    def _apply(
        self,
        working: dict[str, RunItem],
        by_native: _NativeIndex,
        found: Sequence[Observation],
        extras: dict[str, list[Observation]],
        events: dict[str, list[Event]],
        counts: dict[str, Any],
    ) -> None:
        """Apply ``found`` (routed to items by native id) after each item's ``extras``,
        every item's observations in observed_at order. The hot loop of a poll: an
        item with a single observation takes the short path."""
        applied = 0
        first = by_native.first
        more = by_native.more
        for obs in found:
            item_id = first.get(obs.native_id)
            if item_id is None:
                continue
            targets = (
                (item_id, *more[obs.native_id]) if more and obs.native_id in more else (item_id,)
            )
            for item_id in targets:
                pending = extras.get(item_id)
                if pending is not None:
                    pending.append(obs)
                    continue
                item = working.get(item_id)
                if item is None:
                    continue
                applied += 1
                new = self._advance(item, obs, events, counts)
                if new is not item:
                    working[item_id] = new
        for item_id, pending in extras.items():
            item = working.get(item_id)
            if item is None:
                continue
            pending.sort(key=lambda o: o.observed_at)
            for obs in pending:
                applied += 1
                item = self._advance(item, obs, events, counts)
            working[item_id] = item
        extras.clear()
        counts["observations"] += applied

    def _advance(
        self,
        item: RunItem,
        obs: Observation,
        events: dict[str, list[Event]],
        counts: dict[str, Any],
    ) -> RunItem:
        try:
            step = advance(item, obs)
        except IllegalTransition as exc:
            counts["illegal"] += 1
            self.illegal_transitions += 1
            log.warning("item %s: %s (observation from %s ignored)", item.id, exc, obs.source)
            return item
        except Exception as exc:  # a bug, or a row no check foresaw: skip this item only
            self._failed(f"item {item.id}: applying an observation from {obs.source}", exc)
            return item
        if step.events:
            if obs.source is Source.OUTPUT_CHECK:
                marker = Marker(code=MarkerCode.OUTPUT_CHECK.value, text=obs.detail[:500])
                marked = add_marker(step.item, marker, at=obs.observed_at)
                step = Step(marked.item, step.events + marked.events)
                if step.item.state in FAILURES and item.native_id is not None:
                    counts.setdefault("output_failures", []).append(item.native_id)
            events.setdefault(item.id, []).extend(step.events)
        return step.item

    async def _accounting(
        self,
        name: str,
        backend: Backend,
        working: dict[str, RunItem],
        late: Sequence[_Entry],
        events: dict[str, list[Event]],
        counts: dict[str, Any],
        now: datetime,
    ) -> str | None:
        """ONE accounting call for the settling items and the unconfirmed verdicts due
        for a late check (a late record corrects them): when the oldest settling item has
        waited ``accounting_lag`` and the last call is ``accounting_interval`` old, or when
        a late check is due; every settling item goes in that call."""
        settling = State.SETTLING
        needs = [
            item
            for item in working.values()
            if item.state is settling and item.native_id is not None
        ]
        if needs and not late:
            lag = timedelta(seconds=self.accounting_lag)
            oldest = min(item.settling_since or now for item in needs)
            last = self._last_accounting_at.get(name)
            soon = now + timedelta(seconds=2 * self.fast_interval)  # see next_interval
            expiring = any(
                (deadline := grace_deadline(item, self.grace)) is not None and deadline <= soon
                for item in needs
            )
            if not expiring and (
                now - oldest < lag
                or (last is not None and (now - last).total_seconds() < self.accounting_interval)
            ):
                return None  # next_interval wakes the loop when it is due
        needs += [working[e.item.id] for e in late if e.item.native_id is not None]
        if not needs:
            return None
        self._last_accounting_at[name] = now
        for entry in late:
            entry.checked_at = now  # asked now, answered or not: the slow rate holds
        by_native = _NativeIndex(needs)
        times = [i.stats.submitted_at or i.created_at for i in needs]
        query = AccountingQuery(native_ids=by_native.native_ids(), submitted_after=min(times))
        try:
            counts["accounting_calls"] += 1
            found = await backend.accounting(query)
        except Exception as exc:
            return self._describe(name, "accounting", exc)
        if late:
            self._drop_forgotten(by_native, found)
        with _gc_paused():
            self._apply(working, by_native, found, {}, events, counts)
        return None

    def _drop_forgotten(self, by_native: _NativeIndex, found: Sequence[Observation]) -> None:
        """Accounting says it does not know a job and never will (purged): its
        unconfirmed verdict can no longer be corrected; stop asking."""
        for obs in found:
            if obs.absence is not Absence.UNKNOWN and obs.state is not State.GONE:
                continue
            first = by_native.first.get(obs.native_id)
            if first is None:
                continue
            for item_id in (first, *by_native.more.get(obs.native_id, ())):
                if self._unconfirmed.pop(item_id, None) is not None:
                    log.info(
                        "item %s: accounting no longer knows job %s (%s); its unconfirmed "
                        "verdict stays",
                        item_id,
                        obs.native_id,
                        obs.detail or "purged",
                    )

    def _describe(self, name: str, what: str, exc: Exception) -> str:
        if isinstance(exc, BackendError):
            log.warning("backend %s: %s failed: %s", name, what, exc)
        else:
            # Not a transient error: a bug or an unreadable answer. Still never a verdict.
            log.error("backend %s: %s raised %s: %s", name, what, type(exc).__name__, exc)
        return f"{name}: {what}: {exc}"

    def _mark_status(self, name: str, error: str, now: datetime) -> None:
        old = self._status.get(name) or BackendStatus(name=name)
        self._status[name] = BackendStatus(
            name=name,
            reachable=False,
            last_error=error,
            since=old.since if not old.reachable else now,
            consecutive_failures=old.consecutive_failures + 1,
        )

    def _clear_status(self, name: str) -> None:
        old = self._status.get(name)
        if old is not None and not old.reachable:
            log.info("backend %s reachable again", name)
        self._status[name] = BackendStatus(name=name)

    def _reachability_markers(
        self,
        name: str,
        working: dict[str, RunItem],
        events: dict[str, list[Event]],
        now: datetime,
        *,
        reachable: bool,
    ) -> None:
        """Show on each unfinished item that its backend cannot be reached (and take
        the marker away once it can). Never touches the state or the verdict."""
        code = MarkerCode.UNREACHABLE.value
        if reachable and name in self._no_unreachable_markers:
            return  # the common case: nothing to take away
        status = self._status.get(name)
        if reachable:
            self._no_unreachable_markers.add(name)
        else:
            self._no_unreachable_markers.discard(name)
        for item_id, item in working.items():
            has = item.has_marker(code)
            if reachable and has:
                new = evolve(
                    item,
                    markers=tuple(m for m in item.markers if m.code != code),
                    version=item.version + 1,
                    updated_at=max(item.updated_at, now),
                )
                working[item_id] = new
                events.setdefault(item_id, []).append(_stats_event(new, now))
            elif not reachable and not has and status is not None and item.state in _POLLED:
                text = f"backend {name} unreachable since {status.since}: {status.last_error}"
                step = add_marker(item, Marker(code=code, text=text[:500]), at=now)
                working[item_id] = step.item
                events.setdefault(item_id, []).extend(step.events)

    def _persist(
        self,
        base: Mapping[str, RunItem],
        working: dict[str, RunItem],
        events: dict[str, list[Event]],
        counts: dict[str, Any],
        *,
        lease: Lease | None = None,
    ) -> tuple[list[Change], CommitResult]:
        changes: list[Change] = []
        for item_id, item in working.items():
            before = base[item_id]
            if item is before:
                continue
            changes.append(
                Change(
                    item=item,
                    expected_version=before.version,
                    events=tuple(events.get(item_id, ())),
                )
            )
        if not changes:
            return changes, CommitResult()
        try:
            result = self.store.commit(changes, lease=lease)
        except LeaseLost as exc:
            # Another process took this backend over (this one paused past the lease's
            # expiry): nothing it observed is written; it follows from now on.
            log.warning("%s; following the store from now on", exc)
            if lease is not None:
                self._leases.pop(lease.backend, None)
            counts["lease_lost"] = True
            self._force_refresh = True
            return [], CommitResult()
        applied = set(result.applied)
        counts["events"] += sum(len(c.events) for c in changes if c.item.id in applied)
        for change in changes:
            if change.item.id not in applied:
                continue
            item = change.item
            entry = self._entries.get(item.id) or self._unconfirmed.get(item.id)
            if entry is None:
                continue
            entry.item = item
            entry.version = item.version
            if item.state in TERMINAL:
                self._entries.pop(item.id, None)
                if _late_checkable(item) and not _forgotten(item, change.events):
                    self._unconfirmed[item.id] = entry
                else:
                    self._unconfirmed.pop(item.id, None)
        if result.conflicts:
            counts["conflicts"] += len(result.conflicts)
            self.conflicts += len(result.conflicts)
            # Another process wrote first: re-read those items; the next poll applies
            # fresh observations to what it wrote (never overwrite it).
            rows, _ = self.store.items_by_id(result.conflicts)
            for row in rows:
                self._entries.pop(row.item.id, None)
                self._unconfirmed.pop(row.item.id, None)
                if row.item.state in _ACTIVE:
                    self._entries[row.item.id] = _Entry(row)
                elif _late_checkable(row.item):
                    self._unconfirmed[row.item.id] = _Entry(row)
            self.wake()
        return changes, result

    # -- submitting -------------------------------------------------------------------------

    def _occupied(self, backend: str) -> int:
        return sum(
            1
            for e in self._entries.values()
            if e.item.backend == backend and e.item.state in _POLLED
        )

    async def _submit_pending(
        self,
        name: str,
        backend: Backend,
        *,
        only_run: str | None = None,
        refusals: dict[str, _Refusal] | None = None,
    ) -> int:
        """Submit the PENDING items of backend ``name`` as far as the caps allow. With
        ``refusals`` (a submit() call is waiting for the answer), a backend that cannot
        be reached ends the item as refused (once its tag is not found) instead of
        keeping it for a later try, and each refusal is recorded there by item id."""
        pending = [
            e
            for e in self._entries.values()
            if e.item.backend == name
            and e.item.state is State.PENDING
            and (only_run is None or e.item.run_id == only_run)
        ]
        if not pending:
            return 0
        pending.sort(key=lambda e: (e.item.created_at, e.item.run_id, e.item.array_index or 0))
        now = self.clock.now()
        # In doubt first: a claim without an answer (a tracker died mid-submit).
        count = 0
        for entry in [e for e in pending if e.submit_started_at is not None]:
            # Resolving one claim of a whole array settles its siblings too (their claim
            # is cleared, they leave PENDING): look again before touching each one.
            started = entry.submit_started_at
            if started is None or entry.item.state is not State.PENDING:
                continue
            if now - started < _CLAIM_STALE and not entry.item.has_marker(SUBMIT_IN_DOUBT):
                continue  # maybe another tracker is submitting it right now
            count += await self._guarded(
                f"item {entry.item.id}: resolving its submit",
                self._resolve_in_doubt(name, backend, entry),
            )
        fresh = [
            e for e in pending if e.submit_started_at is None and e.item.state is State.PENDING
        ]
        cap = self.concurrency.get(name)
        free = None if cap is None else max(0, cap - self._occupied(name))
        for run_id, group in self._submission_groups(fresh):
            if free is not None and free <= 0:
                break
            if self._whole_array(run_id):
                # One submission for the whole array (the scheduler throttles it with
                # %N); it may overshoot the cap, which then holds further submissions.
                submitted_now = await self._guarded(
                    f"run {run_id}: submitting",
                    self._submit_group(name, backend, run_id, group, whole=True, refusals=refusals),
                )
                count += submitted_now
                if free is not None:
                    free -= submitted_now
                continue
            limit = self._run_limits.get(run_id)
            if limit is not None:
                running = sum(
                    1
                    for e in self._entries.values()
                    if e.item.run_id == run_id and e.item.state in _POLLED
                )
                group = group[: max(0, limit - running)]
            for entry in group:
                if free is not None and free <= 0:
                    break
                submitted_now = await self._guarded(
                    f"item {entry.item.id}: submitting",
                    self._submit_group(
                        name, backend, run_id, [entry], whole=False, refusals=refusals
                    ),
                )
                count += submitted_now
                if free is not None:
                    free -= submitted_now
        return count

    def _whole_array(self, run_id: str) -> bool:
        try:
            return bool(self.store.run_options(run_id).get("whole_array"))
        except StoreError:
            return False

    @staticmethod
    def _submission_groups(entries: list[_Entry]) -> list[tuple[str, list[_Entry]]]:
        groups: dict[str, list[_Entry]] = {}
        for entry in entries:
            groups.setdefault(entry.item.run_id, []).append(entry)
        return list(groups.items())

    async def _submit_group(
        self,
        name: str,
        backend: Backend,
        run_id: str,
        group: list[_Entry],
        *,
        whole: bool,
        refusals: dict[str, _Refusal] | None = None,
    ) -> int:
        """Submit one job (one item, or a whole array in one go). Returns items submitted."""
        spec = self.store.run_spec(run_id)
        if spec is None:
            log.error("run %s has pending items but no stored spec; cannot submit", run_id)
            return 0
        tag = f"hpcstate-{run_id}" if whole else f"hpcstate-{group[0].item.id}"
        now = self.clock.now()
        claimed: list[_Entry] = []
        for entry in group:
            if self.store.claim_submit(entry.item.id, version=entry.version, tag=tag, at=now):
                entry.submit_tag = tag
                entry.submit_started_at = now
                claimed.append(entry)
        if len(claimed) != len(group):
            if claimed and whole:
                log.warning(
                    "run %s: only part of the array could be claimed; retrying later", run_id
                )
                for entry in claimed:
                    self.store.release_submit(entry.item.id, version=entry.version)
                    entry.submit_started_at = None
            if not claimed or whole:
                return 0
            group = claimed
        job = self._spec_for(spec, run_id, group, tag, whole=whole)
        self._last_submit_at = now
        try:
            answer = await backend.submit(job)
        except (CommandFailed, HostKeyRejected, AuthenticationFailed) as exc:
            # Refused for good (HostKeyRejected and AuthenticationFailed are transport
            # errors that no retry can fix): a failed submission, never a queued one.
            return await self._rejected(group, str(exc), refusals=refusals, cause=exc)
        except BackendError as exc:
            if refusals is not None:
                return await self._unreachable(
                    name, backend, group, tag, exc, refusals, whole=whole
                )
            # Transient: the answer may be lost. Keep the claim: the next try looks the
            # tag up first and only submits again if nothing was created.
            log.warning("run %s: submit failed (will look up tag %s): %s", run_id, tag, exc)
            return 0
        except (HpcStateError, ValueError, TypeError) as exc:
            return await self._rejected(group, str(exc), refusals=refusals, cause=exc)
        except Exception as exc:
            # A bug in the backend: the job may or may not exist. Keep the claim, like a
            # lost answer: the tag is looked up before anything is submitted again.
            self._failed(f"run {run_id}: backend {name} submit", exc)
            return 0
        return await self._submitted(group, answer, whole=whole)

    async def _unreachable(
        self,
        name: str,
        backend: Backend,
        group: list[_Entry],
        tag: str,
        exc: BackendError,
        refusals: dict[str, _Refusal],
        *,
        whole: bool,
    ) -> int:
        """A submit() call's backend could not be reached (after the backend's own
        retries). Look the tag up once: a job found is recorded as submitted; none found
        ends the items refused. If the lookup cannot answer either, the job may exist:
        the items keep their claim and get the ``submit_in_doubt`` marker, so that no
        process ever submits them again; the first lookup that answers records the job
        or ends them refused. Either way the caller hears it now (SubmitRefused)."""
        finder = getattr(backend, "find_submission", None)
        found: Submission | None = None
        failed: Exception | None = None
        if finder is None:
            failed = BackendError(f"backend {name!r} cannot look submissions up by tag")
        else:
            try:
                found = await finder(tag)
            except Exception as lookup:
                failed = lookup
        if found is not None:
            log.info("submit of tag %s: answer lost, found as %s", tag, found.native_id)
            return await self._submitted(group, found, whole=whole)
        message = f"backend {name!r} unreachable at submit: {exc}"
        if failed is None:  # the backend answered: nothing was created
            return await self._rejected(
                group, message, refusals=refusals, cause=exc, unreachable=True
            )
        text = (
            f"{message}; looking its tag {tag} up failed too ({failed}): the job may have "
            "been created; it is looked up again once the backend answers (then tracked, "
            "or the run fails), and never submitted again"
        )
        marker = Marker(code=SUBMIT_IN_DOUBT, text=text[:500])
        now = self.clock.now()

        def marking(row: ItemRow) -> Change | None:
            if row.item.state is not State.PENDING:
                return None
            step = add_marker(row.item, marker, at=now)
            if step.item is row.item:
                return None
            return Change(item=step.item, expected_version=row.item.version, events=step.events)

        changes = []
        for entry in group:
            step = add_marker(entry.item, marker, at=now)
            if step.item is not entry.item:
                changes.append(
                    Change(item=step.item, expected_version=entry.version, events=step.events)
                )
            refusals[entry.item.id] = _Refusal(text, exc, unreachable=True, in_doubt=True)
        await self._commit_entries(changes, marking, "its submit-in-doubt marker")
        return 0

    async def _rejected(
        self,
        group: list[_Entry],
        message: str,
        *,
        refusals: dict[str, _Refusal] | None = None,
        cause: BaseException | None = None,
        unreachable: bool = False,
    ) -> int:
        now = self.clock.now()
        text = message[:2000]
        if refusals is not None:
            for entry in group:
                refusals[entry.item.id] = _Refusal(text, cause, unreachable)

        def rejecting(row: ItemRow) -> Change | None:
            if row.item.state is not State.PENDING:
                return None  # another writer ended it (a cancel): nothing was created
            step = submit_rejected(row.item, at=now, message=text)
            return Change(
                item=step.item,
                expected_version=row.item.version,
                events=step.events,
                clear_submit=True,
            )

        changes = []
        for entry in group:
            step = submit_rejected(entry.item, at=now, message=text)
            changes.append(
                Change(
                    item=step.item,
                    expected_version=entry.version,
                    events=step.events,
                    clear_submit=True,
                )
            )
        await self._commit_entries(changes, rejecting, "its refused submission")
        return 0

    async def _submitted(self, group: list[_Entry], answer: Submission, *, whole: bool) -> int:
        now = self.clock.now()
        changes = []
        to_cancel: dict[str, None] = {}  # an ordered set
        task_ids = answer.array_task_ids
        natives: dict[str, str] = {}
        for position, entry in enumerate(group):
            if not whole:
                native = answer.native_id
            elif len(task_ids) == len(group):
                native = task_ids[position]
            else:
                native = f"{answer.native_id}_{entry.item.array_index}"
            natives[entry.item.id] = native
            step = submitted(entry.item, native_id=native, at=now, submitted_at=answer.submitted_at)
            changes.append(
                Change(
                    item=step.item,
                    expected_version=entry.version,
                    events=step.events,
                    clear_submit=True,
                )
            )
            if entry.item.has_marker(MarkerCode.CANCEL_REQUESTED.value):
                to_cancel[native] = None

        def recording(row: ItemRow) -> Change | None:
            # Another writer changed the item while it was being submitted (a cancel
            # request, a marker): record the job on top of what it wrote.
            item, native = row.item, natives[row.item.id]
            if item.state is State.PENDING:
                if item.has_marker(MarkerCode.CANCEL_REQUESTED.value):
                    to_cancel[native] = None
                step = submitted(item, native_id=native, at=now, submitted_at=answer.submitted_at)
                return Change(
                    item=step.item,
                    expected_version=item.version,
                    events=step.events,
                    clear_submit=True,
                )
            if item.native_id != native:
                # Ended meanwhile (cancelled before its claim was seen): the job we
                # just created must not run on untracked.
                log.warning(
                    "item %s became %s while it was submitted as %s; cancelling that job",
                    item.id,
                    item.state.value,
                    native,
                )
                to_cancel[native] = None
            return None

        await self._commit_entries(changes, recording, "the job it was submitted as")
        if to_cancel:
            await self.backend(group[0].item.backend).cancel(list(to_cancel))
        return len(group)

    async def _commit_entries(
        self, changes: list[Change], redo: Callable[[ItemRow], Change | None], what: str
    ) -> None:
        landed, lost = await self._commit_redoing(changes, redo)
        for change in landed:
            entry = self._entries.get(change.item.id)
            if entry is None:
                continue
            entry.item = change.item
            entry.version = change.item.version
            if change.clear_submit:
                entry.submit_started_at = None
            if change.item.state in TERMINAL:
                self._entries.pop(change.item.id, None)
        if lost:
            # The claim stays: the next try looks the tag up before anything else.
            self._failed(
                f"item(s) {', '.join(lost)}: {what} not stored",
                StoreError(f"other writers kept changing them for {_MARKER_ATTEMPTS} attempts"),
            )

    async def _resolve_in_doubt(self, name: str, backend: Backend, entry: _Entry) -> int:
        """A claim with no stored answer: look the tag up before submitting again."""
        finder = getattr(backend, "find_submission", None)
        tag = entry.submit_tag or ""
        if finder is None:
            log.error(
                "item %s: a submit (tag %s) may or may not have reached backend %s, which "
                "cannot look jobs up by tag; not submitting again (cancel the run to end it)",
                entry.item.id,
                tag,
                name,
            )
            return 0
        try:
            found: Submission | None = await finder(tag)
        except Exception as exc:
            log.warning("item %s: looking up tag %s failed: %s", entry.item.id, tag, exc)
            return 0
        if found is not None:
            log.info(
                "item %s: tag %s found as %s; not submitting again",
                entry.item.id,
                tag,
                found.native_id,
            )
            group = [
                e
                for e in self._entries.values()
                if e.submit_tag == tag and e.item.state is State.PENDING
            ]
            group.sort(key=lambda e: e.item.array_index or 0)
            return await self._submitted(group, found, whole=self._whole_array(entry.item.run_id))
        doubt = next((m for m in entry.item.markers if m.code == SUBMIT_IN_DOUBT), None)
        if doubt is not None:
            # Its submit() call was told it failed: never submitted again behind its back.
            group = [
                e
                for e in self._entries.values()
                if e.submit_tag == tag and e.item.state is State.PENDING
            ]
            message = f"{doubt.text.split('; looking its tag', 1)[0]}; tag {tag} not found"
            return await self._rejected(group, message)
        if self.store.release_submit(entry.item.id, version=entry.version):
            entry.submit_started_at = None
        return 0

    # -- self-reports in files, output checks ------------------------------------------------

    async def _remote_reports(
        self, backend: Backend, working: Mapping[str, RunItem], polled: list[_Entry]
    ) -> tuple[dict[str, list[Observation]], Exception | None]:
        """Self-report files, ONE read for all of them: of the items that left the queue
        and await their verdict, and, if the backend says its jobs report
        (``capabilities.self_report``), of the running ones too (a report moves a running
        item to SETTLING at once, so accounting is asked in the same poll)."""
        reader = getattr(backend, "read_text_files", None)
        if reader is None:
            return {}, None
        readable = {State.SETTLING}
        if backend.capabilities.self_report:
            # QUEUED too: with a slow queue a short job runs and ends between two calls.
            readable.update((State.QUEUED, State.RUNNING))
        wanted: dict[str, RunItem] = {}
        for entry in polled:
            item = working.get(entry.item.id)
            path = entry.extra.get("report_file")
            if (
                path
                and isinstance(path, str)
                and item is not None
                and item.state in readable
                and not item.has_marker(MarkerCode.SELF_REPORTED.value)
            ):
                wanted[path] = item
        if not wanted:
            return {}, None
        try:
            files: Mapping[str, str] = await reader(list(wanted))
        except Exception as exc:
            log.info("reading self-report files failed: %s", exc)
            return {}, exc
        now = self.clock.now()
        found: dict[str, list[Observation]] = {}
        for path, text in files.items():
            item = wanted.get(path)
            if item is None or item.native_id is None:
                continue
            try:
                parsed = SelfReport.from_dict(json.loads(text))
                found[item.id] = [parsed.observation(item.native_id, now)]
            except Exception as exc:  # whatever the file holds, it is not a verdict
                log.warning("self-report file %s ignored: %s", path, exc)
        return found, None

    async def _output_checks(
        self,
        backend: Backend,
        polled: list[_Entry],
        observations: dict[str, list[Observation]],
        now: datetime,
    ) -> None:
        reader = getattr(backend, "read_output", None)
        if reader is None:
            return
        for entry in polled:
            checks = self._checks.get(entry.item.run_id)
            if not checks or entry.item.state is not State.RUNNING or entry.item.native_id is None:
                continue
            lines = max(getattr(c, "last_lines", 50) for c in checks)
            try:
                snapshot: OutputSnapshot | None = await reader(
                    entry.item.native_id, entry.extra.get("stdout"), lines
                )
            except Exception as exc:
                log.info("item %s: cannot read output: %s", entry.item.id, exc)
                continue
            if snapshot is None:
                continue
            if snapshot.last_output_at is None and entry.item.stats.started_at is not None:
                snapshot = evolve(snapshot, last_output_at=entry.item.stats.started_at)
            for check in checks:
                try:
                    found = check.check(snapshot, native_id=entry.item.native_id, now=now)
                except Exception:
                    log.exception("output check %s failed on item %s", check.name, entry.item.id)
                    continue
                if found is not None:
                    observations[entry.item.id].append(found)
                    break

    async def _cancel_failed_by_output(self, backend: Backend, native_ids: list[str]) -> None:
        """An output check's failure verdict ends the job too (it would hang on)."""
        if native_ids and backend.capabilities.cancel:
            try:
                await backend.cancel(native_ids)
            except Exception as exc:
                log.warning("cancelling jobs failed by an output check: %s", exc)

    # -- push ---------------------------------------------------------------------------------

    def _sync_watch(self, name: str, backend: Backend) -> None:
        """Keep one watch over the backend's active jobs, if it can push."""
        watch = getattr(backend, "watch", None)
        if watch is None or not backend.capabilities.push or self._loop_task is None:
            return
        ids = frozenset(
            e.item.native_id
            for e in self._entries.values()
            if e.item.backend == name and e.item.native_id is not None and e.item.state in _POLLED
        )
        current = self._watch_tasks.get(name)
        if current is not None and current[0] == ids and not current[1].done():
            return
        if current is not None:
            current[1].cancel()
        if not ids:
            self._watch_tasks.pop(name, None)
            return

        async def follow() -> None:
            try:
                async for _ in watch(sorted(ids)):
                    self.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("watch on backend %s ended: %s", name, exc)

        self._watch_tasks[name] = (ids, asyncio.ensure_future(follow()))

    async def _wake_checker(self) -> None:
        """Self-reports land in the store from other processes: notice them quickly."""
        if _notifies(self.store):
            await self._wake_on_notify()
            return
        while True:
            await asyncio.sleep(self.wake_check_interval)
            try:
                if self.store.has_open_self_reports():
                    self.wake()
                if self._following or self._leases:
                    # The process that polls for us committed (take its news now), or a
                    # process we poll for submitted a job (poll it now).
                    version = self.store.data_version()
                    if version != self._wake_data_version:
                        self._wake_data_version = version
                        self.wake()
            except Exception as exc:
                log.debug("self-report check failed: %s", exc)

    async def _wake_on_notify(self) -> None:
        """A store that pushes its commits (PostgreSQL: LISTEN/NOTIFY) wakes this
        process when another one commits, instead of being asked on a timer: a
        follower sends no query between its own polls but the one that starts each
        wait (every ``_FOLLOWER_WAIT`` seconds at most). The holder of a lease also
        looks for self-reports every ``wake_check_interval`` (it alone consumes
        them, so that cost does not grow with the number of processes)."""
        seq = -1
        while True:
            holding = bool(self._leases)
            timeout = self.wake_check_interval if holding else _FOLLOWER_WAIT
            try:
                if seq < 0:
                    seq = self.store.last_event_seq()
                last = await self.store.wait_for_events(seq, timeout=timeout)
                if last != seq:
                    news, seq = self._news_from_others(seq), last
                    if news:
                        # The process that polls for us committed (take its news now),
                        # or a process we poll for submitted a job (poll it now).
                        self.wake()
                if self._leases and self.store.has_open_self_reports():
                    self.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server is away: the poll loop still runs
                log.debug("waiting for the store's news failed: %s", exc)
                await asyncio.sleep(max(self.wake_check_interval, 1.0))

    def _news_from_others(self, after: int) -> bool:
        """Whether the events after ``after`` call for a poll: a follower takes every
        commit; a holder only another process's submission or an item's change it has
        not made itself (its own commits NOTIFY it too, and must not make it poll
        again at once)."""
        if self._following and not self._leases:
            return True
        if not self._leases:
            return False
        for stored in self.store.events(after=after, skip_corrupt=True):
            event = stored.event
            entry = self._entries.get(event.item_id)
            if entry is None:
                if isinstance(event, Submitted):
                    return True
            elif event.version > entry.version:
                return True
        return False

    # -- one poller per backend (leases in the store) -------------------------------------

    def _lease_key(self, name: str, backend: Backend) -> str:
        from .local import LocalBackend

        if isinstance(backend, LocalBackend):
            # Local jobs are processes of one host under one job directory: a `local`
            # backend on another host (a shared PostgreSQL store) is another machine.
            return f"{name}@{socket.gethostname()}:{backend.root}"
        return name

    def _hold(self, name: str, backend: Backend, now: datetime) -> Lease | None:
        """The lease to poll ``name`` under, taken or renewed now; None while another
        live process holds it."""
        key = self._lease_key(name, backend)
        held = self._leases.get(key)
        if held is None:
            current = self.store.lease(key)  # a read: followers do not take the write lock
            if current is not None and current.live(now) and current.holder != self.holder:
                return None
        lease = self.store.acquire_lease(
            key, self.holder, ttl=timedelta(seconds=self.lease_ttl), now=now
        )
        if lease is None:
            self._leases.pop(key, None)
            return None
        if held is None or held.generation != lease.generation:
            log.info("%s polls backend %s for every process sharing the store", self.holder, name)
        self._leases[key] = lease
        return lease

    def _renew(self, lease: Lease, now: datetime, *, polled: bool, scheduler_calls: int) -> None:
        try:
            self._leases[lease.backend] = self.store.renew_lease(
                lease,
                ttl=timedelta(seconds=self.lease_ttl),
                now=now,
                polled=polled,
                scheduler_calls=scheduler_calls,
            )
        except LeaseLost as exc:
            log.warning("%s; following the store from now on", exc)
            self._leases.pop(lease.backend, None)

    def _follow(self, name: str) -> None:
        self._following.add(name)
        watching = self._watch_tasks.pop(name, None)
        if watching is not None:
            watching[1].cancel()

    async def _heartbeat(self) -> None:
        """Renew the held leases between polls (the loop may sleep longer than a lease
        lasts); a process that stops (killed, paused) stops renewing, and another takes
        over once its lease expires."""
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                for lease in list(self._leases.values()):
                    self._renew(lease, self.clock.now(), polled=False, scheduler_calls=0)
            except Exception as exc:  # the store is busy: the next beat tries again
                log.debug("renewing a lease failed: %s", exc)

    # -- the loop -------------------------------------------------------------------------

    def _after_poll(self, report: PollReport) -> None:
        if report.errors:
            self._error_polls += 1
        else:
            self._error_polls = 0
        if report.events or report.submitted:
            self._quiet_polls = 0
        else:
            self._quiet_polls += 1

    def next_interval(self) -> float:
        """Seconds until the next poll: fast after a submit, while jobs that report their
        own end are active, and when an unconfirmed verdict may be corrected soon; when
        items settle, as soon as accounting is due for them; backing off for long-running
        work, longer after errors; with jitter."""
        now = self.clock.now()
        oldest_settling: dict[str, datetime] = {}
        first_deadline: datetime | None = None  # of the settling items' graces
        reporting = pending = False
        for entry in self._entries.values():
            item = entry.item
            if item.state is State.SETTLING:
                deadline = grace_deadline(item, self.grace)
                if deadline is not None and (first_deadline is None or deadline < first_deadline):
                    first_deadline = deadline
                since = item.settling_since or now
                if item.backend not in oldest_settling or since < oldest_settling[item.backend]:
                    oldest_settling[item.backend] = since
            elif item.state is State.PENDING:
                pending = True
            elif item.state in _POLLED and _reports_itself(entry):
                reporting = True
        base: float
        if self._error_polls:
            base = min(
                self.max_error_interval, self.fast_interval * 2.0 ** float(self._error_polls)
            )
        elif self._recent_submit(now) or reporting or self._correctable_soon(now):
            base = self.fast_interval
        elif oldest_settling:
            due = self._accounting_due_in(oldest_settling, now)
            if first_deadline is not None:
                # Two fast intervals before a grace runs out, queue and accounting are
                # asked whatever their pace (the queue may still list the job).
                lead = 2 * self.fast_interval
                due.append((first_deadline - now).total_seconds() - lead)
            base = max(self.fast_interval, min(due))
        else:
            base = self._backoff(self._quiet_polls)
            if pending:
                base = min(base, 5 * self.fast_interval)
        interval = base * (0.8 + 0.4 * self._random.random())
        if oldest_settling and not self._error_polls:
            # Wake when accounting becomes due, not at the first poll after it (a
            # reporting job keeps the pace at fast_interval, which would add up to one
            # interval to every verdict).
            soonest = min(self._accounting_due_in(oldest_settling, now))
            if 0 < soonest < interval:
                interval = soonest + 0.01
        if first_deadline is not None:
            # Never jitter past the poll that asks about a grace running out.
            left = (first_deadline - now).total_seconds() - 1.5 * self.fast_interval
            interval = min(interval, max(0.1, left))
        return interval

    def _accounting_due_in(
        self, oldest_settling: Mapping[str, datetime], now: datetime
    ) -> list[float]:
        """Per backend with settling items: seconds until its accounting call is due."""
        due: list[float] = []
        for name, since in oldest_settling.items():
            wait = self.accounting_lag - (now - since).total_seconds()
            last = self._last_accounting_at.get(name)
            if last is not None:
                wait = max(wait, self.accounting_interval - (now - last).total_seconds())
            due.append(max(0.0, wait))
        return due

    def _correctable_soon(self, now: datetime) -> bool:
        """An unconfirmed verdict still inside its grace (checked every poll)."""
        return any(e.item.updated_at + self.grace > now for e in self._unconfirmed.values())

    async def _run_loop(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A poll must never kill the loop (a store hiccup, a bug in a backend).
                log.exception("poll failed")
                self._error_polls += 1
            delay = self.next_interval()
            await self._sleep_or_wake(delay)

    async def _sleep_or_wake(self, delay: float) -> None:
        if self._wake.is_set():
            self._wake.clear()
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            self._wake.clear()


#: Seconds a follower on a store that pushes its commits waits for news before it
#: looks again (a NOTIFY wakes it at once; this bounds a missed one).
_FOLLOWER_WAIT: Final = 5.0


def _notifies(store: Store) -> bool:
    """The store wakes its waiters on other processes' commits (PostgreSQL)."""
    from ._pg_store import PostgresStore

    return isinstance(store, PostgresStore)


def _reports_itself(entry: _Entry) -> bool:
    """The job writes its own report file when its payload ends (decided at submit)."""
    return entry.extra.get("self_reports") is True


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection during a CPU-bound stretch that allocates a lot of
    long-lived records (a poll over 100k items otherwise spends most of its time in
    repeated full collections). Nothing in there creates reference cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_LATE_CHECKED: Final = frozenset({State.COMPLETED, State.GONE})


def _late_checkable(item: RunItem) -> bool:
    """An unconfirmed verdict a late accounting record may still correct."""
    return item.state in _LATE_CHECKED and not item.confirmed and item.native_id is not None


def _forgotten(item: RunItem, events: Iterable[Event]) -> bool:
    """GONE because a source said it no longer knows the job and never will (a purged
    or deleted job), not because the tracker gave up waiting: nothing comes back."""
    return item.state is State.GONE and any(
        e.state is State.GONE and e.source is not Source.TRACKER for e in events
    )


def _stats_event(item: RunItem, at: datetime) -> Event:
    return StatsUpdated(
        item_id=item.id,
        run_id=item.run_id,
        native_id=item.native_id,
        at=at,
        version=item.version,
        source=Source.TRACKER,
        state=item.state,
    )
