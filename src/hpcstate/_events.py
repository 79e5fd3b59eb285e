"""Events the state machine emits. Past tense, frozen, persisted by their TAG."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from attrs import frozen

from ._exit import ExitStatus
from ._states import Source, State


@frozen(kw_only=True)
class Event:
    """Base of all events. ``version`` is the item's version after the event: events of
    one item are totally ordered by it, so a subscriber can deliver each exactly once."""

    TAG: ClassVar[str] = "event"

    item_id: str
    run_id: str
    native_id: str | None
    at: datetime
    version: int
    source: Source
    state: State

    @property
    def confirmed_success(self) -> bool:
        """True only for a confirmed transition into COMPLETED: what success hooks use."""
        return False


@frozen(kw_only=True)
class Submitted(Event):
    TAG: ClassVar[str] = "submitted"


@frozen(kw_only=True)
class Started(Event):
    TAG: ClassVar[str] = "started"


@frozen(kw_only=True)
class AwaitingConfirmation(Event):
    """The job ended as far as the queue can tell; the verdict waits for accounting."""

    TAG: ClassVar[str] = "awaiting_confirmation"


@frozen(kw_only=True)
class Finished(Event):
    """A verdict. ``confirmed`` is False for the grace fallback and for GONE."""

    TAG: ClassVar[str] = "finished"
    confirmed: bool
    exit: ExitStatus | None = None

    @property
    def confirmed_success(self) -> bool:
        return self.confirmed and self.state is State.COMPLETED


@frozen(kw_only=True)
class Corrected(Event):
    """A late authoritative record replaced an unconfirmed verdict."""

    TAG: ClassVar[str] = "corrected"
    previous: State
    exit: ExitStatus | None = None

    @property
    def confirmed_success(self) -> bool:
        # A success that was only "unconfirmed" before fires its hooks now, once.
        return self.state is State.COMPLETED


@frozen(kw_only=True)
class Requeued(Event):
    """The scheduler started the same id over (node failure, preemption, requeue)."""

    TAG: ClassVar[str] = "requeued"
    previous: State
    restarts: int


@frozen(kw_only=True)
class StatsUpdated(Event):
    """No state change; a source added or refined what we know (exit, times, memory)."""

    TAG: ClassVar[str] = "stats_updated"


EVENT_TYPES: tuple[type[Event], ...] = (
    Submitted,
    Started,
    AwaitingConfirmation,
    Finished,
    Corrected,
    Requeued,
    StatsUpdated,
)

#: The union of all event types, for (de)serialization.
AnyEvent = (
    Submitted | Started | AwaitingConfirmation | Finished | Corrected | Requeued | StatsUpdated
)
