"""Submitting: the PENDING items of a backend as far as the concurrency caps allow
(one job per item, or a whole array in one go), each claimed in the store first; a
claim without an answer (a tracker died mid-submit, an answer lost) is resolved by
looking its tag up before anything is submitted again; refusals end the items FAILED,
and a submit whose fate nobody can tell is marked ``submit_in_doubt``."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, Final

from attrs import evolve, frozen

from hpcstate import (
    TERMINAL,
    BackendError,
    CommandFailed,
    HpcStateError,
    Marker,
    MarkerCode,
    Run,
    RunItem,
    State,
    add_marker,
    expand_array_spec,
    new_item,
    submit_rejected,
    submitted,
)
from hpcstate.backend import Backend, JobSpec, Submission, abilities

from ._bus import MARKER_ATTEMPTS, EventBus
from ._cache import POLLED, Cache, Entry, Memory, Totals
from ._clock import Clock
from ._errors import AuthenticationFailed, HostKeyRejected, StoreError
from ._output import OutputCheck, check_to_dict
from ._report import DB_ENV, ITEM_ID_ENV, REPORT_FILE_ENV, RUN_ID_ENV, report_file_name
from ._store import Change, ItemRow, Store

log = logging.getLogger("hpcstate.runtime.tracker")

#: A submit claim older than this, still unanswered, belongs to a dead tracker.
CLAIM_STALE: Final = timedelta(seconds=300)
#: The marker of an item whose submit may or may not have reached its backend (it was
#: unreachable, and so was the tag lookup): never submitted again, only looked up.
SUBMIT_IN_DOUBT: Final = MarkerCode.SUBMIT_IN_DOUBT.value


class SubmitRefused(BackendError):
    """``Tracker.submit`` could not hand the run to its backend: the scheduler refused
    it (``CommandFailed``), the transport refused us for good (``HostKeyRejected``,
    ``AuthenticationFailed``), or the backend could not be reached and nothing was
    found under the submission's tag. The refused items are stored as FAILED (reason
    ``submit_rejected``, confirmed: they never ran); ``run`` is the run as stored,
    ``reason`` the backend's or transport's message, ``__cause__`` the original error.
    ``unreachable`` is True when the backend could not be reached (a transient cause:
    submitting again later may work). ``in_doubt`` is True when not even a lookup of
    the submission's tag answered, so the job MAY exist: the items then stay PENDING
    with the ``submit_in_doubt`` marker and are never submitted again; the tracker looks
    the tag up once the backend answers and records the job, or ends them FAILED. The
    CLI exits 69 (EX_UNAVAILABLE) for it."""

    def __init__(
        self, run: Run, reason: str, *, unreachable: bool = False, in_doubt: bool = False
    ) -> None:
        self.run = run
        self.reason = reason
        self.unreachable = unreachable
        self.in_doubt = in_doubt
        if unreachable:
            super().__init__(f"{run.backend} could not be reached to submit: {reason}")
        else:
            super().__init__(f"{run.backend} rejected the submission: {reason}")


@frozen
class Refusal:
    reason: str
    cause: BaseException | None
    unreachable: bool
    in_doubt: bool = False


class Submitter:
    """Submits for the tracker; shares its cache, memory, totals and event bus.
    ``backend(name)`` makes or finds a backend; ``conflicted(n)`` hears of conflicts."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        cache: Cache,
        memory: Memory,
        totals: Totals,
        bus: EventBus,
        concurrency: Mapping[str, int],
        backend: Callable[[str], Backend],
        conflicted: Callable[[int], None],
    ) -> None:
        self.store = store
        self.clock = clock
        self._cache = cache
        self._memory = memory
        self._totals = totals
        self._bus = bus
        self.concurrency = concurrency
        self._backend = backend
        self._conflicted = conflicted

    def item_extras(
        self, backend: Backend, spec: JobSpec, run_id: str, items: Sequence[RunItem]
    ) -> dict[str, dict[str, Any]]:
        """Where each item reports to (and reads its output from), by item id: jobs of
        a host-local backend report into the store; others into a report file next to
        their output, which the tracker reads through the backend (``report_files``)."""
        able = abilities(backend)
        if able.host_local is not None:
            return {item.id: {"report": "db"} for item in items}
        files = able.report_files
        watched = (
            files is not None
            and backend.capabilities.self_report  # its running items' files are read
            and bool(files.reports_itself(spec))
        )
        base = PurePosixPath(spec.stdout).parent if spec.stdout else None
        if base is None:
            base = PurePosixPath(spec.working_directory) if spec.working_directory else None
        extras: dict[str, dict[str, Any]] = {}
        for item in items:
            template = f"hpcstate-report-{run_id}.{{array_index}}.json"
            if spec.array is None:
                template = f"hpcstate-report-{item.id}.json"
            path = str(base / template) if base is not None else template
            extras[item.id] = {
                "report": "file",
                "report_template": path,
                "report_file": report_file_name(path, item.array_index),
                "stdout": spec.stdout,
                # The job writes that file when its payload ends (else it is only read
                # once the item settles, in case the user's own script wrote it).
                "self_reports": watched,
            }
        return extras

    def spec_for(
        self, spec: JobSpec, run_id: str, items: Sequence[Entry], tag: str, *, whole: bool
    ) -> JobSpec:
        env = dict(spec.environment)
        env[RUN_ID_ENV] = run_id
        first = items[0]
        if not whole:
            env[ITEM_ID_ENV] = first.item.id
        if first.extra.get("report") == "db":
            env[DB_ENV] = str(self.store.path.resolve())
        else:
            template = first.extra.get("report_template")
            if template:
                env[REPORT_FILE_ENV] = template if whole else first.extra["report_file"]
        changes: dict[str, Any] = {"environment": env, "tag": tag}
        if not whole and spec.array is not None:
            # The backend runs tasks one by one (no native arrays): one job per task.
            from .local import ARRAY_INDEX_ENV

            env[ARRAY_INDEX_ENV] = str(first.item.array_index)
            changes["array"] = None
        return evolve(spec, **changes)

    def _occupied(self, backend: str) -> int:
        return sum(
            1
            for e in self._cache.entries.values()
            if e.item.backend == backend and e.item.state in POLLED
        )

    async def submit_pending(
        self,
        name: str,
        backend: Backend,
        *,
        only_run: str | None = None,
        refusals: dict[str, Refusal] | None = None,
    ) -> int:
        """Submit the PENDING items of backend ``name`` as far as the caps allow. With
        ``refusals`` (a submit() call is waiting for the answer), a backend that cannot
        be reached ends the item as refused (once its tag is not found) instead of
        keeping it for a later try, and each refusal is recorded there by item id."""
        pending = [
            e
            for e in self._cache.entries.values()
            if e.item.backend == name
            and e.item.state is State.PENDING
            and (only_run is None or e.item.run_id == only_run)
        ]
        if not pending:
            return 0
        pending.sort(key=lambda e: (e.item.created_at, e.item.run_id, e.item.array_index or 0))
        now = self.clock.now()
        # In doubt first: a claim without an answer (a tracker died mid-submit).
        count = 0
        for entry in [e for e in pending if e.submit_started_at is not None]:
            # Resolving one claim of a whole array settles its siblings too (their claim
            # is cleared, they leave PENDING): look again before touching each one.
            started = entry.submit_started_at
            if started is None or entry.item.state is not State.PENDING:
                continue
            if now - started < CLAIM_STALE and not entry.item.has_marker(SUBMIT_IN_DOUBT):
                continue  # maybe another tracker is submitting it right now
            count += await self._totals.guarded(
                f"item {entry.item.id}: resolving its submit",
                self._resolve_in_doubt(name, backend, entry),
            )
        fresh = [
            e for e in pending if e.submit_started_at is None and e.item.state is State.PENDING
        ]
        cap = self.concurrency.get(name)
        free = None if cap is None else max(0, cap - self._occupied(name))
        for run_id, group in self._submission_groups(fresh):
            if free is not None and free <= 0:
                break
            if self._whole_array(run_id):
                # One submission for the whole array (the scheduler throttles it with
                # %N); it may overshoot the cap, which then holds further submissions.
                submitted_now = await self._totals.guarded(
                    f"run {run_id}: submitting",
                    self._submit_group(name, backend, run_id, group, whole=True, refusals=refusals),
                )
                count += submitted_now
                if free is not None:
                    free -= submitted_now
                continue
            limit = self._cache.run_limits.get(run_id)
            if limit is not None:
                running = sum(
                    1
                    for e in self._cache.entries.values()
                    if e.item.run_id == run_id and e.item.state in POLLED
                )
                group = group[: max(0, limit - running)]
            for entry in group:
                if free is not None and free <= 0:
                    break
                submitted_now = await self._totals.guarded(
                    f"item {entry.item.id}: submitting",
                    self._submit_group(
                        name, backend, run_id, [entry], whole=False, refusals=refusals
                    ),
                )
                count += submitted_now
                if free is not None:
                    free -= submitted_now
        return count

    def _whole_array(self, run_id: str) -> bool:
        try:
            return bool(self.store.run_options(run_id).get("whole_array"))
        except StoreError:
            return False

    @staticmethod
    def _submission_groups(entries: list[Entry]) -> list[tuple[str, list[Entry]]]:
        groups: dict[str, list[Entry]] = {}
        for entry in entries:
            groups.setdefault(entry.item.run_id, []).append(entry)
        return list(groups.items())

    async def _submit_group(
        self,
        name: str,
        backend: Backend,
        run_id: str,
        group: list[Entry],
        *,
        whole: bool,
        refusals: dict[str, Refusal] | None = None,
    ) -> int:
        """Submit one job (one item, or a whole array in one go). Returns items submitted."""
        spec = self.store.run_spec(run_id)
        if spec is None:
            log.error("run %s has pending items but no stored spec; cannot submit", run_id)
            return 0
        tag = f"hpcstate-{run_id}" if whole else f"hpcstate-{group[0].item.id}"
        now = self.clock.now()
        claimed: list[Entry] = []
        for entry in group:
            if self.store.claim_submit(entry.item.id, version=entry.version, tag=tag, at=now):
                entry.submit_tag = tag
                entry.submit_started_at = now
                claimed.append(entry)
        if len(claimed) != len(group):
            if claimed and whole:
                log.warning(
                    "run %s: only part of the array could be claimed; retrying later", run_id
                )
                for entry in claimed:
                    self.store.release_submit(entry.item.id, version=entry.version)
                    entry.submit_started_at = None
            if not claimed or whole:
                return 0
            group = claimed
        job = self.spec_for(spec, run_id, group, tag, whole=whole)
        self._memory.submitted(now)
        try:
            answer = await backend.submit(job)
        except (CommandFailed, HostKeyRejected, AuthenticationFailed) as exc:
            # Refused for good (HostKeyRejected and AuthenticationFailed are transport
            # errors that no retry can fix): a failed submission, never a queued one.
            return await self._rejected(group, str(exc), refusals=refusals, cause=exc)
        except BackendError as exc:
            if refusals is not None:
                return await self._unreachable(
                    name, backend, group, tag, exc, refusals, whole=whole
                )
            # Transient: the answer may be lost. Keep the claim: the next try looks the
            # tag up first and only submits again if nothing was created.
            log.warning("run %s: submit failed (will look up tag %s): %s", run_id, tag, exc)
            return 0
        except (HpcStateError, ValueError, TypeError) as exc:
            return await self._rejected(group, str(exc), refusals=refusals, cause=exc)
        except Exception as exc:
            # A bug in the backend: the job may or may not exist. Keep the claim, like a
            # lost answer: the tag is looked up before anything is submitted again.
            self._totals.failed(f"run {run_id}: backend {name} submit", exc)
            return 0
        return await self._submitted(group, answer, whole=whole)

    async def _unreachable(
        self,
        name: str,
        backend: Backend,
        group: list[Entry],
        tag: str,
        exc: BackendError,
        refusals: dict[str, Refusal],
        *,
        whole: bool,
    ) -> int:
        """A submit() call's backend could not be reached (after the backend's own
        retries). Look the tag up once: a job found is recorded as submitted; none found
        ends the items refused. If the lookup cannot answer either, the job may exist:
        the items keep their claim and get the ``submit_in_doubt`` marker, so that no
        process ever submits them again; the first lookup that answers records the job
        or ends them refused. Either way the caller hears it now (SubmitRefused)."""
        finder = abilities(backend).finder
        found: Submission | None = None
        failed: Exception | None = None
        if finder is None:
            failed = BackendError(f"backend {name!r} cannot look submissions up by tag")
        else:
            try:
                found = await finder.find_submission(tag)
            except Exception as lookup:
                failed = lookup
        if found is not None:
            log.info("submit of tag %s: answer lost, found as %s", tag, found.native_id)
            return await self._submitted(group, found, whole=whole)
        message = f"backend {name!r} unreachable at submit: {exc}"
        if failed is None:  # the backend answered: nothing was created
            return await self._rejected(
                group, message, refusals=refusals, cause=exc, unreachable=True
            )
        text = (
            f"{message}; looking its tag {tag} up failed too ({failed}): the job may have "
            "been created; it is looked up again once the backend answers (then tracked, "
            "or the run fails), and never submitted again"
        )
        marker = Marker(code=SUBMIT_IN_DOUBT, text=text[:500])
        now = self.clock.now()

        def marking(row: ItemRow) -> Change | None:
            if row.item.state is not State.PENDING:
                return None
            step = add_marker(row.item, marker, at=now)
            if step.item is row.item:
                return None
            return Change(item=step.item, expected_version=row.item.version, events=step.events)

        changes = []
        for entry in group:
            step = add_marker(entry.item, marker, at=now)
            if step.item is not entry.item:
                changes.append(
                    Change(item=step.item, expected_version=entry.version, events=step.events)
                )
            refusals[entry.item.id] = Refusal(text, exc, unreachable=True, in_doubt=True)
        await self._commit_entries(changes, marking, "its submit-in-doubt marker")
        return 0

    async def _rejected(
        self,
        group: list[Entry],
        message: str,
        *,
        refusals: dict[str, Refusal] | None = None,
        cause: BaseException | None = None,
        unreachable: bool = False,
    ) -> int:
        now = self.clock.now()
        text = message[:2000]
        if refusals is not None:
            for entry in group:
                refusals[entry.item.id] = Refusal(text, cause, unreachable)

        def rejecting(row: ItemRow) -> Change | None:
            if row.item.state is not State.PENDING:
                return None  # another writer ended it (a cancel): nothing was created
            step = submit_rejected(row.item, at=now, message=text)
            return Change(
                item=step.item,
                expected_version=row.item.version,
                events=step.events,
                clear_submit=True,
            )

        changes = []
        for entry in group:
            step = submit_rejected(entry.item, at=now, message=text)
            changes.append(
                Change(
                    item=step.item,
                    expected_version=entry.version,
                    events=step.events,
                    clear_submit=True,
                )
            )
        await self._commit_entries(changes, rejecting, "its refused submission")
        return 0

    async def _submitted(self, group: list[Entry], answer: Submission, *, whole: bool) -> int:
        now = self.clock.now()
        changes = []
        to_cancel: dict[str, None] = {}  # an ordered set
        task_ids = answer.array_task_ids
        natives: dict[str, str] = {}
        for position, entry in enumerate(group):
            if not whole:
                native = answer.native_id
            elif len(task_ids) == len(group):
                native = task_ids[position]
            else:
                native = f"{answer.native_id}_{entry.item.array_index}"
            natives[entry.item.id] = native
            step = submitted(entry.item, native_id=native, at=now, submitted_at=answer.submitted_at)
            changes.append(
                Change(
                    item=step.item,
                    expected_version=entry.version,
                    events=step.events,
                    clear_submit=True,
                )
            )
            if entry.item.has_marker(MarkerCode.CANCEL_REQUESTED.value):
                to_cancel[native] = None

        def recording(row: ItemRow) -> Change | None:
            # Another writer changed the item while it was being submitted (a cancel
            # request, a marker): record the job on top of what it wrote.
            item, native = row.item, natives[row.item.id]
            if item.state is State.PENDING:
                if item.has_marker(MarkerCode.CANCEL_REQUESTED.value):
                    to_cancel[native] = None
                step = submitted(item, native_id=native, at=now, submitted_at=answer.submitted_at)
                return Change(
                    item=step.item,
                    expected_version=item.version,
                    events=step.events,
                    clear_submit=True,
                )
            if item.native_id != native:
                # Ended meanwhile (cancelled before its claim was seen): the job we
                # just created must not run on untracked.
                log.warning(
                    "item %s became %s while it was submitted as %s; cancelling that job",
                    item.id,
                    item.state.value,
                    native,
                )
                to_cancel[native] = None
            return None

        await self._commit_entries(changes, recording, "the job it was submitted as")
        if to_cancel:
            await self._backend(group[0].item.backend).cancel(list(to_cancel))
        return len(group)

    async def _commit_entries(
        self, changes: list[Change], redo: Callable[[ItemRow], Change | None], what: str
    ) -> None:
        landed, lost = await self._bus.commit_redoing(changes, redo, self._conflicted)
        for change in landed:
            entry = self._cache.entries.get(change.item.id)
            if entry is None:
                continue
            entry.item = change.item
            entry.version = change.item.version
            if change.clear_submit:
                entry.submit_started_at = None
            if change.item.state in TERMINAL:
                self._cache.entries.pop(change.item.id, None)
        if lost:
            # The claim stays: the next try looks the tag up before anything else.
            self._totals.failed(
                f"item(s) {', '.join(lost)}: {what} not stored",
                StoreError(f"other writers kept changing them for {MARKER_ATTEMPTS} attempts"),
            )

    async def _resolve_in_doubt(self, name: str, backend: Backend, entry: Entry) -> int:
        """A claim with no stored answer: look the tag up before submitting again."""
        finder = abilities(backend).finder
        tag = entry.submit_tag or ""
        if finder is None:
            log.error(
                "item %s: a submit (tag %s) may or may not have reached backend %s, which "
                "cannot look jobs up by tag; not submitting again (cancel the run to end it)",
                entry.item.id,
                tag,
                name,
            )
            return 0
        try:
            found: Submission | None = await finder.find_submission(tag)
        except Exception as exc:
            log.warning("item %s: looking up tag %s failed: %s", entry.item.id, tag, exc)
            return 0
        if found is not None:
            log.info(
                "item %s: tag %s found as %s; not submitting again",
                entry.item.id,
                tag,
                found.native_id,
            )
            group = [
                e
                for e in self._cache.entries.values()
                if e.submit_tag == tag and e.item.state is State.PENDING
            ]
            group.sort(key=lambda e: e.item.array_index or 0)
            return await self._submitted(group, found, whole=self._whole_array(entry.item.run_id))
        doubt = next((m for m in entry.item.markers if m.code == SUBMIT_IN_DOUBT), None)
        if doubt is not None:
            # Its submit() call was told it failed: never submitted again behind its back.
            group = [
                e
                for e in self._cache.entries.values()
                if e.submit_tag == tag and e.item.state is State.PENDING
            ]
            message = f"{doubt.text.split('; looking its tag', 1)[0]}; tag {tag} not found"
            return await self._rejected(group, message)
        if self.store.release_submit(entry.item.id, version=entry.version):
            entry.submit_started_at = None
        return 0


