"""A blocking facade over Tracker, for callers without an event loop.

The tracker runs on its own event loop in a background thread; each method submits
a coroutine to it and waits for the answer. Every call of :class:`Tracker` is here,
blocking; ``watch`` is an ordinary iterator.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from datetime import timedelta
from typing import Any, TypeVar

from hpcstate import DEFAULT_GRACE, Event, Marker, Run, RunItem
from hpcstate.backend import Backend, BackendConfig, JobSpec

from ._errors import StoreError
from ._output import OutputCheck
from ._store import Store
from ._tracker import BackendStatus, PollReport, Tracker

T = TypeVar("T")


class SyncTracker:
    """``SyncTracker(**tracker_arguments)``: same arguments as :class:`Tracker`; the
    poll loop runs in a background thread until :meth:`close` (or the ``with`` block
    ends). ``start=False`` leaves the loop stopped (drive it with :meth:`poll_once`).
    Exceptions are those of the Tracker's calls, raised in the caller's thread."""

    def __init__(
        self,
        *,
        store: Store | str | os.PathLike[str] | None = None,
        backends: Mapping[str, Backend | BackendConfig] | None = None,
        grace: timedelta = DEFAULT_GRACE,
        start: bool = True,
        **options: Any,
    ) -> None:
        self._make(lambda: Tracker(store=store, backends=backends, grace=grace, **options), start)

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        start: bool = True,
        **options: Any,
    ) -> SyncTracker:
        """:meth:`Tracker.from_config`, blocking: the file the ``hpcstate`` command reads."""
        self = cls.__new__(cls)
        self._make(lambda: Tracker.from_config(path, env=env, **options), start)
        return self

    def _make(self, factory: Callable[[], Tracker], start: bool) -> None:
        self._closed = True
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="hpcstate-tracker", daemon=True
        )
        self._thread.start()

        async def make() -> Tracker:
            tracker = factory()
            if start:
                tracker.start()
            return tracker

        try:
            self.tracker: Tracker = self._call(make())
        except BaseException:
            self._stop_loop()
            raise
        self._closed = False

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._loop.is_closed():
            coro.close()
            raise StoreError("this tracker is closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def __enter__(self) -> SyncTracker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def store(self) -> Store:
        return self.tracker.store

    @property
    def default_backend(self) -> str:
        return self.tracker.default_backend

    # Totals since start (read without a round trip: plain integers).

    @property
    def illegal_transitions(self) -> int:
        return self.tracker.illegal_transitions

    @property
    def conflicts(self) -> int:
        return self.tracker.conflicts

    @property
    def polls(self) -> int:
        return self.tracker.polls

    @property
    def failures(self) -> int:
        return self.tracker.failures

    # -- the calls of Tracker, blocking ------------------------------------------------

    def submit(
        self,
        spec: JobSpec,
        *,
        backend: str | None = None,
        name: str = "",
        output_checks: Sequence[OutputCheck] = (),
        run_id: str | None = None,
    ) -> Run:
        return self._call(
            self.tracker.submit(
                spec, backend=backend, name=name, output_checks=output_checks, run_id=run_id
            )
        )

    def track(self, backend: str, native_id: str, *, name: str = "") -> Run:
        return self._call(self.tracker.track(backend, native_id, name=name))

    def cancel(self, run_id: str) -> Run:
        return self._call(self.tracker.cancel(run_id))

    def add_marker(self, item_id: str, marker: Marker) -> RunItem:
        return self._call(self.tracker.add_marker(item_id, marker))

    def wait(self, run_id: str, *, timeout: float | None = None) -> Run:
        return self._call(self.tracker.wait(run_id, timeout=timeout))

    def watch(self, run_id: str | None = None, *, replay: bool | None = None) -> Iterator[Event]:
        """:meth:`Tracker.watch` as a blocking iterator: each event once, in order per
        item, as it lands; for one run it ends when every item has a verdict (without
        a run id it ends when the tracker is closed). Leaving the loop early (``break``)
        unsubscribes."""
        events = self.tracker.watch(run_id, replay=replay)
        done = object()

        async def step() -> object:
            try:
                return await events.__anext__()
            except StopAsyncIteration:
                return done

        try:
            while True:
                event = self._call(step())
                if event is done:
                    return
                assert isinstance(event, Event)
                yield event
        finally:
            if self._thread.is_alive():
                self._call(events.aclose())

    def poll_once(self) -> PollReport:
        return self._call(self.tracker.poll_once())

    def get_run(self, run_id: str) -> Run:
        return self._call(self._run_here(lambda: self.tracker.get_run(run_id)))

    def subscribe(
        self, callback: Callable[[Any], None], *, run_id: str | None = None
    ) -> Callable[[], None]:
        """``callback(event)`` runs on the tracker's thread. Returns an unsubscribe
        function (callable from any thread)."""
        unsubscribe = self._call(
            self._run_here(lambda: self.tracker.subscribe(callback, run_id=run_id))
        )

        def remove() -> None:
            if self._thread.is_alive():
                self._call(self._run_here(unsubscribe))

        return remove

    def add_backend(self, name: str, backend: Backend | BackendConfig) -> None:
        self._call(self._run_here(lambda: self.tracker.add_backend(name, backend)))

    def backend(self, name: str) -> Backend:
        return self._call(self._run_here(lambda: self.tracker.backend(name)))

    def backend_status(self, name: str) -> BackendStatus:
        return self._call(self._run_here(lambda: self.tracker.backend_status(name)))

    def next_interval(self) -> float:
        return self._call(self._run_here(self.tracker.next_interval))

    def wake(self) -> None:
        self._loop.call_soon_threadsafe(self.tracker.wake)

    def start(self) -> None:
        self._call(self._run_here(self.tracker.start))

    @staticmethod
    async def _run_here(function: Callable[[], T]) -> T:
        """Run a plain call on the tracker's thread (its state is not thread-safe)."""
        return function()

    # -- closing ------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self.tracker.aclose())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
