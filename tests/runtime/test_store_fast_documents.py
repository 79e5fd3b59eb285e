"""The document writer remembers the text of records the core shares between items
(exit statuses, reasons, markers) by identity for one commit: the bytes stay the
serializer's, whatever is shared, freed or new."""

from __future__ import annotations

import gc
import json
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

import hpcstate as h
from hpcstate import ExitStatus, JobStats, Marker, MarkerCode, Reason, ReasonKind, Source, State
from hpcstate.serial import _SHARED_MEMO, DocumentWriter, dumps, event_to_dict, item_to_dict

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

SHARED_EXITS = [ExitStatus.exited(0), ExitStatus.exited(1), ExitStatus.killed(9)]
SHARED_REASONS = [Reason(kind=ReasonKind.NONE), Reason.other("JobLaunchFailure"), None]
SHARED_MARKERS = [
    Marker(code=MarkerCode.EXIT_AMBIGUOUS.value, text="exit: sacct lost it"),
    Marker(code="note", text='ü and "quotes"'),
]


def settled(
    index: int, exit: ExitStatus | None, reason: Reason | None, markers: tuple[Marker, ...]
) -> h.RunItem:
    return h.RunItem(
        id=f"run1.{index}",
        run_id="run1",
        backend="bench",
        native_id=str(1000 + index),
        state=State.COMPLETED,
        version=3,
        stats=JobStats(
            exit=exit,
            exit_source=Source.ACCOUNTING if exit is not None else None,
            derived_exit=exit,
            reason=reason,
            finished_at=T0 + timedelta(seconds=index),
            confirmed_by=Source.ACCOUNTING,
        ),
        markers=markers,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=60),
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(SHARED_EXITS), st.integers(0, 255).map(ExitStatus.exited)),
            st.sampled_from(SHARED_REASONS),
            st.lists(st.sampled_from(SHARED_MARKERS), max_size=2, unique=True).map(tuple),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_shared_and_fresh_records_are_written_as_the_serializer_writes_them(
    parts: list[tuple[ExitStatus, Reason | None, tuple[Marker, ...]]],
) -> None:
    writer = DocumentWriter()  # one per commit, as the store uses it
    for index, (exit, reason, markers) in enumerate(parts):
        item = settled(index, exit, reason, markers)
        assert writer.fast_item(item) == dumps(item_to_dict(item))
        event = h.Finished(
            item_id=item.id,
            run_id=item.run_id,
            native_id=item.native_id,
            at=T0,
            version=item.version,
            source=Source.ACCOUNTING,
            state=item.state,
            confirmed=True,
            exit=exit,
        )
        assert writer.fast_event(event) == dumps(event_to_dict(event))


def test_a_freed_records_id_is_never_given_its_old_text() -> None:
    """CPython reuses the id of a freed object at once; the memo keeps each record it
    remembers alive, so a new record at a recycled address is never confused with it."""
    writer = DocumentWriter()
    for code in range(256):
        exit = ExitStatus.exited(code)  # freed at the next iteration (nothing else holds it)
        item = settled(code, exit, None, ())
        text = writer.fast_item(item)
        assert json.loads(text)["stats"]["exit"]["code"] == code
        del item, exit
        gc.collect()


def test_the_memo_is_bounded() -> None:
    writer = DocumentWriter()
    for code in range(_SHARED_MEMO + 500):
        exit = ExitStatus.exited(code % 256, ambiguous=str(code))  # distinct records
        item = settled(code, exit, None, ())
        assert writer.fast_item(item) == dumps(item_to_dict(item))
    remembered = [key for key in writer._times if type(key) is int]
    assert 0 < len(remembered) <= _SHARED_MEMO