# -- new runs: inserts of new ids (no compare-and-set: no other writer holds them yet) --


def new_run_id(clock: Clock) -> str:
    return clock.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def store_new_run(
    *,
    store: Store,
    cache: Cache,
    submitter: Submitter,
    target: Backend,
    spec: JobSpec,
    backend: str,
    name: str,
    output_checks: Sequence[OutputCheck],
    run_id: str,
    now: datetime,
) -> None:
    """Store run ``run_id`` of ``spec`` on ``backend``, its items PENDING."""
    indexes: tuple[int | None, ...] = (None,)
    limit: int | None = None
    if spec.array:
        indexes = expand_array_spec(spec.array)
        if "%" in spec.array:
            limit = int(spec.array.rsplit("%", 1)[1].strip("]") or "0") or None
    name = name or spec.name
    items = [
        new_item(
            id=f"{run_id}.{index if index is not None else 0}",
            run_id=run_id,
            backend=backend,
            now=now,
            name=name,
            array_index=index,
        )
        for index in indexes
    ]
    run = Run(id=run_id, backend=backend, name=name, created_at=now, items=items)
    whole_array = spec.array is not None and target.capabilities.array_jobs
    extras = submitter.item_extras(target, spec, run_id, items)
    documents = [d for d in (check_to_dict(c) for c in output_checks) if d is not None]
    options: dict[str, Any] = {"output_checks": documents, "whole_array": whole_array}
    if limit:
        options["max_running"] = limit
        cache.run_limits[run_id] = limit
    cache.checks[run_id] = tuple(output_checks)
    store.create_run(run, spec=spec, options=options, extras=extras)


def refused(run: Run, refusals: Mapping[str, Refusal]) -> SubmitRefused:
    """The error of a submit the backend refused (the first refusal's reason)."""
    first = next(iter(refusals.values()))
    error = SubmitRefused(run, first.reason, unreachable=first.unreachable, in_doubt=first.in_doubt)
    error.__cause__ = first.cause
    return error


def store_adopted_run(
    *, store: Store, backend: str, native_id: str, name: str, run_id: str, now: datetime
) -> None:
    """Store run ``run_id``: one item, already submitted as ``native_id``."""
    item = new_item(id=f"{run_id}.0", run_id=run_id, backend=backend, now=now, name=name)
    step = submitted(item, native_id=native_id, at=now)
    run = Run(id=run_id, backend=backend, name=name, created_at=now, items=[step.item])
    store.create_run(run, options={"adopted": True}, events=step.events)
