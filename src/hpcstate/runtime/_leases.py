"""One poller per backend among the processes sharing a store: the leases this
process holds (taken, renewed after each poll and by a heartbeat between polls,
released on close), and the backends it follows because another process holds them
(see docs/concepts/runtime.md#one-poller-per-backend). A lease carries what its
holder's backend learned about the scheduler (``Lease.facts``, e.g. the Slurm
release): a process that takes it over adopts them instead of asking again. What a
takeover means for the cadence is decided in ``hpcstate._poll`` (``record_takeover``,
``takeover_hold``): :meth:`Leases.hold` only says whether the lease is newly held and,
if it came from another holder, that holder's last poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from attrs import frozen

from hpcstate.backend import Backend, abilities

from ._clock import Clock
from ._store import Lease, LeaseLost, Store

log = logging.getLogger("hpcstate.runtime.tracker")


@frozen(kw_only=True)
class Held:
    """The lease to poll under. ``taken``: newly held by this call (a new generation:
    new, taken over, or our own back after it lapsed); ``previous_poll``: for a lease
    taken from ANOTHER holder, that holder's last poll (else None)."""

    lease: Lease
    taken: bool = False
    previous_poll: datetime | None = None


class Leases:
    """``held``: lease key -> the lease this process holds; ``following``: backends
    another process polls for this one. ``on_follow(name)`` runs when this process
    starts following a backend (its push watch stops)."""

    def __init__(
        self,
        store: Store,
        *,
        holder: str,
        ttl: float,
        on_follow: Callable[[str], None],
    ) -> None:
        self.store = store
        self.holder = holder
        self.ttl = ttl
        self._on_follow = on_follow
        self.held: dict[str, Lease] = {}
        self.following: set[str] = set()

    def key(self, name: str, backend: Backend) -> str:
        host_local = abilities(backend).host_local
        if host_local is not None:
            # Its jobs are processes of one host (under one job directory, for local):
            # the same backend on another host (a shared PostgreSQL store) is another
            # machine, polled under its own lease.
            return f"{name}@{host_local.lease_scope()}"
        return name

    def hold(self, name: str, backend: Backend, now: datetime) -> Held | None:
        """The lease to poll ``name`` under, taken or renewed now; None while another
        live process holds it."""
        key = self.key(name, backend)
        held = self.held.get(key)
        previous = None if held is None else held.holder
        if held is None:
            current = self.store.lease(key)  # a read: followers do not take the write lock
            if current is not None and current.live(now) and current.holder != self.holder:
                return None
            previous = None if current is None else current.holder
        lease = self.store.acquire_lease(key, self.holder, ttl=timedelta(seconds=self.ttl), now=now)
        if lease is None:
            self.held.pop(key, None)
            return None
        self.held[key] = lease
        if held is not None and held.generation == lease.generation:
            return Held(lease=lease)
        log.info("%s polls backend %s for every process sharing the store", self.holder, name)
        self._adopt(name, backend, lease)
        # New, or our own lease back after it lapsed (a long pause): no previous poll, our
        # own cadence memory is the better guide.
        from_another = previous not in (None, self.holder)
        return Held(
            lease=lease, taken=True, previous_poll=lease.last_poll_at if from_another else None
        )

    def _adopt(self, name: str, backend: Backend, lease: Lease) -> None:
        """A lease newly held: use what the previous holder learned about the scheduler
        (no version call of our own)."""
        sharer = abilities(backend).facts
        if sharer is not None and lease.facts:
            try:
                sharer.adopt_facts(lease.facts)
            except Exception as exc:  # a bug in the backend: it just asks again
                log.warning("backend %s: adopting the lease's facts raised %r", name, exc)

    def polling(self, name: str) -> None:
        """This process polls ``name`` itself (it holds its lease, or leases are off)."""
        self.following.discard(name)

    def renew(
        self,
        lease: Lease,
        now: datetime,
        *,
        polled: bool,
        scheduler_calls: int,
        facts: Mapping[str, str] | None = None,
    ) -> None:
        """Renew ``lease``; after a poll (``polled``) with its scheduler calls and what
        the backend learned (``facts``; None keeps the stored ones)."""
        try:
            self.held[lease.backend] = self.store.renew_lease(
                lease,
                ttl=timedelta(seconds=self.ttl),
                now=now,
                polled=polled,
                scheduler_calls=scheduler_calls,
                facts=facts,
            )
        except LeaseLost as exc:
            log.warning("%s; following the store from now on", exc)
            self.held.pop(lease.backend, None)

    def lost(self, lease: Lease) -> None:
        """Another process took ``lease`` over while this one held it."""
        self.held.pop(lease.backend, None)

    def follow(self, name: str) -> None:
        self.following.add(name)
        self._on_follow(name)

    async def heartbeat(self, clock: Clock) -> None:
        """Renew the held leases between polls (the loop may sleep longer than a lease
        lasts); a process that stops (killed, paused) stops renewing, and another takes
        over once its lease expires."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                for lease in list(self.held.values()):
                    self.renew(lease, clock.now(), polled=False, scheduler_calls=0)
            except Exception as exc:  # the store is busy: the next beat tries again
                log.debug("renewing a lease failed: %s", exc)

    def release_all(self, now: datetime) -> None:
        """A clean exit hands polling over at once (not after the leases expire)."""
        for lease in list(self.held.values()):
            with contextlib.suppress(Exception):
                self.store.release_lease(lease, now=now)
        self.held.clear()
