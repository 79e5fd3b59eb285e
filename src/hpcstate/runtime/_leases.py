"""One poller per backend among the processes sharing a store: the leases this
process holds (taken, renewed after each poll and by a heartbeat between polls,
released on close), and the backends it follows because another process holds them
(see docs/concepts/runtime.md#one-poller-per-backend)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

from hpcstate.backend import Backend

from ._clock import Clock
from ._store import Lease, LeaseLost, Store

log = logging.getLogger("hpcstate.runtime.tracker")


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
        from .local import LocalBackend

        if isinstance(backend, LocalBackend):
            # Local jobs are processes of one host under one job directory: a `local`
            # backend on another host (a shared PostgreSQL store) is another machine.
            return f"{name}@{socket.gethostname()}:{backend.root}"
        return name

    def hold(self, name: str, backend: Backend, now: datetime) -> Lease | None:
        """The lease to poll ``name`` under, taken or renewed now; None while another
        live process holds it."""
        key = self.key(name, backend)
        held = self.held.get(key)
        if held is None:
            current = self.store.lease(key)  # a read: followers do not take the write lock
            if current is not None and current.live(now) and current.holder != self.holder:
                return None
        lease = self.store.acquire_lease(key, self.holder, ttl=timedelta(seconds=self.ttl), now=now)
        if lease is None:
            self.held.pop(key, None)
            return None
        if held is None or held.generation != lease.generation:
            log.info("%s polls backend %s for every process sharing the store", self.holder, name)
        self.held[key] = lease
        return lease

    def polling(self, name: str) -> None:
        """This process polls ``name`` itself (it holds its lease, or leases are off)."""
        self.following.discard(name)

    def renew(self, lease: Lease, now: datetime, *, polled: bool, scheduler_calls: int) -> None:
        try:
            self.held[lease.backend] = self.store.renew_lease(
                lease,
                ttl=timedelta(seconds=self.ttl),
                now=now,
                polled=polled,
                scheduler_calls=scheduler_calls,
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
