"""Time, injectable: the tracker reads the clock and sleeps only through a Clock."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What the tracker and backends use for time. A virtual clock (tests, the
    simulator) implements both methods and decides what "sleeping" means."""

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; the tracker may cancel the wait to wake up early."""
        ...


class SystemClock:
    """The real wall clock and asyncio's sleep."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
