"""The poller's commit when another writer wins one item: only the changes the store
applied count (their events) and reach the cache; the lost one is re-read. A real
SQLite file with two connections: the tracker's, and another writer's that commits a
marker on one item just before the poll's commit (the one place the window matters)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import hpcstate as h
from hpcstate import Observation, Source, State
from hpcstate.backend import JobSpec
from hpcstate.runtime import Change, CommitResult, Store, Tracker
from hpcstate.runtime._store import Lease

from .fakes import ScriptedBackend, VirtualClock


class RacedStore(Store):
    """A real store whose next commit is preceded by another connection's write of a
    marker on ``item_id`` (the submits go through untouched)."""

    race_on: str | None = None

    def commit(self, changes: Sequence[Change], *, lease: Lease | None = None) -> CommitResult:
        item_id, self.race_on = self.race_on, None
        if item_id is not None:
            with Store(self.path, sweep=False) as other:
                item = other.get_item(item_id)
                step = h.add_marker(item, h.Marker(code="note", text="theirs"), at=item.updated_at)
                done = other.commit(
                    [Change(item=step.item, expected_version=item.version, events=step.events)]
                )
                assert done.applied == (item_id,)
        return super().commit(changes, lease=lease)


def _running(native_id: str, clock: VirtualClock) -> Observation:
    return Observation(
        native_id=native_id, source=Source.QUEUE, observed_at=clock.now(), state=State.RUNNING
    )


async def test_a_change_another_writer_won_is_not_counted_nor_cached(
    db_path: Path, clock: VirtualClock
) -> None:
    fake = ScriptedBackend()
    store = RacedStore(db_path)
    tracker = Tracker(store=store, backends={"fake": fake}, clock=clock, poll_lease=False)  # type: ignore[dict-item]
    one = await tracker.submit(JobSpec(command=["x"]), backend="fake")
    two = await tracker.submit(JobSpec(command=["y"]), backend="fake")
    ids = [one.items[0].id, two.items[0].id]
    natives = [one.items[0].native_id, two.items[0].native_id]
    assert None not in natives
    for native in natives:
        assert native is not None
        fake.queue_answers[native] = _running(native, clock)
    clock.advance(1)
    store.race_on = ids[1]
    report = await tracker.poll_once()
    assert report.conflicts == 1
    # Item one's queued -> running is one event (Started); item two's was not stored.
    assert report.events == 1
    first = store.get_item(ids[0])
    assert first.state is State.RUNNING
    second = store.get_item(ids[1])
    assert second.state is State.QUEUED  # the other writer's version: its marker only
    assert second.has_marker("note")
    # The tracker re-read the lost item: the next poll applies the queue to it.
    clock.advance(1)
    report = await tracker.poll_once()
    assert report.conflicts == 0
    assert store.get_item(ids[1]).state is State.RUNNING
    assert store.get_item(ids[1]).has_marker("note")
    await tracker.aclose()
