"""The JSON record: built from core records, checked by hand and against the schema."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import hpcstate as h
from hpcstate import ExitStatus, JobStats, Observation, Run, RunItem, Source, State
from hpcstate.cli._record import run_record

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def item(
    state: State | None,
    *,
    index: int | None = None,
    stats: JobStats | None = None,
    final: bool = True,
    source: Source = Source.ACCOUNTING,
) -> RunItem:
    """An item driven through the real state machine to ``state`` (None: running)."""
    name = f"r1.{index if index is not None else 0}"
    native = f"77_{index}" if index is not None else "77"
    new = h.new_item(id=name, run_id="r1", backend="slurm", now=T0, array_index=index)
    new = h.submitted(new, native_id=native, at=at(1), submitted_at=at(0.5)).item
    running = Observation(
        native_id=native, source=Source.QUEUE, observed_at=at(2), state=State.RUNNING
    )
    new = h.advance(new, running).item
    if state is None:
        return new
    end = Observation(
        native_id=native,
        source=source,
        observed_at=at(10),
        state=state,
        final=final,
        stats=stats or JobStats(),
    )
    return h.advance(new, end).item


def run_of(*items: RunItem) -> Run:
    return Run(id="r1", backend="slurm", name="job", created_at=T0, items=items)


def check(record: dict[str, Any], validator: Any) -> None:
    errors = sorted(validator.iter_errors(record), key=str)
    assert not errors, "\n".join(str(e.message) for e in errors)
    # What consumers do: the record survives a JSON round trip unchanged.
    assert json.loads(json.dumps(record)) == record


def test_failed_with_a_signal_and_core(record_validator: Any) -> None:
    stats = JobStats(
        exit=ExitStatus.killed(11, core_dumped=True),
        exit_source=Source.ACCOUNTING,
        reason=h.parse_slurm_reason("RaisedSignal:11(Segmentation fault)"),
        started_at=at(2),
        finished_at=at(9.25),
        elapsed_s=7.25,
        max_rss_bytes=1024,
        nodes=("node1",),
    )
    record = run_record(run_of(item(State.FAILED, stats=stats)))
    check(record, record_validator)
    assert record["schema"] == 1
    assert (record["id"], record["backend"], record["native_id"]) == ("r1", "slurm", "77")
    assert (record["state"], record["exit_code"], record["signal"]) == ("failed", None, 11)
    assert (record["signal_name"], record["core_dumped"]) == ("SIGSEGV", True)
    assert record["confirmed"] is True
    assert record["stats"]["confirmed_by"] == "accounting"
    assert record["reason"]["kind"] == "raised_signal"
    assert record["reason"]["signal"] == 11
    assert record["submitted_at"] == "2026-03-01T12:00:00.500000Z"
    assert record["finished_at"] == "2026-03-01T12:00:09.250000Z"
    assert record["stats"]["nodes"] == ["node1"]
    assert record["counts"] == {"failed": 1}
    assert "items" not in record


def test_ambiguous_exit_is_said(record_validator: Any) -> None:
    stats = JobStats(
        exit=ExitStatus.from_slurm("9:0", high_codes_lossy=True), exit_source=Source.ACCOUNTING
    )
    record = run_record(run_of(item(State.FAILED, stats=stats)))
    check(record, record_validator)
    assert record["exit_code"] == 9
    assert "9 or 137" in record["stats"]["exit_ambiguous"]
    assert any(m["code"] == "exit_ambiguous" for m in record["markers"])


def test_running_has_nulls_not_guesses(record_validator: Any) -> None:
    record = run_record(run_of(item(None)))
    check(record, record_validator)
    assert record["state"] == "running"
    assert (record["exit_code"], record["signal"], record["finished_at"]) == (None, None, None)
    assert record["confirmed"] is False


def test_unconfirmed_success(record_validator: Any) -> None:
    record = run_record(
        run_of(item(State.COMPLETED, final=False, source=Source.QUEUE))  # only settles
    )
    check(record, record_validator)
    assert record["state"] == "settling"
    assert record["confirmed"] is False


def test_array_run(record_validator: Any) -> None:
    ok = JobStats(exit=ExitStatus.exited(0), exit_source=Source.ACCOUNTING, finished_at=at(8))
    bad = JobStats(exit=ExitStatus.exited(3), exit_source=Source.ACCOUNTING, finished_at=at(9))
    run = run_of(
        item(State.FAILED, index=2, stats=bad),
        item(State.COMPLETED, index=1, stats=ok),
        item(None, index=3),
    )
    record = run_record(run)
    check(record, record_validator)
    assert record["state"] == "running"
    assert record["native_id"] is None
    assert record["finished_at"] is None  # not every task has ended
    assert [i["index"] for i in record["items"]] == [1, 2, 3]
    assert [i["exit_code"] for i in record["items"]] == [0, 3, None]
    assert record["items"][0]["native_id"] == "77_1"
    assert record["counts"] == {"completed": 1, "failed": 1, "running": 1}


def test_every_terminal_state_validates(record_validator: Any) -> None:
    for state in sorted(h.TERMINAL - {State.GONE}, key=str):
        record = run_record(run_of(item(state)))
        check(record, record_validator)
        assert record["state"] == state.value


def test_gone_validates(record_validator: Any) -> None:
    running = item(None)
    gone = h.advance(
        running,
        Observation(
            native_id="77", source=Source.ACCOUNTING, observed_at=at(5), absence=h.Absence.UNKNOWN
        ),
    ).item
    record = run_record(run_of(gone))
    check(record, record_validator)
    assert (record["state"], record["confirmed"]) == ("gone", False)
    assert record["markers"][0]["code"] == "gone"


def test_the_schema_rejects_what_the_docs_forbid(record_validator: Any) -> None:
    good = run_record(
        run_of(
            item(
                State.FAILED,
                stats=JobStats(exit=ExitStatus.exited(3), exit_source=Source.ACCOUNTING),
            )
        )
    )
    check(good, record_validator)
    bad_cases = [
        {**good, "signal": 9, "signal_name": "SIGKILL"},  # exit code and signal at once
        {**good, "finished_at": "2026-03-01T12:00:00+01:00"},  # not UTC with Z
        {**good, "state": "done"},
        {**good, "schema": 2},
        {k: v for k, v in good.items() if k != "exit_code"},  # fields are always present
    ]
    for bad in bad_cases:
        assert not record_validator.is_valid(bad), bad
