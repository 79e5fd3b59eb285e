"""The tracker: submits, polls in batches, persists every step, tells subscribers.

Per backend and poll: ONE ``queue(ids)`` for the items that are queued, running or
settling, and ONE ``accounting(...)`` for the items that need it (settling, or an
unconfirmed verdict still inside its grace window), only if the backend has
accounting. Observations are applied in ``observed_at`` order through the pure
machine (``hpcstate.advance``), then ``hpcstate.tick``; each result is written with a
compare-and-set, so two trackers on one store never overwrite each other.

Everything needed to resume is in the store: a restarted tracker re-reads the active
items, looks a PENDING item's submit tag up before submitting it again, and goes on.

This module is the shell: the public API, the loop, and one poll's orchestration.
The work is done by its parts, which share one cache (``_cache``): the backends by name
(``_backend_set``), the run operations behind submit/track/cancel/wait and the prune
(``_runs``), the submitter and new runs (``_submitter``), one backend's poll and the
cadence (``_poller``), cancels and markers (``_cancel``), the leases (``_leases``), the
event bus with the loop's wakeups (``_bus``) and the poll's report (``_poll_report``).
None of them imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from hpcstate import DEFAULT_GRACE, Event, Marker, Run, RunItem
from hpcstate._poll import Cadence, record_failed_poll, record_poll
from hpcstate.backend import Backend, BackendConfig, JobSpec

from ._backend_set import BackendSet
from ._bus import Callback, EventBus, PushWatches, StoreWaker, Wakeup
from ._cache import Cache, Memory, Totals
from ._clock import Clock, SystemClock
from ._errors import StoreError
from ._leases import Leases
from ._output import OutputCheck
from ._poll_report import PollReport, poll_report
from ._poller import BackendCounts, BackendStatus, Poller
from ._runs import Runs
from ._store import Store
from ._submitter import SUBMIT_IN_DOUBT, SubmitRefused

__all__ = [
    "SUBMIT_IN_DOUBT",
    "BackendStatus",
    "PollReport",
    "SubmitRefused",
    "Tracker",
]

log = logging.getLogger("hpcstate.runtime.tracker")


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
        # A declared ability without its methods is refused before anything opens.
        self._backends = BackendSet(backends)
        #: Every cadence knob with its unit, checked in one place (hpcstate._poll).
        self.cadence = Cadence(
            grace=grace,
            fast_interval=fast_interval,
            max_interval=max_interval,
            max_error_interval=max_error_interval,
            queue_interval=queue_interval,
            accounting_lag=accounting_lag,
            accounting_interval=accounting_interval,
            late_check_interval=(
                max_interval if late_check_interval is None else late_check_interval
            ),
            late_check_window=late_check_window,
            lease_ttl=lease_ttl,
            wake_check_interval=wake_check_interval,
        )
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
        self.late_check_interval = self.cadence.late_check_interval
        self.queue_interval = queue_interval
        self.accounting_lag = accounting_lag
        self.accounting_interval = accounting_interval
        #: The backend ``submit`` uses when none is named.
        self.default_backend = default_backend
        #: One poller per backend among the processes sharing the store (see
        #: docs/concepts/runtime.md#one-poller-per-backend).
        self.poll_lease = poll_lease
        self.lease_ttl = lease_ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._random = random.Random(seed)
        self._wake = Wakeup()
        self._progress = asyncio.Condition()
        self._loop_task: asyncio.Task[None] | None = None
        self._aux_tasks: list[asyncio.Task[None]] = []
        self._poll_lock = asyncio.Lock()
        self._closed = False
        self._cache = Cache()
        self._memory = Memory()
        self._totals = Totals()
        self._bus = EventBus(self.store)
        self._push = PushWatches(self.wake)
        self._leases = Leases(
            self.store, holder=self.holder, ttl=lease_ttl, on_follow=self._push.stop
        )
        self._runs = Runs(
            store=self.store,
            clock=self.clock,
            cache=self._cache,
            memory=self._memory,
            totals=self._totals,
            bus=self._bus,
            concurrency=self.concurrency,
            backend=self.backend,
            conflicted=self._conflicted,
            refresh=self._refresh,
            wake=self.wake,
            progress=self._progress,
        )
        self._poller = Poller(
            store=self.store,
            clock=self.clock,
            cadence=self.cadence,
            cache=self._cache,
            memory=self._memory,
            totals=self._totals,
            bus=self._bus,
            leases=self._leases,
            submitter=self._runs.submitter,
            push=self._push,
            backend=self.backend,
            wake=self.wake,
            looping=lambda: self._loop_task is not None,
            poll_lease=poll_lease,
        )

    # -- totals since start (tests and benchmarks read them) ------------------------------

    @property
    def illegal_transitions(self) -> int:
        return self._totals.illegal_transitions

    @property
    def conflicts(self) -> int:
        return self._totals.conflicts

    @property
    def polls(self) -> int:
        return self._totals.polls

    @property
    def failures(self) -> int:
        return self._totals.failures

    def _conflicted(self, count: int) -> None:
        """Another writer changed ``count`` items first: read the cache again."""
        self._totals.conflicts += count
        self._cache.force_refresh = True

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
            waker = StoreWaker(
                self.store,
                interval=self.wake_check_interval,
                wake=self.wake,
                holding=lambda: bool(self._leases.held),
                following=lambda: bool(self._leases.following),
                version_of=self._cached_version,
            )
            self._aux_tasks.append(asyncio.ensure_future(waker.run()))
            if self.poll_lease:
                self._aux_tasks.append(asyncio.ensure_future(self._leases.heartbeat(self.clock)))

    def _cached_version(self, item_id: str) -> int | None:
        entry = self._cache.entries.get(item_id)
        return None if entry is None else entry.version

    async def aclose(self) -> None:
        """Stop polling, close backends (and the store if the tracker opened it)."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._loop_task, *self._aux_tasks) if t is not None]
        tasks += self._push.all_tasks()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._bus.close()
        await self._backends.close()
        self._leases.release_all(self.clock.now())
        if self._own_store:
            self.store.close()

    def wake(self) -> None:
        """Poll now instead of waiting for the interval (a self-report, a push event)."""
        self._wake.set()

    # -- backends -------------------------------------------------------------------------

    def add_backend(self, name: str, backend: Backend | BackendConfig) -> None:
        """Add (or replace) backend ``name``: a Backend is checked against its declared
        abilities now; a BackendConfig is made on first use."""
        self._backends.add(name, backend)

    def backend(self, name: str) -> Backend:
        """The backend called ``name``, created on first use. Raises BackendNotFound."""
        return self._backends.get(name)

    def backend_status(self, name: str) -> BackendStatus:
        return self._poller.status.get(name) or BackendStatus(name=name)

    # -- reading --------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        return self.store.get_run(run_id)

    # -- submit / track / cancel / wait ----------------------------------------------------

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
            return await self._runs.submit(
                spec, backend or self.default_backend, name, output_checks, run_id
            )

    async def track(self, backend: str, native_id: str, *, name: str = "") -> Run:
        """Adopt a job submitted by other means, by its native id."""
        async with self._poll_lock:
            return await self._runs.track(backend, native_id, name)

    async def cancel(self, run_id: str) -> Run:
        """Cancel every unfinished item of a run: PENDING ones are cancelled here;
        submitted ones get a cancel_requested marker and a backend cancel (the
        verdict comes from the backend, as always)."""
        async with self._poll_lock:
            return await self._runs.cancel(run_id)

    async def add_marker(self, item_id: str, marker: Marker) -> RunItem:
        """Attach ``marker`` to one item (a no-op if it is already there), with its
        StatsUpdated event, as a compare-and-set: a concurrent writer is re-read and the
        marker added to what it wrote. Never changes the state or the verdict. Returns
        the item as stored. Raises StoreError if the item is unknown."""
        async with self._poll_lock:
            return await self._runs.add_marker(item_id, marker)

    async def wait(self, run_id: str, *, timeout: float | None = None) -> Run:
        """Return the run once every item has a verdict (starts the poll loop if it is
        not running). Raises TimeoutError after ``timeout`` seconds."""
        self.start()
        try:
            return await asyncio.wait_for(self._runs.finished(run_id), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"run {run_id} not finished after {timeout} s") from None

    # -- subscribers ------------------------------------------------------------------------

    def subscribe(self, callback: Callback, *, run_id: str | None = None) -> Callable[[], None]:
        """Call ``callback(event)`` for each new event (of ``run_id``, or all), in
        order, once. It may be a coroutine function. Returns an unsubscribe function."""
        return self._bus.subscribe(callback, run_id=run_id)

    def watch(
        self, run_id: str | None = None, *, replay: bool | None = None
    ) -> AsyncGenerator[Event, None]:
        """Events as they happen, each once, in order per item (by version). With
        ``replay`` (the default when watching one run), first the stored history. For
        one run, the iteration ends when every item of the run has a verdict."""
        return self._bus.watch(run_id, replay=replay)

    # -- the cache ------------------------------------------------------------------------

    async def _refresh(self, *, force: bool = True) -> None:
        """Bring the cache in line with the store (other processes write too). Without
        ``force``, skipped when no other connection committed since the last look."""
        appeared = self._cache.refresh(
            self.store,
            self.clock.now(),
            force=force,
            late_check_window=self.cadence.late_check_window,
            fresh=bool(self._leases.held),
        )
        if appeared:
            # Submitted by a process this one polls for: the fast pace of a submit
            # applies to it too.
            self._memory.submitted(self.clock.now())

    # -- the poll cycle -----------------------------------------------------------------------

    async def poll_once(self) -> PollReport:
        """Run exactly one poll cycle (submit, queue, accounting, tick, persist)."""
        async with self._poll_lock:
            return await self._poll()

    async def _poll(self) -> PollReport:
        now = self.clock.now()
        self._totals.polls += 1
        self._runs.prune_if_due(now, self.retention)
        cache = self._cache
        await self._refresh(force=False)
        cache.load_run_settings(self.store, {e.item.run_id for e in cache.entries.values()})
        await self._bus.catch_up()
        reports, consumed = self._poller.self_report_observations(now)
        cache.expire_late_checks(self.cadence, now)
        backends: dict[str, int] = defaultdict(int)  # name -> its items, in first-seen order
        for entry in (*cache.entries.values(), *cache.unconfirmed.values()):
            backends[entry.item.backend] += 1
        results: list[BackendCounts] = await asyncio.gather(
            *(self._poller.poll_backend(name, reports, now) for name in backends)
        )
        polled = {name for name, r in zip(backends, results, strict=True) if r.polled}
        # A report of an item whose backend another process polls is that process's.
        used = [i for i, backend in consumed if backend is None or backend in polled]
        if used:
            self.store.consume_self_reports(used, at=now)
        report = poll_report(
            at=now,
            items=backends,
            results=results,
            self_reports=len(used),
            cache=cache,
            totals=self._totals,
        )
        self._after_poll(report)
        async with self._progress:
            self._progress.notify_all()
        return report

    # -- the loop -------------------------------------------------------------------------

    def _after_poll(self, report: PollReport) -> None:
        self._memory.ledger = record_poll(
            self._memory.ledger,
            errors=bool(report.errors),
            changed=bool(report.events or report.submitted),
        )

    def next_interval(self) -> float:
        """Seconds until the next poll: fast after a submit, while jobs that report their
        own end are active, and when an unconfirmed verdict may be corrected soon; when
        items settle, as soon as accounting is due for them; backing off for long-running
        work, longer after errors; with jitter."""
        interval = self._poller.next_interval(self._random.random())
        held_back = self._poller.takeover_wait(self.clock.now())
        if held_back is not None:
            # A lease just taken over: wake when its first queue call is due.
            interval = min(interval, held_back + 0.01)
        return interval

    async def _run_loop(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A poll must never kill the loop (a store hiccup, a bug in a backend).
                log.exception("poll failed")
                self._memory.ledger = record_failed_poll(self._memory.ledger)
            await self._wake.sleep(self.clock, self.next_interval())
