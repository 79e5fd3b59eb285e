"""Cancelling and marking: the tracker's writes that are not the poll's.

``cancel_run`` stores a run's cancel (PENDING items cancelled here, submitted ones
marked ``cancel_requested``) and asks each backend to cancel its jobs; a backend whose
cancel call failed gets ``cancel_failed`` on its items. ``add_marker`` attaches one
marker to one item. Every write is a compare-and-set whose conflicts are re-read and
re-applied on what the other writer stored; what still conflicts after
``MARKER_ATTEMPTS`` rounds is reported (raised, or counted as a failure), never dropped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

from hpcstate import (
    TERMINAL,
    Marker,
    MarkerCode,
    RunItem,
    State,
    add_marker,
    cancel_before_submit,
)
from hpcstate._machine import CANCEL_FAILED
from hpcstate.backend import Backend

from ._bus import MARKER_ATTEMPTS, EventBus
from ._cache import Cache, Totals
from ._clock import Clock
from ._errors import StoreError
from ._store import Change, ItemRow, Store


class Canceller:
    """Cancels runs and adds markers for the tracker; shares its cache, totals and bus.
    ``backend(name)`` makes or finds a backend; ``conflicted(n)`` hears of conflicts."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        cache: Cache,
        totals: Totals,
        bus: EventBus,
        backend: Callable[[str], Backend],
        conflicted: Callable[[int], None],
    ) -> None:
        self.store = store
        self.clock = clock
        self._cache = cache
        self._totals = totals
        self._bus = bus
        self._backend = backend
        self._conflicted = conflicted

    async def cancel_run(self, run_id: str) -> list[str]:
        """Store the cancel of every unfinished item of ``run_id`` and send the backend
        cancels. Returns the ids whose cancel could not be stored (other writers kept
        changing them; see :func:`lost_error`). Raises the backend's error when a cancel
        call failed (its items then carry ``cancel_failed``)."""
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
        _, lost = await self._bus.commit_redoing(changes, cancelling, self._conflicted)
        for backend_name, ids in to_cancel.items():
            await self._send_cancel(rows, backend_name, ids)
        return lost

    async def _send_cancel(
        self, rows: Sequence[ItemRow], backend_name: str, ids: Mapping[str, None]
    ) -> None:
        """The backend's cancel call; if it fails (it may or may not have acted), say so
        on the items (``cancel_failed``), so that their vanishing is never read as the
        cancel's doing, and raise."""
        try:
            await self._backend(backend_name).cancel(list(ids))
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
        _, lost = await self._bus.commit_redoing(changes, marking, self._conflicted)
        if lost:
            # The backend's error is raised to the caller anyway; the marker that could
            # not be stored is reported as a failure (logged, and in the next PollReport).
            self._totals.failed(
                f"item(s) {', '.join(lost)}: marker {CANCEL_FAILED!r} not stored",
                StoreError(f"other writers kept changing them for {MARKER_ATTEMPTS} attempts"),
            )

    async def add_marker(self, item_id: str, marker: Marker) -> RunItem:
        """See :meth:`Tracker.add_marker`."""
        for _ in range(MARKER_ATTEMPTS):
            item = self.store.get_item(item_id)
            step = add_marker(item, marker, at=self.clock.now())
            if step.item is item:
                return item
            change = Change(item=step.item, expected_version=item.version, events=step.events)
            result = self.store.commit([change])
            if result.applied:
                entry = self._cache.known(item_id)
                if entry is not None:
                    entry.item = step.item
                    entry.version = step.item.version
                await self._bus.dispatch_committed([change], result.applied, result.last_seq)
                return step.item
        raise StoreError(
            f"item {item_id}: other writers kept changing it; marker {marker.code!r} "
            f"not added after {MARKER_ATTEMPTS} attempts"
        )


def lost_error(run_id: str, lost: Sequence[str]) -> StoreError:
    """The error of a cancel whose request could not be stored on ``lost`` items."""
    return StoreError(
        f"run {run_id}: other writers kept changing item(s) {', '.join(lost)}; "
        f"their cancel request was not stored after {MARKER_ATTEMPTS} attempts "
        "(the jobs already known were asked to cancel)"
    )
