"""One backend's share of a poll: submit what is pending, hold (or follow) its lease,
read self-reports and output, ask the queue and accounting as the cadence allows,
apply every observation through the machine in ``observed_at`` order, tick, commit
the changes as compare-and-sets, renew the lease and keep the push watch in line.

It decides nothing about the cadence: ``hpcstate._poll`` does. A newly held lease goes
to ``record_takeover``; one ``plan`` per backend says whether the queue is asked (and
about which ids), whether a takeover holds it back, which late checks are due and which
verdicts to stop carrying; ``report_paths`` and ``accounting_items`` say what to read and
ask after the queue's answer; ``next_interval`` and ``takeover_wait`` when to wake."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from attrs import evolve, frozen

from hpcstate import (
    TERMINAL,
    BackendError,
    Event,
    Marker,
    MarkerCode,
    Observation,
    RunItem,
    State,
    add_marker,
)
from hpcstate._machine import remove_marker
from hpcstate._poll import (
    Cadence,
    NativeIndex,
    accounting_items,
    accounting_query,
    apply_answers,
    next_interval,
    plan,
    purged,
    record_accounting_call,
    record_queue_answer,
    record_takeover,
    report_paths,
    takeover_wait,
    tick_settling,
)
from hpcstate.backend import Backend, OutputSnapshot, abilities

from ._bus import EventBus, PushWatches
from ._cache import (
    POLLED,
    Cache,
    Entry,
    Memory,
    Totals,
    forgotten,
    gc_paused,
    late_checkable,
)
from ._clock import Clock
from ._leases import Leases
from ._report import SelfReport
from ._store import Change, CommitResult, Lease, LeaseLost, Store
from ._submitter import Submitter

log = logging.getLogger("hpcstate.runtime.tracker")


@frozen(kw_only=True)
class BackendStatus:
    """Whether the tracker could reach a backend at its last attempt."""

    name: str
    reachable: bool = True
    last_error: str = ""
    since: datetime | None = None  # when it became unreachable
    consecutive_failures: int = 0


@frozen(kw_only=True)
class BackendCounts:
    """What one backend's share of a poll did (the PollReport sums them)."""

    queue_calls: int = 0
    accounting_calls: int = 0
    observations: int = 0
    events: int = 0
    illegal: int = 0
    conflicts: int = 0
    submitted: int = 0
    errors: tuple[str, ...] = ()
    #: This process polled the backend (it holds its lease, or leases are off).
    polled: bool = False


class _Tally:
    """BackendCounts while the poll is counting."""

    __slots__ = (
        "accounting_calls",
        "conflicts",
        "errors",
        "events",
        "illegal",
        "lease_lost",
        "observations",
        "output_failures",
        "polled",
        "queue_calls",
        "submitted",
    )

    def __init__(self) -> None:
        self.queue_calls = 0
        self.accounting_calls = 0
        self.observations = 0
        self.events = 0
        self.illegal = 0
        self.conflicts = 0
        self.submitted = 0
        self.errors: list[str] = []
        self.polled = False
        self.lease_lost = False
        #: Native ids an output check failed (their jobs are cancelled).
        self.output_failures: list[str] = []

    def frozen(self) -> BackendCounts:
        return BackendCounts(
            queue_calls=self.queue_calls,
            accounting_calls=self.accounting_calls,
            observations=self.observations,
            events=self.events,
            illegal=self.illegal,
            conflicts=self.conflicts,
            submitted=self.submitted,
            errors=tuple(self.errors),
            polled=self.polled,
        )


