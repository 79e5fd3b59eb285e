"""The reference poll loop with the classic mistakes, to prove the race tests catch them.

:class:`hpcstate.testing.loop.ReferenceLoop` is the loop the race tests hold against the
simulator's truth; each flag here makes it wrong in one way peers are known to be wrong:

* ``bounded_window=False``: accounting asked without a lower bound (an older job that had
  the same id answers);
* ``vanished_means_success=True``: "no longer in the queue" read as COMPLETED;
* ``transient_means_failure=True``: "accounting did not answer" read as FAILED.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import hpcstate as h
from hpcstate import Observation, RunItem, Source, State
from hpcstate.backend import Backend
from hpcstate.runtime import Clock
from hpcstate.testing.loop import ReferenceLoop


class MistakenLoop(ReferenceLoop):
    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        *,
        grace: timedelta = h.DEFAULT_GRACE,
        bounded_window: bool = True,
        vanished_means_success: bool = False,
        transient_means_failure: bool = False,
    ) -> None:
        super().__init__(backend, clock=clock, grace=grace, run_id="run", tag_prefix="ref")
        self.bounded_window = bounded_window
        self.vanished_means_success = vanished_means_success
        self.transient_means_failure = transient_means_failure

    def accounting_window(self, native_ids: Sequence[str]) -> datetime | None:
        if not self.bounded_window:
            return None
        return super().accounting_window(native_ids)

    def advance(self, item: RunItem, obs: Observation) -> h.Step:
        if self.vanished_means_success and obs.absence is h.Absence.ABSENT:
            # The mistake most peers make: not in the queue any more means done.
            obs = Observation(
                native_id=obs.native_id,
                source=Source.ACCOUNTING,
                observed_at=obs.observed_at,
                state=State.COMPLETED,
                final=True,
                stats=h.JobStats(exit=h.ExitStatus.exited(0)),
            )
        return super().advance(item, obs)

    def on_unavailable(self, what: str, exc: Exception) -> None:
        super().on_unavailable(what, exc)
        if self.transient_means_failure and what == "accounting":
            # The other classic mistake: "the scheduler did not answer" read as a failure.
            now = self.now()
            settling = [n for n, i in self.items.items() if i.state is State.SETTLING]
            self.apply(
                [
                    Observation(
                        native_id=native_id,
                        source=Source.QUEUE,
                        observed_at=now,
                        state=State.FAILED,
                        detail=str(exc),
                    )
                    for native_id in settling
                ],
                settling,
                "accounting",
            )
