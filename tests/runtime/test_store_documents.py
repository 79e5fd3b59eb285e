"""The fast document writer (``hpcstate.serial.DocumentWriter``, the one the store
uses): the converter's text, byte for byte, only faster.

The store writes item and event documents without going through cattrs (the worst poll
writes 100k items and 200k events). What it writes must be exactly what the converter
would have written: these tests compare the two on generated records, including odd
text, odd offsets, NaN, huge ints and shared timestamps, and on a record with a field
the writer was never told about.
"""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st

import hpcstate as h
from hpcstate import (
    AwaitingConfirmation,
    Corrected,
    Event,
    ExitStatus,
    Finished,
    JobStats,
    Marker,
    Reason,
    ReasonKind,
    Requeued,
    Run,
    RunItem,
    Source,
    Started,
    State,
    StatsUpdated,
    Submitted,
    serial,
)
from hpcstate.runtime import Store
from hpcstate.runtime._store import (
    _BATCH,
    _EVENT_ROWS,
    Change,
    _Documents,
    format_time,
)
from hpcstate.serial import (
    DocumentWriter,
    event_from_dict,
    event_to_dict,
    item_from_dict,
    item_to_dict,
)
from hpcstate.serial import dumps as _dumps
from hpcstate.testing.strategies import aware_datetimes, exit_statuses

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

# Any text, lone surrogates and control characters included (both writers escape them).
texts = st.text(st.characters(exclude_categories=()), max_size=12)
names = st.text(max_size=8)
big_ints = st.integers(min_value=-(2**70), max_value=2**70)
sizes = st.integers(min_value=0, max_value=2**70)
seconds = (
    st.floats(min_value=0, allow_infinity=True)
    | st.just(math.nan)  # the validator lets NaN through: it must be written as before
    | st.integers(0, 10**6)
)

# A few instants shared by many records (a poll's observation times), seen in UTC and
# in other offsets, with and without microseconds; and arbitrary aware datetimes.
_SHARED = [T0, T0 + timedelta(microseconds=1), T0 + timedelta(seconds=30, microseconds=500)]
shared_times = st.builds(
    lambda instant, minutes: instant.astimezone(timezone(timedelta(minutes=minutes))),
    st.sampled_from(_SHARED),
    st.sampled_from([0, 0, 0, 60, -330]),
)
times = shared_times | aware_datetimes()
optional_times = st.none() | times

exits = (
    st.none() | exit_statuses() | st.builds(ExitStatus, code=st.integers(0, 255), ambiguous=texts)
)
sources = st.sampled_from(Source)
states = st.sampled_from(State)

reasons = st.none() | st.builds(
    Reason,
    kind=st.sampled_from(ReasonKind),
    text=texts,
    signal=st.none() | big_ints,
    uid=st.none() | big_ints,
    detail=texts,
)

stats = st.builds(
    JobStats,
    exit=exits,
    exit_source=st.none() | sources,
    derived_exit=exits,
    reason=reasons,
    submitted_at=optional_times,
    started_at=optional_times,
    finished_at=optional_times,
    finished_at_approx=st.booleans(),
    elapsed_s=st.none() | seconds,
    cpu_time_s=st.none() | seconds,
    max_rss_bytes=st.none() | sizes,
    nodes=st.lists(texts, max_size=3).map(tuple),
    confirmed_by=st.none() | sources,
)

items = st.builds(
    RunItem,
    id=texts,
    run_id=texts,
    backend=names,
    native_id=st.none() | texts,
    array_index=st.none() | big_ints,
    name=texts,
    state=states,
    version=big_ints,
    stats=stats,
    markers=st.lists(st.builds(Marker, code=texts, text=texts), max_size=3).map(tuple),
    restarts=big_ints,
    handle=st.none() | texts,
    created_at=times,
    updated_at=times,
    last_seen_at=optional_times,
    last_active_at=optional_times,
    settling_since=optional_times,
    settling_cause=st.none() | texts,
)

_EVENT_FIELDS: dict[str, Any] = {
    "item_id": texts,
    "run_id": texts,
    "native_id": st.none() | texts,
    "at": times,
    "version": big_ints,
    "source": sources,
    "state": states,
}
events: st.SearchStrategy[Event] = st.one_of(
    *(st.builds(cls, **_EVENT_FIELDS) for cls in (Submitted, Started, AwaitingConfirmation)),
    st.builds(StatsUpdated, **_EVENT_FIELDS),
    st.builds(Finished, confirmed=st.booleans(), exit=exits, **_EVENT_FIELDS),
    st.builds(Corrected, previous=states, exit=exits, **_EVENT_FIELDS),
    st.builds(Requeued, previous=states, restarts=big_ints, **_EVENT_FIELDS),
)


