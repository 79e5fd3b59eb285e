"""The tracker's memory between polls: its cached copy of the stored items, the
cadence memory (``hpcstate._poll.Ledger``: when each backend was last asked), and
its running totals.

Nothing here calls a backend. The cache reads the store (``refresh``), and every
other tracker module (the submitter, the poller, the lease holder) shares one
:class:`Cache`, one :class:`Memory` and one :class:`Totals`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from hpcstate import Event, RunItem, Source, State
from hpcstate._poll import Cadence, Ledger, expired_late_checks, record_submit

from ._errors import StoreError
from ._output import OutputCheck, check_from_dict
from ._store import ACTIVE_STATES, ItemRow, Store

log = logging.getLogger("hpcstate.runtime.tracker")

ACTIVE: Final = frozenset(State(s) for s in ACTIVE_STATES)
POLLED: Final = frozenset({State.QUEUED, State.RUNNING, State.SETTLING})
_LATE_CHECKED: Final = frozenset({State.COMPLETED, State.GONE})


class Entry:
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


class Memory:
    """The poll loop's memory between polls: a :class:`hpcstate._poll.Ledger`, replaced
    (never changed) through ``hpcstate._poll``'s ``record_*`` functions; one box that
    the submitter, the poller and the shell share."""

    __slots__ = ("ledger",)

    def __init__(self) -> None:
        self.ledger = Ledger()

    def submitted(self, now: datetime) -> None:
        """A submit was made (or another process's new item seen) at ``now``."""
        self.ledger = record_submit(self.ledger, now)


class Totals:
    """Counts since start (tests and benchmarks read them through the Tracker), and
    this poll's unexpected exceptions for its PollReport."""

    __slots__ = ("conflicts", "failure_texts", "failures", "illegal_transitions", "polls")

    def __init__(self) -> None:
        self.illegal_transitions = 0
        self.conflicts = 0
        self.polls = 0
        self.failures = 0
        self.failure_texts: list[str] = []  # this poll's, for its PollReport

    def failed(self, what: str, exc: BaseException) -> None:
        """An unexpected exception (a bug) from one item, check or backend: log it with
        its traceback, count it, and let the poll go on with the rest."""
        log.error("%s raised %s: %s", what, type(exc).__name__, exc, exc_info=exc)
        self.failures += 1
        self.failure_texts.append(f"{what}: {type(exc).__name__}: {exc}")

    async def guarded(self, what: str, work: Awaitable[int]) -> int:
        """``await work``; an exception (not a cancellation) is logged and counted, and
        the answer is 0."""
        try:
            return await work
        except Exception as exc:
            self.failed(what, exc)
            return 0


class Cache:
    """The active items (``entries``) and the unconfirmed verdicts still checked late
    (``unconfirmed``), as last read from or written to the store, with each run's
    output checks and array limit."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        # Terminal, unconfirmed (COMPLETED by the grace fallback, or GONE), within the
        # late-check window: accounting may still correct them.
        self.unconfirmed: dict[str, Entry] = {}
        self.corrupt: set[str] = set()
        self.checks: dict[str, tuple[OutputCheck, ...]] = {}  # run id -> checks
        self.run_limits: dict[str, int] = {}  # run id -> max running (array %N)
        # Backends none of whose cached items carries an "unreachable" marker.
        self.no_unreachable_markers: set[str] = set()
        #: Read everything again at the next refresh (a conflict, a failed poll).
        self.force_refresh = False
        self.loaded = False
        self.data_version = -1

    def known(self, item_id: str) -> Entry | None:
        return self.entries.get(item_id) or self.unconfirmed.get(item_id)

    def refresh(
        self, store: Store, now: datetime, *, force: bool, late_check_window: timedelta, fresh: bool
    ) -> bool:
        """Bring the cache in line with the store (other processes write too). Without
        ``force``, skipped when no other connection committed since the last look.
        ``fresh``: this process polls for others. Returns whether an active item
        another process submitted appeared (then, with ``fresh``, the fast pace of a
        submit applies to it too)."""
        data_version = store.data_version()
        if self.force_refresh:
            force, self.force_refresh = True, False
        if not force and self.loaded and data_version == self.data_version:
            return False
        self.data_version = data_version
        versions = store.active_versions()
        entries = self.entries
        stale = [i for i, v in versions.items() if (e := entries.get(i)) is None or e.version != v]
        for gone in [i for i in entries if i not in versions]:
            entry = entries.pop(gone)
            self.remember_unconfirmed(store, gone)
            del entry
        corrupt: set[str] = set()
        appeared = False
        if stale:
            with gc_paused():
                rows, bad = store.items_by_id(stale)
            fresh = self.loaded and fresh
            for row in rows:
                if row.item.state in ACTIVE:
                    if fresh and row.item.id not in entries:
                        appeared = True
                    entries[row.item.id] = Entry(row)
                    if row.item.markers:
                        self.no_unreachable_markers.discard(row.item.backend)
            for problem in bad:
                if problem.row_id not in self.corrupt:
                    log.error("%s (skipped; the other items are tracked)", problem)
                corrupt.add(problem.row_id)
        # Unreadable rows are never cached, so each refresh reads all of them again.
        self.corrupt = corrupt
        if not self.loaded:
            self.loaded = True
            rows, _ = store.unconfirmed_verdicts(now - late_check_window)
            for row in rows:
                if late_checkable(row.item):
                    self.unconfirmed[row.item.id] = Entry(row)
            self.load_run_settings(store, {e.item.run_id for e in entries.values()})
        return appeared

    def remember_unconfirmed(self, store: Store, item_id: str) -> None:
        with contextlib.suppress(StoreError):
            row = store.get_item_row(item_id)
            if late_checkable(row.item):
                self.unconfirmed[item_id] = Entry(row)

    def load_run_settings(self, store: Store, run_ids: Iterable[str]) -> None:
        for run_id in run_ids:
            if run_id in self.checks:
                continue
            try:
                options = store.run_options(run_id)
                checks = tuple(check_from_dict(d) for d in options.get("output_checks", ()))
            except Exception as exc:  # a bad row must not stop the other runs
                log.error("run %s: cannot load its output checks: %s", run_id, exc)
                checks = ()
                options = {}
            self.checks[run_id] = checks
            with contextlib.suppress(TypeError, ValueError):
                if options.get("max_running"):
                    self.run_limits[run_id] = int(options["max_running"])

    def reread(self, rows: Iterable[ItemRow]) -> None:
        """Take what another writer stored for these items (after a conflict)."""
        for row in rows:
            self.entries.pop(row.item.id, None)
            self.unconfirmed.pop(row.item.id, None)
            if row.item.state in ACTIVE:
                self.entries[row.item.id] = Entry(row)
            elif late_checkable(row.item):
                self.unconfirmed[row.item.id] = Entry(row)

    def expire_late_checks(self, cadence: Cadence, now: datetime) -> None:
        """Stop asking about unconfirmed verdicts older than the late-check window."""
        for item_id in expired_late_checks(cadence, self.unconfirmed, now):
            log.info(
                "item %s: no record confirmed its %s verdict within %s; no longer asking",
                item_id,
                self.unconfirmed[item_id].item.state,
                cadence.late_check_window,
            )
            del self.unconfirmed[item_id]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
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


def late_checkable(item: RunItem) -> bool:
    """An unconfirmed verdict a late accounting record may still correct."""
    return item.state in _LATE_CHECKED and not item.confirmed and item.native_id is not None


def forgotten(item: RunItem, events: Iterable[Event]) -> bool:
    """GONE because a source said it no longer knows the job and never will (a purged
    or deleted job), not because the tracker gave up waiting: nothing comes back."""
    return item.state is State.GONE and any(
        e.state is State.GONE and e.source is not Source.TRACKER for e in events
    )