class Poller:
    """Polls for the tracker; shares its cache, memory, totals, bus, leases and
    submitter. ``backend(name)`` makes or finds a backend, ``wake()`` wakes the loop,
    ``looping()`` says whether the background loop runs (push watches need it)."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        cadence: Cadence,
        cache: Cache,
        memory: Memory,
        totals: Totals,
        bus: EventBus,
        leases: Leases,
        submitter: Submitter,
        push: PushWatches,
        backend: Callable[[str], Backend],
        wake: Callable[[], None],
        looping: Callable[[], bool],
        poll_lease: bool,
    ) -> None:
        self.store = store
        self.clock = clock
        self.cadence = cadence
        self._cache = cache
        self._memory = memory
        self._totals = totals
        self._bus = bus
        self._leases = leases
        self._submitter = submitter
        self._push = push
        self._backend = backend
        self._wake = wake
        self._looping = looping
        self._poll_lease = poll_lease
        self.status: dict[str, BackendStatus] = {}

    def self_report_observations(
        self, now: datetime
    ) -> tuple[dict[str, list[Observation]], list[tuple[int, str | None]]]:
        """Open self-reports from the store as observations keyed by item id, and the
        ids of the reports this poll may use up, with their item's backend (None: an
        item this tracker does not poll, finished or unknown)."""
        found: dict[str, list[Observation]] = defaultdict(list)
        consumed: list[tuple[int, str | None]] = []
        for stored in self.store.open_self_reports():
            entry = self._cache.entries.get(stored.item_id)
            if entry is not None and entry.item.native_id is None:
                continue  # its submit answer is not stored yet: keep it for later
            consumed.append((stored.id, entry.item.backend if entry is not None else None))
            if entry is None or entry.item.native_id is None:
                continue  # finished already (too late to matter) or unknown
            try:
                parsed = SelfReport.from_dict(stored.doc)
                found[stored.item_id].append(parsed.observation(entry.item.native_id, now))
            except Exception as exc:  # one bad report must not stop the poll
                log.warning("self-report %d of item %s ignored: %s", stored.id, stored.item_id, exc)
        return found, consumed

    async def poll_backend(
        self, name: str, reports: Mapping[str, list[Observation]], now: datetime
    ) -> BackendCounts:
        """One backend's share of the poll; a bug in it (or in its backend) is logged
        and counted and never reaches the other backends or the caller."""
        counts = _Tally()
        try:
            await self._poll_backend(name, reports, now, counts)
        except Exception as exc:
            self._totals.failed(f"polling backend {name}", exc)
            counts.errors.append(f"{name}: poll raised {type(exc).__name__}: {exc}")
            # The cache may be behind what was written: read it all again next time.
            self._cache.force_refresh = True
        return counts.frozen()

    async def _poll_backend(
        self,
        name: str,
        reports: Mapping[str, list[Observation]],
        now: datetime,
        counts: _Tally,
    ) -> None:
        try:
            backend = self._backend(name)
        except Exception as exc:  # unknown name, or a plugin that fails to load
            if not any(e.item.backend == name for e in self._cache.entries.values()):
                # Only old verdicts to re-check, on a backend this tracker does not
                # have: not an error of this poll; leave them to a tracker that has it.
                for item_id in [
                    i for i, e in self._cache.unconfirmed.items() if e.item.backend == name
                ]:
                    del self._cache.unconfirmed[item_id]
                log.info("backend %s unavailable (%s): its late checks are skipped", name, exc)
                return
            counts.errors.append(f"{name}: {exc}")
            self._mark_status(name, str(exc), now)
            return
        counts.submitted = await self._submitter.submit_pending(name, backend)  # anyone submits
        lease: Lease | None = None
        if self._poll_lease:
            held = self._leases.hold(name, backend, now)
            if held is None:
                # Another process polls this backend for everyone sharing the store: its
                # commits reach us through the store (refresh, event log).
                self._leases.follow(name)
                return
            lease = held.lease
            if held.taken:
                # A lease newly ours: the cadence carries on from the previous holder's
                # last poll (hpcstate._poll.record_takeover, takeover_hold).
                self._memory.ledger = record_takeover(self._memory.ledger, name, held.previous_poll)
        self._leases.polling(name)
        counts.polled = True
        # Pending items may have just been submitted: take them from the cache again.
        cache = self._cache
        asks = plan(
            self.cadence,
            self._memory.ledger,
            name,
            cache.entries.values(),
            cache.unconfirmed.values(),
            now,
            accounting=backend.capabilities.accounting,
        )
        self._memory.ledger = asks.ledger
        for item_id in asks.forget:
            # Nothing will ever confirm them (the local backend's wait status, Flux or
            # k8s without accounting): stop carrying them.
            del cache.unconfirmed[item_id]
        polled = asks.polled
        # Self-reports and output checks come first: they are older than the queue.
        extras: dict[str, list[Observation]] = defaultdict(list)
        for entry in polled:
            found = reports.get(entry.item.id)
            if found:
                extras[entry.item.id].extend(found)
        await self._output_checks(backend, polled, extras, now)
        error: str | None = None
        queue_obs: Sequence[Observation] = ()
        if asks.ask_queue:
            try:
                counts.queue_calls += 1
                queue_obs = await backend.queue(asks.queue_ids)
            except Exception as exc:
                error = self._describe(name, "queue", exc)
        working: dict[str, RunItem] = {e.item.id: e.item for e in asks.entries}
        late = asks.late
        for entry in late:
            working[entry.item.id] = entry.item
        # What every change is computed from: its version is the compare-and-set key.
        base = dict(working)
        events: dict[str, list[Event]] = {}
        with gc_paused():
            # Apply what we have so far, to know who needs accounting.
            self._apply(working, asks.index, queue_obs, extras, events, counts)
        # Reports in files: of running items (if the backend's jobs report), and of
        # those that left the queue and await their verdict.
        reports_found, read_error = await self._remote_reports(backend, working, polled)
        if read_error is not None and error is None and not asks.ask_queue:
            # Nothing else reached the backend this poll: it is not known to be reachable.
            error = self._describe(name, "reading report files", read_error)
        if reports_found:
            with gc_paused():
                self._apply(working, NativeIndex(()), (), reports_found, events, counts)
        if error is None and backend.capabilities.accounting:
            error = await self._accounting(name, backend, working, late, events, counts, now)
        if error is not None:
            counts.errors.append(error)
            self._mark_status(name, error, now)
        else:
            self._clear_status(name)
        with gc_paused():
            self._tick(working, events, now)
            self._reachability_markers(name, working, events, now, reachable=error is None)
            changes, result = self._persist(base, working, events, counts, lease=lease)
        if counts.lease_lost:
            self._leases.follow(name)
            return
        if lease is not None:
            calls = counts.queue_calls + counts.accounting_calls
            self._leases.renew(
                lease, now, polled=True, scheduler_calls=calls, facts=self._facts(name, backend)
            )
        if asks.ask_queue:
            self._memory.ledger = record_queue_answer(
                self._memory.ledger, name, changed=bool(changes or counts.submitted)
            )
        if changes:
            await self._bus.dispatch_committed(changes, result.applied, result.last_seq)
        await self._cancel_failed_by_output(backend, counts.output_failures)
        self._sync_watch(name, backend)

    def takeover_wait(self, now: datetime) -> float | None:
        """Seconds until a queue call held back by a takeover is due (None: none is):
        ``hpcstate._poll.takeover_wait``."""
        return takeover_wait(self.cadence, self._memory.ledger, now)

    def _facts(self, name: str, backend: Backend) -> Mapping[str, str] | None:
        """What the backend learned about its scheduler, for the lease (None: nothing
        it declares to share; the stored facts stay)."""
        sharer = abilities(backend).facts
        if sharer is None:
            return None
        try:
            # Nothing learned yet (e.g. a takeover whose adopt was refused and whose first
            # call is still ahead): keep what the lease holds rather than wipe it.
            return dict(sharer.facts()) or None
        except Exception as exc:
            self._totals.failed(f"backend {name}: facts()", exc)
            return None

    def _apply(
        self,
        working: dict[str, RunItem],
        by_native: NativeIndex,
        found: Sequence[Observation],
        extras: dict[str, list[Observation]],
        events: dict[str, list[Event]],
        counts: _Tally,
    ) -> None:
        """Apply the answers through ``hpcstate._poll.apply_answers`` (in place: ``working``
        is this poll's own copy) and write its refusals down: an illegal pair is a warning,
        anything else a bug in that item's step (the poll goes on)."""
        done = apply_answers(working, by_native, found, extras, events)
        extras.clear()
        counts.observations += done.applied
        counts.output_failures.extend(done.output_failures)
        for refused in done.refused:
            if refused.illegal:
                counts.illegal += 1
                self._totals.illegal_transitions += 1
                log.warning(
                    "item %s: %s (observation from %s ignored)",
                    refused.item_id,
                    refused.error,
                    refused.source,
                )
            else:
                self._totals.failed(
                    f"item {refused.item_id}: applying an observation from {refused.source}",
                    refused.error,
                )

    def _tick(
        self, working: dict[str, RunItem], events: dict[str, list[Event]], now: datetime
    ) -> None:
        """The machine's clock over the settling items (``hpcstate._poll.tick_settling``)."""
        done = tick_settling(working, now, self.cadence.grace)
        working.update(done.items)
        for item_id, more in done.events.items():
            events.setdefault(item_id, []).extend(more)
        for refused in done.refused:
            self._totals.failed(f"item {refused.item_id}: tick", refused.error)

    async def _accounting(
        self,
        name: str,
        backend: Backend,
        working: dict[str, RunItem],
        late: Sequence[Entry],
        events: dict[str, list[Event]],
        counts: _Tally,
        now: datetime,
    ) -> str | None:
        """ONE accounting call for the settling items and the unconfirmed verdicts due
        for a late check (a late record corrects them): when the oldest settling item has
        waited ``accounting_lag`` and the last call is ``accounting_interval`` old, or when
        a late check is due; every settling item goes in that call."""
        needs = accounting_items(self.cadence, self._memory.ledger, name, working, late, now)
        if not needs:
            return None  # next_interval wakes the loop when it is due
        self._memory.ledger = record_accounting_call(self._memory.ledger, name, now)
        for entry in late:
            entry.checked_at = now  # asked now, answered or not: the slow rate holds
        by_native = NativeIndex(needs)
        query = accounting_query(needs)
        try:
            counts.accounting_calls += 1
            found = await backend.accounting(query)
        except Exception as exc:
            return self._describe(name, "accounting", exc)
        if late:
            self._drop_forgotten(by_native, found)
        with gc_paused():
            self._apply(working, by_native, found, {}, events, counts)
        return None

    def _drop_forgotten(self, by_native: NativeIndex, found: Sequence[Observation]) -> None:
        """Accounting says it does not know a job and never will (``hpcstate._poll.purged``):
        its unconfirmed verdict can no longer be corrected; stop asking."""
        for item_id, obs in purged(by_native, found):
            if self._cache.unconfirmed.pop(item_id, None) is not None:
                log.info(
                    "item %s: accounting no longer knows job %s (%s); its unconfirmed "
                    "verdict stays",
                    item_id,
                    obs.native_id,
                    obs.detail or "purged",
                )

    def _describe(self, name: str, what: str, exc: Exception) -> str:
        if isinstance(exc, BackendError):
            log.warning("backend %s: %s failed: %s", name, what, exc)
        else:
            # Not a transient error: a bug or an unreadable answer. Still never a verdict.
            log.error("backend %s: %s raised %s: %s", name, what, type(exc).__name__, exc)
        return f"{name}: {what}: {exc}"

    def _mark_status(self, name: str, error: str, now: datetime) -> None:
        old = self.status.get(name) or BackendStatus(name=name)
        self.status[name] = BackendStatus(
            name=name,
            reachable=False,
            last_error=error,
            since=old.since if not old.reachable else now,
            consecutive_failures=old.consecutive_failures + 1,
        )

    def _clear_status(self, name: str) -> None:
        old = self.status.get(name)
        if old is not None and not old.reachable:
            log.info("backend %s reachable again", name)
        self.status[name] = BackendStatus(name=name)

    def _reachability_markers(
        self,
        name: str,
        working: dict[str, RunItem],
        events: dict[str, list[Event]],
        now: datetime,
        *,
        reachable: bool,
    ) -> None:
        """Show on each unfinished item that its backend cannot be reached (and take
        the marker away once it can). Never touches the state or the verdict."""
        code = MarkerCode.UNREACHABLE.value
        if reachable and name in self._cache.no_unreachable_markers:
            return  # the common case: nothing to take away
        status = self.status.get(name)
        if reachable:
            self._cache.no_unreachable_markers.add(name)
        else:
            self._cache.no_unreachable_markers.discard(name)
        for item_id, item in working.items():
            has = item.has_marker(code)
            if reachable and has:
                step = remove_marker(item, code, at=now)
                working[item_id] = step.item
                events.setdefault(item_id, []).extend(step.events)
            elif not reachable and not has and status is not None and item.state in POLLED:
                text = f"backend {name} unreachable since {status.since}: {status.last_error}"
                step = add_marker(item, Marker(code=code, text=text[:500]), at=now)
                working[item_id] = step.item
                events.setdefault(item_id, []).extend(step.events)

    def _persist(
        self,
        base: Mapping[str, RunItem],
        working: dict[str, RunItem],
        events: dict[str, list[Event]],
        counts: _Tally,
        *,
        lease: Lease | None = None,
    ) -> tuple[list[Change], CommitResult]:
        changes: list[Change] = []
        for item_id, item in working.items():
            before = base[item_id]
            if item is before:
                continue
            changes.append(
                Change(
                    item=item,
                    expected_version=before.version,
                    events=tuple(events.get(item_id, ())),
                )
            )
        if not changes:
            return changes, CommitResult()
        try:
            result = self.store.commit(changes, lease=lease)
        except LeaseLost as exc:
            # Another process took this backend over (this one paused past the lease's
            # expiry): nothing it observed is written; it follows from now on.
            log.warning("%s; following the store from now on", exc)
            if lease is not None:
                self._leases.lost(lease)
            counts.lease_lost = True
            self._cache.force_refresh = True
            return [], CommitResult()
        # Every change applied (the common case: ids are unique and applied ones are
        # among them): no set of 100,000 ids to build and look up.
        applied = None if len(result.applied) == len(changes) else set(result.applied)
        for change in changes:
            item = change.item
            if applied is not None and item.id not in applied:
                continue
            counts.events += len(change.events)
            entry = self._cache.entries.get(item.id) or self._cache.unconfirmed.get(item.id)
            if entry is None:
                continue
            entry.item = item
            entry.version = item.version
            if item.state in TERMINAL:
                self._cache.entries.pop(item.id, None)
                if late_checkable(item) and not forgotten(item, change.events):
                    self._cache.unconfirmed[item.id] = entry
                else:
                    self._cache.unconfirmed.pop(item.id, None)
        if result.conflicts:
            counts.conflicts += len(result.conflicts)
            self._totals.conflicts += len(result.conflicts)
            # Another process wrote first: re-read those items; the next poll applies
            # fresh observations to what it wrote (never overwrite it).
            rows, _ = self.store.items_by_id(result.conflicts)
            self._cache.reread(rows)
            self._wake()
        return changes, result

    async def _remote_reports(
        self, backend: Backend, working: Mapping[str, RunItem], polled: Sequence[Entry]
    ) -> tuple[dict[str, list[Observation]], Exception | None]:
        """Self-report files, ONE read for all of them: of the items that left the queue
        and await their verdict, and, if the backend says its jobs report
        (``capabilities.self_report``), of the running ones too (a report moves a running
        item to SETTLING at once, so accounting is asked in the same poll)."""
        reader = abilities(backend).report_files
        if reader is None:
            return {}, None
        wanted = report_paths(polled, working, running_too=backend.capabilities.self_report)
        if not wanted:
            return {}, None
        try:
            files: Mapping[str, str] = await reader.read_text_files(list(wanted))
        except Exception as exc:
            log.info("reading self-report files failed: %s", exc)
            return {}, exc
        now = self.clock.now()
        found: dict[str, list[Observation]] = {}
        for path, text in files.items():
            item = wanted.get(path)
            if item is None or item.native_id is None:
                continue
            try:
                parsed = SelfReport.from_dict(json.loads(text))
                found[item.id] = [parsed.observation(item.native_id, now)]
            except Exception as exc:  # whatever the file holds, it is not a verdict
                log.warning("self-report file %s ignored: %s", path, exc)
        return found, None

    async def _output_checks(
        self,
        backend: Backend,
        polled: Sequence[Entry],
        observations: dict[str, list[Observation]],
        now: datetime,
    ) -> None:
        reader = abilities(backend).output
        if reader is None:
            return
        for entry in polled:
            checks = self._cache.checks.get(entry.item.run_id)
            if not checks or entry.item.state is not State.RUNNING or entry.item.native_id is None:
                continue
            lines = max(getattr(c, "last_lines", 50) for c in checks)
            try:
                snapshot: OutputSnapshot | None = await reader.read_output(
                    entry.item.native_id, entry.extra.get("stdout"), lines
                )
            except Exception as exc:
                log.info("item %s: cannot read output: %s", entry.item.id, exc)
                continue
            if snapshot is None:
                continue
            if snapshot.last_output_at is None and entry.item.stats.started_at is not None:
                snapshot = evolve(snapshot, last_output_at=entry.item.stats.started_at)
            for check in checks:
                try:
                    found = check.check(snapshot, native_id=entry.item.native_id, now=now)
                except Exception:
                    log.exception("output check %s failed on item %s", check.name, entry.item.id)
                    continue
                if found is not None:
                    observations[entry.item.id].append(found)
                    break

    async def _cancel_failed_by_output(self, backend: Backend, native_ids: list[str]) -> None:
        """An output check's failure verdict ends the job too (it would hang on)."""
        if native_ids and backend.capabilities.cancel:
            try:
                await backend.cancel(native_ids)
            except Exception as exc:
                log.warning("cancelling jobs failed by an output check: %s", exc)

    def _sync_watch(self, name: str, backend: Backend) -> None:
        """Keep one watch over the backend's active jobs, if it can push."""
        watcher = abilities(backend).watcher
        if watcher is None or not self._looping():
            return
        ids = frozenset(
            e.item.native_id
            for e in self._cache.entries.values()
            if e.item.backend == name and e.item.native_id is not None and e.item.state in POLLED
        )
        self._push.sync(name, watcher.watch, ids)

    def next_interval(self, draw: float) -> float:
        """Seconds until the next poll (``hpcstate._poll.next_interval``; ``draw`` in
        [0, 1) for the jitter)."""
        cache = self._cache
        return next_interval(
            self.cadence,
            self._memory.ledger,
            cache.entries.values(),
            cache.unconfirmed.values(),
            self.clock.now(),
            draw,
        )
