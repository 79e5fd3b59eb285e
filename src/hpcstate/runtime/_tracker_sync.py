"""A blocking facade over Tracker, for callers without an event loop.

The tracker runs on its own event loop in a background thread; each method submits
a coroutine to it and waits for the answer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from datetime import timedelta
from typing import Any, TypeVar

from hpcstate import DEFAULT_GRACE, Marker, Run, RunItem
from hpcstate.backend import Backend, BackendConfig, JobSpec

from ._output import OutputCheck
from ._store import Store
from ._tracker import PollReport, Tracker

T = TypeVar("T")


class SyncTracker:
    """``SyncTracker(**tracker_arguments)``: same arguments as :class:`Tracker`; the
    poll loop runs in a background thread until :meth:`close` (or the ``with`` block
    ends)."""

    def __init__(
        self,
        *,
        store: Store | str | None = None,
        backends: Mapping[str, Backend | BackendConfig] | None = None,
        grace: timedelta = DEFAULT_GRACE,
        start: bool = True,
        **options: Any,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="hpcstate-tracker", daemon=True
        )
        self._thread.start()

        async def make() -> Tracker:
            tracker = Tracker(store=store, backends=backends, grace=grace, **options)
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
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def __enter__(self) -> SyncTracker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def submit(
        self,
        spec: JobSpec,
        *,
        backend: str = "local",
        name: str = "",
        output_checks: Sequence[OutputCheck] = (),
    ) -> Run:
        return self._call(
            self.tracker.submit(spec, backend=backend, name=name, output_checks=output_checks)
        )

    def track(self, backend: str, native_id: str, *, name: str = "") -> Run:
        return self._call(self.tracker.track(backend, native_id, name=name))

    def cancel(self, run_id: str) -> Run:
        return self._call(self.tracker.cancel(run_id))

    def add_marker(self, item_id: str, marker: Marker) -> RunItem:
        return self._call(self.tracker.add_marker(item_id, marker))

    def wait(self, run_id: str, *, timeout: float | None = None) -> Run:
        return self._call(self.tracker.wait(run_id, timeout=timeout))

    def poll_once(self) -> PollReport:
        return self._call(self.tracker.poll_once())

    def get_run(self, run_id: str) -> Run:
        return self.tracker.get_run(run_id)

    def subscribe(
        self, callback: Callable[[Any], None], *, run_id: str | None = None
    ) -> Callable[[], None]:
        """``callback(event)`` runs on the tracker's thread."""

        async def add() -> Callable[[], None]:
            return self.tracker.subscribe(callback, run_id=run_id)

        return self._call(add())

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
