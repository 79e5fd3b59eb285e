"""What one poll cycle did: :class:`PollReport` (public as ``hpcstate.runtime.PollReport``)
and its assembly from each backend's counts (``_poller.BackendCounts``) and the cache.

Pure apart from reading the cache and taking this poll's failure texts from the totals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from attrs import frozen

from hpcstate import State

from ._cache import Cache, Totals
from ._poller import BackendCounts

__all__ = ["PollReport", "poll_report"]


@frozen(kw_only=True)
class PollReport:
    """What one poll cycle did (counts), for logs, tests and benchmarks."""

    at: datetime
    items: int = 0
    queue_calls: int = 0
    accounting_calls: int = 0
    observations: int = 0
    events: int = 0
    illegal: int = 0
    conflicts: int = 0
    submitted: int = 0
    self_reports: int = 0
    corrupt: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    settling: int = 0
    #: Unexpected exceptions (bugs) caught from one item, check or backend since the
    #: previous poll (a submit() call's included): each was logged with its traceback,
    #: and the rest went on.
    failures: tuple[str, ...] = ()


def poll_report(
    *,
    at: datetime,
    items: Mapping[str, int],
    results: Sequence[BackendCounts],
    self_reports: int,
    cache: Cache,
    totals: Totals,
) -> PollReport:
    """The report of a poll at ``at``: ``items`` counts each backend's items,
    ``results`` are the backends' counts, ``self_reports`` the reports consumed. Takes
    (and clears) the failures recorded in ``totals`` since the previous poll."""
    report = PollReport(
        at=at,
        items=sum(items.values()),
        queue_calls=sum(r.queue_calls for r in results),
        accounting_calls=sum(r.accounting_calls for r in results),
        observations=sum(r.observations for r in results),
        events=sum(r.events for r in results),
        illegal=sum(r.illegal for r in results),
        conflicts=sum(r.conflicts for r in results),
        submitted=sum(r.submitted for r in results),
        self_reports=self_reports,
        corrupt=tuple(sorted(cache.corrupt)),
        errors=tuple(e for r in results for e in r.errors),
        settling=sum(1 for e in cache.entries.values() if e.item.state is State.SETTLING),
        failures=tuple(totals.failure_texts),
    )
    totals.failure_texts.clear()
    return report
