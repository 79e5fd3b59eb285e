"""Core behaviour the race tests found wrong once, kept as regression tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import hpcstate as h
from hpcstate import Observation, Source, State

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_late_record_of_a_requeued_job_corrects_the_grace_verdict() -> None:
    # Ran once (restarts 0), left the queue, accounting was down past the grace:
    # unconfirmed COMPLETED. Meanwhile its node had failed and it ran again; the final
    # record (restarts 1) says FAILED. That record is the verdict.
    item = h.submitted(
        h.new_item(id="i", run_id="r", backend="b", now=T0), native_id="7", at=_at(0)
    ).item
    item = h.advance(
        item,
        Observation(native_id="7", source=Source.QUEUE, observed_at=_at(1), state=State.RUNNING),
    ).item
    item = h.advance(
        item,
        Observation(
            native_id="7", source=Source.QUEUE, observed_at=_at(30), absence=h.Absence.ABSENT
        ),
    ).item
    item = h.tick(item, now=_at(700), grace=timedelta(seconds=600)).item
    assert (item.state, item.confirmed) == (State.COMPLETED, False)
    record = Observation(
        native_id="7",
        source=Source.ACCOUNTING,
        observed_at=_at(800),
        state=State.FAILED,
        final=True,
        restarts=1,
        stats=h.JobStats(exit=h.ExitStatus.exited(3), finished_at=_at(20)),
    )
    step = h.advance(item, record)
    assert (step.item.state, step.item.confirmed) == (State.FAILED, True)
