"""hpcstate.runtime.Tracker behind the same small interface as the reference loop
(hpcstate.testing.loop.ReferenceLoop).

The real tracker, a real SQLite store in a temporary directory, the simulator as its
backend and the virtual clock as its clock: what the race tests hold against the truth.
Items are keyed by item id (an item may wait PENDING, without a native id, when a submit
fails transiently).
"""

from __future__ import annotations

import contextlib
import tempfile
from datetime import timedelta
from pathlib import Path

import hpcstate as h
from hpcstate import Event, Finished, RunItem
from hpcstate.backend import JobSpec
from hpcstate.runtime import SubmitRefused, Tracker
from hpcstate.testing.simulator import SimulatedBackend, VirtualClock


class TrackerLoop:
    def __init__(self, backend: SimulatedBackend, clock: VirtualClock, *, grace: timedelta) -> None:
        self.backend = backend
        self.clock = clock
        self._dir = tempfile.TemporaryDirectory(prefix="hpcstate-races-")
        self.tracker = Tracker(
            store=str(Path(self._dir.name) / "state.db"),
            backends={"sim": backend},
            clock=clock,
            grace=grace,
            seed=0,
        )
        self.items: dict[str, RunItem] = {}
        self.first_verdicts: dict[str, Finished] = {}
        self.events: list[Event] = []
        self.calls_per_poll: list[tuple[int, int]] = []
        #: Exceptions that escaped Tracker.poll_once (each a bug), as text.
        self.crashes: list[str] = []
        self._runs: set[str] = set()
        self._run_of: dict[str, str] = {}
        self.tracker.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, Finished) and event.item_id not in self.first_verdicts:
            self.first_verdicts[event.item_id] = event

    def _reload(self) -> None:
        for run_id in self._runs:
            for item in self.tracker.get_run(run_id).items:
                self.items[item.id] = item
                self._run_of[item.id] = run_id

    async def submit(self, spec: JobSpec) -> list[str]:
        try:
            run = await self.tracker.submit(spec, backend="sim")
        except SubmitRefused as refused:  # stored (FAILED, or PENDING in doubt): tracked
            run = refused.run
        self._runs.add(run.id)
        self._reload()
        return [item.id for item in run.items]

    async def cancel(self, keys: list[str]) -> None:
        for key in keys:
            with contextlib.suppress(h.SchedulerUnavailable, h.TransportError):
                await self.tracker.cancel(self._run_of[key])

    async def poll_once(self) -> None:
        calls = self.backend.cluster.calls
        before = (calls["queue"], calls["accounting"])
        try:
            await self.tracker.poll_once()
        except Exception as exc:  # recorded, so the race goes on and the test reports it
            self.crashes.append(f"{type(exc).__name__}: {exc}")
        self.calls_per_poll.append((calls["queue"] - before[0], calls["accounting"] - before[1]))
        self._reload()

    @property
    def illegal_transitions(self) -> int:
        return self.tracker.illegal_transitions

    def item(self, key: str) -> RunItem:
        return self.items[key]

    def native_id(self, key: str) -> str | None:
        return self.items[key].native_id

    async def close(self) -> None:
        await self.tracker.aclose()
        self._dir.cleanup()