def has_nan(document: str) -> bool:
    return "NaN" in document  # NaN != NaN: such a record cannot compare equal to itself


@attrs.frozen(kw_only=True)
class _Extra:
    note: str
    at: datetime | None = None


@attrs.frozen(kw_only=True)
class _GrownItem(RunItem):
    """RunItem with fields added later: the writer is generated from the fields, so it
    needs no edit for them (the fields of kinds it has no encoder for go through
    the converter)."""

    priority: int = 0
    labels: tuple[str, ...] = ()
    extra: _Extra | None = None
    weights: dict[str, float] = attrs.field(factory=dict)
    urgent: bool | None = None


def test_a_field_added_to_an_item_is_written_with_no_edit_to_the_writer() -> None:
    codegen = serial._Codegen()
    encode = codegen.function(codegen.encoder(_GrownItem))
    base = h.new_item(id="a", run_id="r", backend="b", now=T0)
    grown = _GrownItem(
        **{a.name: getattr(base, a.name) for a in attrs.fields(RunItem)},
        priority=7,
        labels=("x", "ü"),
        extra=_Extra(note="n", at=T0),
        weights={"gpu": 0.5},
        urgent=True,
    )
    expected = _dumps(serial._CONVERTER.unstructure(grown))
    text = encode(grown, {None: "null"}.get, DocumentWriter().time)
    assert text == expected
    document = json.loads(text)
    assert (document["priority"], document["labels"], document["extra"]) == (
        7,
        ["x", "ü"],
        {"note": "n", "at": "2026-03-01T12:00:00Z"},
    )
    assert (document["weights"], document["urgent"]) == ({"gpu": 0.5}, True)


@settings(max_examples=300)
@given(st.lists(items, min_size=1, max_size=6))
def test_item_documents_are_the_serializers_byte_for_byte(generated: list[RunItem]) -> None:
    documents = DocumentWriter()  # one per commit: later items find earlier timestamps
    for item in generated:
        expected = _dumps(item_to_dict(item))
        assert documents.fast_item(item) == expected  # the fast path itself, no fallback
        assert documents.item(item) == expected
        if not has_nan(expected):
            assert item_from_dict(json.loads(documents.item(item))) == item


@settings(max_examples=300)
@given(st.lists(events, min_size=1, max_size=6))
def test_event_documents_are_the_serializers_byte_for_byte(generated: list[Event]) -> None:
    documents = DocumentWriter()
    for event in generated:
        expected = _dumps(event_to_dict(event))
        assert documents.fast_event(event) == expected
        assert documents.event(event) == expected
        assert event_from_dict(json.loads(expected)) == event


@given(st.lists(times, min_size=1, max_size=8))
def test_time_columns_are_format_time(generated: list[datetime]) -> None:
    documents = _Documents()
    for value in generated * 2:
        assert documents.column_time(value) == format_time(value)


def test_equal_wall_times_on_both_sides_of_a_fold_are_not_confused() -> None:
    # Two datetimes of one zone compare equal across a DST fold yet are an hour apart:
    # only UTC datetimes are remembered, so neither gets the other's text.
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        zone = zoneinfo.ZoneInfo("America/New_York")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone database on this machine")
    first = datetime(2026, 11, 1, 1, 30, tzinfo=zone)
    second = first.replace(fold=1)
    assert first == second
    assert first.astimezone(timezone.utc) != second.astimezone(timezone.utc)
    documents = _Documents()
    for value in (first, second, first.astimezone(timezone.utc), second.astimezone(timezone.utc)):
        item = h.new_item(id="a", run_id="r", backend="b", now=value)
        assert documents.item(item) == _dumps(item_to_dict(item))
        assert documents.column_time(value) == format_time(value)


def test_a_value_the_fast_path_does_not_expect_goes_through_the_serializer() -> None:
    item = h.new_item(id="a", run_id="r", backend="b", now=T0)
    odd = evolve(item, stats=evolve(item.stats, nodes=("n1", 7)))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        DocumentWriter().fast_item(odd)
    assert DocumentWriter().item(odd) == _dumps(item_to_dict(odd))
    assert '"nodes":["n1",7]' in DocumentWriter().item(odd)
    # The store writes it so too.
    assert _Documents().item(odd) == _dumps(item_to_dict(odd))


