"""Events: subscribers and watchers, delivery in the store's log order (this process's
commits after any other process's events before them), compare-and-set commits that
re-apply on conflict, the push watches of backends that push, and the waits that wake
the poll loop on other processes' news (a timer on SQLite, LISTEN/NOTIFY on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from typing import Final

from hpcstate import TERMINAL, Event, Submitted

from ._clock import Clock
from ._store import Change, ItemRow, Store, StoredEvent

log = logging.getLogger("hpcstate.runtime.tracker")

#: Compare-and-set attempts of a change against concurrent writers.
MARKER_ATTEMPTS: Final = 20
#: Seconds a follower on a store that pushes its commits waits for news before it
#: looks again (a NOTIFY wakes it at once; this bounds a missed one).
FOLLOWER_WAIT: Final = 5.0

Callback = Callable[[Event], "Awaitable[None] | None"]


class Watcher:
    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()


class EventBus:
    """Who listens (``watch`` iterators and ``subscribe`` callbacks), and the last
    event of the store's log they were given (``seen_seq``)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.watchers: list[Watcher] = []
        self.callbacks: list[tuple[str | None, Callback]] = []
        self.seen_seq = store.last_event_seq()

    def subscribe(self, callback: Callback, *, run_id: str | None = None) -> Callable[[], None]:
        entry = (run_id, callback)
        self.callbacks.append(entry)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self.callbacks.remove(entry)

        return unsubscribe

    async def watch(
        self, run_id: str | None = None, *, replay: bool | None = None
    ) -> AsyncGenerator[Event, None]:
        if replay is None:
            replay = run_id is not None
        watcher = Watcher(run_id)
        self.watchers.append(watcher)  # before replaying: nothing can fall in between
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
                self.watchers.remove(watcher)

    def close(self) -> None:
        """End every watch iteration."""
        for watcher in self.watchers:
            watcher.queue.put_nowait(None)

    async def deliver(self, events: Iterable[Event]) -> None:
        for event in events:
            for watcher in self.watchers:
                if watcher.run_id is None or watcher.run_id == event.run_id:
                    watcher.queue.put_nowait(event)
            for run_filter, callback in list(self.callbacks):
                if run_filter is not None and run_filter != event.run_id:
                    continue
                try:
                    result = callback(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("event callback %r failed on %s", callback, event)

    async def dispatch_committed(
        self, changes: Sequence[Change], applied: Sequence[str], last_seq: int
    ) -> None:
        """Deliver the events of the changes that landed, after any event another
        process wrote before them (the log's order)."""
        if not (self.watchers or self.callbacks):
            self.seen_seq = max(self.seen_seq, last_seq)
            return
        done = set(applied)
        mine = [e for c in changes if c.item.id in done for e in c.events]
        first_mine = last_seq - len(mine)
        if first_mine > self.seen_seq:
            await self.deliver_foreign(until=first_mine)
        await self.deliver(mine)
        self.seen_seq = max(self.seen_seq, last_seq)

    async def deliver_foreign(self, until: int | None = None) -> None:
        if not (self.watchers or self.callbacks):
            self.seen_seq = max(self.seen_seq, until or self.store.last_event_seq())
            return
        stored: list[StoredEvent] = self.store.events(after=self.seen_seq, skip_corrupt=True)
        for entry in stored:
            if until is not None and entry.seq > until:
                break
            await self.deliver([entry.event])
            self.seen_seq = entry.seq

    async def catch_up(self) -> None:
        """Deliver what other processes logged since the last look."""
        if self.seen_seq < self.store.last_event_seq():
            await self.deliver_foreign()

    async def commit_redoing(
        self,
        changes: Sequence[Change],
        redo: Callable[[ItemRow], Change | None],
        conflicted: Callable[[int], None],
    ) -> tuple[list[Change], list[str]]:
        """Commit ``changes`` as compare-and-sets. An item another writer changed first
        is re-read and ``redo(row)`` rebuilds its change on what that writer stored
        (None: nothing left to do there), for up to ``MARKER_ATTEMPTS`` rounds;
        ``conflicted(n)`` hears of each round's conflicts. Returns the changes that
        landed and the ids still conflicting after the last round (the caller reports
        them); a conflict is never dropped silently."""
        landed: list[Change] = []
        pending = list(changes)
        for _ in range(MARKER_ATTEMPTS):
            if not pending:
                break
            result = self.store.commit(pending)
            await self.dispatch_committed(pending, result.applied, result.last_seq)
            applied = set(result.applied)
            landed += [c for c in pending if c.item.id in applied]
            if not result.conflicts:
                return landed, []
            conflicted(len(result.conflicts))
            rows, bad = self.store.items_by_id(result.conflicts)
            for problem in bad:
                log.error("%s: cannot re-apply a change to it", problem)
            pending = [c for row in rows if (c := redo(row)) is not None]
        return landed, [c.item.id for c in pending]


class Wakeup:
    """The poll loop's alarm clock: :meth:`set` (a self-report, a push event, news in the
    store) ends the current wait, or the next one at once."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def sleep(self, clock: Clock, delay: float) -> None:
        """Wait ``delay`` seconds on ``clock``, or until :meth:`set`."""
        if self._event.is_set():
            self._event.clear()
            return
        sleeper = asyncio.ensure_future(clock.sleep(delay))
        waker = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            self._event.clear()


class PushWatches:
    """One watch per backend that pushes, over its active jobs: each event it yields
    wakes the poll loop (the poll then asks as usual)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self.tasks: dict[str, tuple[frozenset[str], asyncio.Task[None]]] = {}

    def sync(
        self,
        name: str,
        watch: Callable[[Sequence[str]], AsyncIterator[object]],
        ids: frozenset[str],
    ) -> None:
        current = self.tasks.get(name)
        if current is not None and current[0] == ids and not current[1].done():
            return
        if current is not None:
            current[1].cancel()
        if not ids:
            self.tasks.pop(name, None)
            return

        async def follow() -> None:
            try:
                async for _ in watch(sorted(ids)):
                    self._wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("watch on backend %s ended: %s", name, exc)

        self.tasks[name] = (ids, asyncio.ensure_future(follow()))

    def stop(self, name: str) -> None:
        watching = self.tasks.pop(name, None)
        if watching is not None:
            watching[1].cancel()

    def all_tasks(self) -> list[asyncio.Task[None]]:
        return [task for _, task in self.tasks.values()]


class StoreWaker:
    """Wakes the poll loop on news in the store: self-reports that landed from other
    processes, the commits of the process that polls for this one (a follower), or a
    submission by a process this one polls for (a holder)."""

    def __init__(
        self,
        store: Store,
        *,
        interval: float,
        wake: Callable[[], None],
        holding: Callable[[], bool],
        following: Callable[[], bool],
        version_of: Callable[[str], int | None],
    ) -> None:
        self.store = store
        self.interval = interval
        self._wake = wake
        self._holding = holding
        self._following = following
        self._version_of = version_of
        self._data_version = -1

    async def run(self) -> None:
        """Self-reports land in the store from other processes: notice them quickly."""
        if _notifies(self.store):
            await self._wake_on_notify()
            return
        while True:
            await asyncio.sleep(self.interval)
            try:
                if self.store.has_open_self_reports():
                    self._wake()
                if self._following() or self._holding():
                    # The process that polls for us committed (take its news now), or a
                    # process we poll for submitted a job (poll it now).
                    version = self.store.data_version()
                    if version != self._data_version:
                        self._data_version = version
                        self._wake()
            except Exception as exc:
                log.debug("self-report check failed: %s", exc)

    async def _wake_on_notify(self) -> None:
        """A store that pushes its commits (PostgreSQL: LISTEN/NOTIFY) wakes this
        process when another one commits, instead of being asked on a timer: a
        follower sends no query between its own polls but the one that starts each
        wait (every ``FOLLOWER_WAIT`` seconds at most). The holder of a lease also
        looks for self-reports every ``interval`` (it alone consumes them, so that
        cost does not grow with the number of processes)."""
        seq = -1
        while True:
            holding = self._holding()
            timeout = self.interval if holding else FOLLOWER_WAIT
            try:
                if seq < 0:
                    seq = self.store.last_event_seq()
                last = await self.store.wait_for_events(seq, timeout=timeout)
                if last != seq:
                    news, seq = self.news_from_others(seq), last
                    if news:
                        # The process that polls for us committed (take its news now),
                        # or a process we poll for submitted a job (poll it now).
                        self._wake()
                if self._holding() and self.store.has_open_self_reports():
                    self._wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server is away: the poll loop still runs
                log.debug("waiting for the store's news failed: %s", exc)
                await asyncio.sleep(max(self.interval, 1.0))

    def news_from_others(self, after: int) -> bool:
        """Whether the events after ``after`` call for a poll: a follower takes every
        commit; a holder only another process's submission or an item's change it has
        not made itself (its own commits NOTIFY it too, and must not make it poll
        again at once)."""
        holding = self._holding()
        if self._following() and not holding:
            return True
        if not holding:
            return False
        for stored in self.store.events(after=after, skip_corrupt=True):
            event = stored.event
            version = self._version_of(event.item_id)
            if version is None:
                if isinstance(event, Submitted):
                    return True
            elif event.version > version:
                return True
        return False


def _notifies(store: Store) -> bool:
    """The store wakes its waiters on other processes' commits (PostgreSQL)."""
    from ._pg_store import PostgresStore

    return isinstance(store, PostgresStore)
