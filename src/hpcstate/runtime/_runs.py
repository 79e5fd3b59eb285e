"""The tracker's run operations behind its public API: a new run stored and handed to
the submitter, a job adopted, a run cancelled or marked, a wait for a run's verdicts,
and the retention prune. The tracker holds its poll lock around each; none of them
polls. The submitter (``_submitter``, which the poller uses too) and the canceller
(``_cancel``) are made here, on the tracker's shared cache, memory, totals and bus.

``refresh()`` brings the tracker's cache in line with the store, ``wake()`` asks the
loop for a poll now, ``progress`` is notified after every poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta

from hpcstate import TERMINAL, ConfigError, Marker, Run, RunItem
from hpcstate.backend import Backend, JobSpec

from ._bus import EventBus
from ._cache import Cache, Memory, Totals
from ._cancel import Canceller, lost_error
from ._clock import Clock
from ._output import OutputCheck
from ._store import Store
from ._submitter import (
    Refusal,
    Submitter,
    new_run_id,
    refused,
    store_adopted_run,
    store_new_run,
)

__all__ = ["Runs"]

log = logging.getLogger("hpcstate.runtime.tracker")


class Runs:
    """Submits, adopts, cancels, marks and waits for runs for the tracker (see the
    Tracker's methods of the same names for what each promises). ``backend(name)``
    makes or finds a backend; ``conflicted(n)`` hears of conflicts."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        cache: Cache,
        memory: Memory,
        totals: Totals,
        bus: EventBus,
        concurrency: Mapping[str, int],
        backend: Callable[[str], Backend],
        conflicted: Callable[[int], None],
        refresh: Callable[[], Awaitable[None]],
        wake: Callable[[], None],
        progress: asyncio.Condition,
    ) -> None:
        self.store = store
        self.clock = clock
        self._cache = cache
        self._memory = memory
        self._backend = backend
        self.submitter = Submitter(
            store=store,
            clock=clock,
            cache=cache,
            memory=memory,
            totals=totals,
            bus=bus,
            concurrency=concurrency,
            backend=backend,
            conflicted=conflicted,
        )
        self._canceller = Canceller(
            store=store,
            clock=clock,
            cache=cache,
            totals=totals,
            bus=bus,
            backend=backend,
            conflicted=conflicted,
        )
        self._refresh = refresh
        self._wake = wake
        self._progress = progress
        self._last_prune: datetime | None = None

    async def submit(
        self,
        spec: JobSpec,
        backend: str,
        name: str,
        output_checks: Sequence[OutputCheck],
        run_id: str | None,
    ) -> Run:
        target = self._backend(backend)
        now = self.clock.now()
        run_id = run_id or new_run_id(self.clock)
        store_new_run(
            store=self.store,
            cache=self._cache,
            submitter=self.submitter,
            target=target,
            spec=spec,
            backend=backend,
            name=name,
            output_checks=output_checks,
            run_id=run_id,
            now=now,
        )
        self._memory.submitted(now)
        await self._refresh()
        refusals: dict[str, Refusal] = {}
        await self.submitter.submit_pending(backend, target, only_run=run_id, refusals=refusals)
        self._wake()
        stored = self.store.get_run(run_id)
        if refusals:
            raise refused(stored, refusals)
        return stored

    async def track(self, backend: str, native_id: str, name: str) -> Run:
        target = self._backend(backend)
        if not target.capabilities.adopt:
            raise ConfigError(f"backend {backend!r} cannot adopt jobs it did not submit")
        now = self.clock.now()
        run_id = new_run_id(self.clock)
        store_adopted_run(
            store=self.store,
            backend=backend,
            native_id=native_id,
            name=name,
            run_id=run_id,
            now=now,
        )
        self._memory.submitted(now)
        await self._refresh()
        self._wake()
        return self.store.get_run(run_id)

    async def cancel(self, run_id: str) -> Run:
        lost = await self._canceller.cancel_run(run_id)
        await self._refresh()
        self._wake()
        if lost:
            raise lost_error(run_id, lost)
        return self.store.get_run(run_id)

    async def add_marker(self, item_id: str, marker: Marker) -> RunItem:
        return await self._canceller.add_marker(item_id, marker)

    async def finished(self, run_id: str) -> Run:
        """The run once every item has a verdict (re-read after each poll)."""
        while True:
            run = self.store.get_run(run_id)
            if all(item.state in TERMINAL for item in run.items):
                return run
            async with self._progress:
                await self._progress.wait()

    def prune_if_due(self, now: datetime, retention: timedelta | None) -> None:
        """Prune finished runs older than ``retention`` (None: never), at most once a
        day; a failure is logged, and tried again a day later."""
        if retention is None or (
            self._last_prune is not None and now - self._last_prune <= timedelta(days=1)
        ):
            return
        self._last_prune = now
        try:
            self.store.prune(older_than=retention, now=now)
        except Exception as exc:
            log.warning("pruning old runs failed: %s", exc)