def test_numbers_are_written_as_json_writes_them() -> None:
    item = h.new_item(id="a", run_id="r", backend="b", now=T0)
    for value in (0.0, 1e300, 0.1, math.inf, math.nan, 5, 2**80, True):
        odd = evolve(item, stats=evolve(item.stats, elapsed_s=value))
        assert DocumentWriter().fast_item(odd) == _dumps(item_to_dict(odd)), value


# -- through a real store -----------------------------------------------------------------


def running_run(run_id: str, count: int) -> Run:
    items = [
        h.new_item(id=f"{run_id}.{i}", run_id=run_id, backend="bench", now=T0, array_index=i)
        for i in range(count)
    ]
    return Run(id=run_id, backend="bench", created_at=T0, items=items)


def finish_changes(items: list[RunItem]) -> list[Change]:
    """Every item submitted, started, settled and confirmed: four events each."""
    record = JobStats(exit=ExitStatus.exited(0))
    changes = []
    for index, item in enumerate(items):
        native = str(1000 + index)
        steps = [h.submitted(item, native_id=native, at=T0 + timedelta(seconds=1))]
        for state, source, final, at in (
            (State.RUNNING, Source.QUEUE, False, 2),
            (State.COMPLETED, Source.QUEUE, False, 3),
            (State.COMPLETED, Source.ACCOUNTING, True, 4),
        ):
            observation = h.Observation(
                native_id=native,
                source=source,
                observed_at=T0 + timedelta(seconds=at),
                state=state,
                final=final,
                stats=record if final else h.EMPTY_STATS,
            )
            steps.append(h.advance(steps[-1].item, observation))
        events = tuple(e for step in steps for e in step.events)
        changes.append(Change(item=steps[-1].item, expected_version=item.version, events=events))
    return changes


def test_a_large_commit_stores_every_document_as_the_serializer_and_events_in_order(
    db_path: Path,
) -> None:
    count = 3 * _EVENT_ROWS + 7  # several whole multi-row INSERTs and a remainder
    with Store(db_path) as store:
        store.create_run(running_run("r1", count))
        changes = finish_changes(list(store.get_run("r1").items))
        sent = [e for change in changes for e in change.events]
        assert len(sent) % _EVENT_ROWS != 0
        result = store.commit(changes)
        assert len(result.applied) == count
        assert not result.conflicts
        stored = store.events(run_id="r1")
        assert [s.event for s in stored] == sent
        assert result.last_seq == stored[-1].seq
        assert [s.seq for s in stored] == sorted(s.seq for s in stored)
        assert all(item.state is State.COMPLETED for item in store.get_run("r1").items)
    with sqlite3.connect(db_path) as db:
        docs = dict(db.execute("SELECT id, doc FROM items"))
        event_docs = [d for (d,) in db.execute("SELECT doc FROM events ORDER BY seq")]
    for change in changes:
        assert docs[change.item.id] == _dumps(item_to_dict(change.item))
    assert event_docs == [_dumps(event_to_dict(e)) for e in sent]


def test_conflicts_in_a_commit_larger_than_a_batch_keep_only_the_winners(
    db_path: Path,
) -> None:
    count = _BATCH + 50
    with Store(db_path) as store:
        store.create_run(running_run("r1", count))
        changes = finish_changes(list(store.get_run("r1").items))
        # Another writer got to every 7th item first (its own version 1).
        foreign = [
            Change(
                item=evolve(c.item, version=1, native_id="other"),
                expected_version=0,
                events=c.events[:1],
            )
            for c in changes[::7]
        ]
        assert len(store.commit(foreign).applied) == len(foreign)
        lost = {c.item.id for c in foreign}
        result = store.commit(changes)
        assert set(result.conflicts) == lost
        assert result.applied == tuple(c.item.id for c in changes if c.item.id not in lost)
        winners = [c for c in changes if c.item.id not in lost]
        expected_events = [e for c in foreign for e in c.events] + [
            e for c in winners for e in c.events
        ]
        assert [s.event for s in store.events(run_id="r1")] == expected_events
        for item in store.get_run("r1").items:
            assert (item.native_id == "other") == (item.id in lost)


def test_new_files_get_large_pages_and_old_files_keep_theirs(tmp_path: Path) -> None:
    with Store(tmp_path / "new.db") as store:
        store.create_run(running_run("r1", 3))
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:
        db.execute("PRAGMA page_size = 4096")
        db.execute("CREATE TABLE unrelated (x)")  # the file exists: its page size is set
    with Store(old) as store:
        store.create_run(running_run("r1", 3))
        assert len(store.get_run("r1").items) == 3
    for path, size in ((tmp_path / "new.db", 16384), (old, 4096)):
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA page_size").fetchone()[0] == size
