"""The commands: each opens what it needs from hpcstate.runtime and prints results."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

import attrs

from hpcstate import (
    TERMINAL,
    Absence,
    BackendNotFound,
    ConfigError,
    Event,
    ExitStatus,
    HpcStateError,
    Marker,
    MarkerCode,
    ParseError,
    ReasonKind,
    Run,
    RunItem,
    State,
    add_marker,
    registry,
    signal_number,
)
from hpcstate.backend import (
    AccountingQuery,
    Backend,
    BackendConfig,
    BackendInfo,
    Command,
    JobSpec,
    OutputQuestion,
    expand_output_pattern,
)
from hpcstate.runtime import (
    CorruptRow,
    Store,
    StoreError,
    SubmitRefused,
    Tracker,
    make_runner,
    report,
)

# TODO(runtime): Change is not exported by hpcstate.runtime; asked for in the report.
from hpcstate.runtime._store import Change, open_store

from ._app import Console, DataError, Failure, UnknownRun
from ._config import Config
from ._decode import decode, decoded_dict, decoded_text
from ._exitcodes import ToolExit, combine, item_exit_status
from ._human import (
    backend_line,
    exit_text,
    status_text,
    table,
    verdict_lines,
)
from ._once import ALREADY_THERE, WRAPPER_NAME, is_already_there, once_command
from ._parser import UsageError
from ._progress import Progress
from ._record import run_record
from ._resources import check_supported, declared_resources, parse_gpus
from ._values import (
    parse_duration,
    parse_env_assignment,
    parse_memory,
    parse_native_ref,
    parse_run_ref,
)

#: Commands that need no configuration file (they work anywhere, even in a job).
CONFIG_FREE: Final = frozenset({"decode", "report", "backends", "schema"})

_DEFAULT_FOLLOW_INTERVAL: Final = 1.0


def _seconds(option: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


@attrs.frozen
class WatchSettings:
    """``--timeout``, ``--interval`` and ``--grace``, read (and refused) before anything
    is done."""

    timeout: float | None
    interval: float | None
    grace: timedelta | None = None


def _watch_settings(args: argparse.Namespace) -> WatchSettings:
    interval = _seconds("--interval", args.interval)
    if interval is not None and interval <= 0:
        raise UsageError(f"--interval: must be more than 0 seconds, got {args.interval!r}")
    grace = _seconds("--grace", args.grace)
    if args.require_confirmed and not args.exit_status:
        raise UsageError("--require-confirmed changes the exit status: drop --no-exit-status")
    return WatchSettings(
        timeout=_seconds("--timeout", args.timeout),
        interval=interval,
        grace=None if grace is None else timedelta(seconds=grace),
    )


def _json_line(console: Console, document: object) -> None:
    console.out(json.dumps(document, separators=(",", ":"), ensure_ascii=False))


class Session:
    """The state database and a tracker for the backends a command needs, opened lazily."""

    def __init__(self, config: Config, console: Console, db: str | None) -> None:
        self.config = config
        self.console = console
        self.db_path = db or config.database
        self._store: Store | None = None
        self._tracker: Tracker | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            # A path (SQLite) or a postgresql:// URL, from --db, $HPCSTATE_DB or the file.
            self._store = open_store(self.db_path)
        return self._store

    def backend_config(self, name: str) -> BackendConfig:
        return self.config.backend(name)

    def tracker(
        self,
        backends: Sequence[str],
        *,
        interval: float | None = None,
        grace: timedelta | None = None,
    ) -> Tracker:
        """One tracker per command, knowing the configured backends it needs. ``interval``
        and ``grace`` (the command line's) win over the file's [tracker] table."""
        if self._tracker is None:
            configs = {name: self.backend_config(name) for name in dict.fromkeys(backends)}
            settings = self.config.tracker.kwargs()  # the file's [tracker] table
            if interval is not None:
                # A fixed interval: the user asked for exactly this pace.
                settings.update(fast_interval=interval, max_interval=interval)
            if grace is not None:
                settings.update(grace=grace)
            self._tracker = Tracker(store=self.store, backends=configs, **settings)
        else:
            for name in backends:
                self._tracker.add_backend(name, self.backend_config(name))
        return self._tracker

    async def close(self) -> None:
        if self._tracker is not None:
            await self._tracker.aclose()
        if self._store is not None:
            self._store.close()

    # -- runs ---------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        try:
            return self.store.get_run(run_id)
        except CorruptRow as exc:
            self.console.reported.add(run_id)
            raise DataError(
                f"run {run_id} is damaged in the state database and cannot be read ({exc.detail})",
                run_id=run_id,
            ) from None

    def _find_native(self, backend: str, native_id: str) -> str | None:
        # The newest run tracking that job (a recycled id may name older ones too).
        found = self.store.find_runs(backend, native_id)
        return found[-1] if found else None

    def resolve(self, text: str) -> str:
        """A run id from a run reference; UnknownRun if it names nothing."""
        try:
            ref = parse_run_ref(text, self.config.names())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if ref.backend is not None and ref.native_id is not None:
            found = self._find_native(ref.backend, ref.native_id)
            if found is None:
                raise UnknownRun(
                    f"no run tracks {ref.backend} job {ref.native_id!r}; adopt it with: "
                    f"hpcstate track {ref.text}",
                    ref=ref.text,
                )
            return found
        assert ref.run_id is not None
        if not self.store.has_run(ref.run_id):
            raise UnknownRun(
                f"unknown run {ref.run_id!r} (not in {self.store.path}; `hpcstate list` "
                "shows the runs there)",
                ref=ref.run_id,
            )
        return ref.run_id


# -- submit / track --------------------------------------------------------------------


def _spec(args: argparse.Namespace, backend: str, kind: str) -> tuple[JobSpec, str]:
    """The JobSpec the options describe for this backend, and the run's default name."""
    command: list[str] = list(args.command_argv)
    if args.script and command:
        raise UsageError("give either --script FILE or -- COMMAND, not both")
    if not args.script and not command:
        raise UsageError("nothing to run: give -- COMMAND [ARG...] or --script FILE")
    script: str | None = None
    name = args.name
    if args.script:
        if args.once:
            raise UsageError("--once wraps a command; run the script as one: --once S -- bash FILE")
        try:
            script = Path(args.script).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--script {args.script}: cannot read it: {exc}") from None
        name = name or Path(args.script).name
    else:
        name = name or Path(command[0]).name
        if args.once:
            try:
                command = list(once_command(args.once, command))
            except ValueError as exc:
                raise UsageError(str(exc)) from None
    try:
        environment = dict(parse_env_assignment(e) for e in args.env)
    except ValueError as exc:
        raise UsageError(f"--env: {exc}") from None
    try:
        time_limit = parse_duration(args.time_limit) if args.time_limit else None
    except ValueError as exc:
        raise UsageError(f"-t/--time: {exc}") from None
    try:
        memory = parse_memory(args.mem) if args.mem else None
    except ValueError as exc:
        raise UsageError(f"--mem: {exc}") from None
    try:
        gpus = parse_gpus(args.gpus) if args.gpus else None
    except ValueError as exc:
        raise UsageError(f"-G/--gpus: {exc}") from None
    check_supported(
        kind,
        backend,
        {
            "time_limit": time_limit,
            "memory_bytes": memory,
            "cpus": args.cpus,
            "tasks": args.tasks,
            "nodes": args.nodes,
            "gpus": gpus,
        },
        declared_resources(kind),
    )
    spec = JobSpec(
        command=tuple(command) if script is None else (),
        script=script,
        name=name,
        time_limit=time_limit,
        memory_bytes=memory,
        cpus=args.cpus,
        tasks=args.tasks,
        nodes=args.nodes,
        options={} if gpus is None else {"gpus": gpus},
        partition=args.partition,
        account=args.account,
        array=args.array,
        environment=environment,
        working_directory=args.chdir,
        stdout=args.output,
        stderr=args.error,
        extra_args=tuple(args.extra_arg),
    )
    return spec, name


async def _submit(args: argparse.Namespace, session: Session) -> int:
    # Every option is read before anything is stored or submitted.
    backend = args.backend or session.config.default_backend
    config = session.backend_config(backend)  # a one-line ConfigError before anything
    spec, name = _spec(args, backend, config.kind)
    watching = _watch_settings(args)
    tracker = session.tracker([backend], interval=watching.interval, grace=watching.grace)
    try:
        run = await tracker.submit(spec, backend=backend, name=name)
    except SubmitRefused as exc:
        # Refused by the scheduler or the transport (a host key, a login), or
        # unreachable: the run is stored as failed, never left pending.
        if args.json:
            _json_line(session.console, run_record(exc.run))
        what = (
            f"could not reach {backend} to submit"
            if exc.unreachable
            else f"{backend} rejected the submission"
        )
        message = f"{what}: {exc.reason}"
        if getattr(exc, "in_doubt", False):
            # The tag lookup could not answer either: the job may exist. The run stays
            # pending so that it is looked up, never submitted again.
            message += (
                f"; the job may have been submitted: run {exc.run.id} is kept to look it "
                "up (`hpcstate status` asks again), it will not be submitted twice"
            )
        return _refused(session.console, backend, message)
    rejected = _rejection(run)
    if rejected is not None:
        if args.json:
            _json_line(session.console, run_record(run))
        return _refused(session.console, backend, f"{backend} rejected the submission: {rejected}")
    if not (args.json and args.watch):
        if args.json:
            _json_line(session.console, run_record(run))
        else:
            session.console.out(run.id)
    if args.watch:
        return await _watch(session, [run.id], args, watching)
    return ToolExit.OK


def _refused(console: Console, backend: str, message: str) -> int:
    return console.fail(
        Failure(
            code=ToolExit.UNAVAILABLE,
            message=message,
            refers_to={"kind": "backend", "value": backend},
        )
    )


def _rejection(run: Run) -> str | None:
    """The scheduler's refusal, if the submission was refused."""
    for item in run.items:
        reason = item.stats.reason
        if (
            item.state is State.FAILED
            and reason is not None
            and reason.kind is ReasonKind.SUBMIT_REJECTED
        ):
            return reason.text or "no reason given"
    return None


async def _track(args: argparse.Namespace, session: Session) -> int:
    watching = _watch_settings(args)
    try:
        backend, native_id = parse_native_ref(args.ref, session.config.names())
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    tracker = session.tracker([backend], interval=watching.interval, grace=watching.grace)
    if await _known_to(tracker.backend(backend), native_id) is False:
        raise UnknownRun(
            f"{backend} has no job {native_id!r}: neither its queue nor its accounting "
            "knows it (check the id; nothing was recorded)",
            ref=args.ref,
        )
    run = await tracker.track(backend, native_id, name=args.name)
    if not (args.json and args.watch):
        if args.json:
            _json_line(session.console, run_record(run))
        else:
            session.console.out(run.id)
    if args.watch:
        return await _watch(session, [run.id], args, watching)
    return ToolExit.OK


async def _known_to(backend: Backend, native_id: str) -> bool | None:
    """Whether the backend knows the job: True, False (it can tell it never heard of
    it), or None (it cannot tell). Unreachable: the backend's error, raised."""
    observed = list(await backend.queue([native_id]))
    if any(o.state is not None for o in observed):
        return True
    if backend.capabilities.accounting:
        found = await backend.accounting(AccountingQuery(native_ids=(native_id,)))
        # Neither the queue nor accounting: the scheduler never had it.
        return any(o.state is not None for o in found)
    if any(o.absence is Absence.UNKNOWN for o in observed):
        return False  # "no trace, and no other source ever will" (no accounting behind it)
    return None


# -- watch -----------------------------------------------------------------------------


def _unreachable(tracker: Tracker, runs: Sequence[Run]) -> bool:
    """True if a backend of an unfinished run could not be reached at the last poll."""
    waiting = [run for run in runs if run.status not in TERMINAL]
    return any(not tracker.backend_status(run.backend).reachable for run in waiting) or any(
        item.has_marker(MarkerCode.UNREACHABLE.value) for run in waiting for item in run.items
    )


async def _watch(
    session: Session, run_ids: Sequence[str], args: argparse.Namespace, watching: WatchSettings
) -> int:
    console = session.console
    timeout, interval = watching.timeout, watching.interval
    runs = [session.get_run(run_id) for run_id in run_ids]
    tracker = session.tracker(
        [run.backend for run in runs], interval=interval, grace=watching.grace
    )
    states: dict[str, State] = {item.id: item.state for run in runs for item in run.items}
    labels = {
        item.id: f"{run.id}[{item.array_index}]" if item.array_index is not None else run.id
        for run in runs
        for item in run.items
    }
    progress = Progress(console.stdout, tty=console.tty, runs=len(runs), enabled=not args.json)
    started = time.monotonic()

    def on_event(event: Event) -> None:
        if event.item_id not in states:
            return
        changed = states[event.item_id] is not event.state
        states[event.item_id] = event.state
        if changed and not console.tty and event.state not in TERMINAL:
            progress.line(f"{labels[event.item_id]} {event.state}")
        progress.status(states, elapsed_s=time.monotonic() - started)

    async def redraw() -> None:
        while True:
            progress.status(states, elapsed_s=time.monotonic() - started)
            await asyncio.sleep(1.0)

    printed: set[str] = set()

    async def landed(run_id: str) -> None:
        # --json: each record the moment its verdict lands (one flushed line), so a
        # wrapper can act on each job while the others still run.
        await tracker.wait(run_id)
        if args.json and run_id not in printed:
            printed.add(run_id)
            _json_line(
                console, run_record(await _note_already_done(session, session.get_run(run_id)))
            )

    unsubscribe = tracker.subscribe(on_event)
    ticker = asyncio.ensure_future(redraw())
    timed_out = False
    try:
        if args.json:
            for run in runs:  # already decided: at once, in argument order
                if run.status in TERMINAL:
                    printed.add(run.id)
                    _json_line(console, run_record(await _note_already_done(session, run)))
        waits = [landed(run.id) for run in runs if run.status not in TERMINAL]
        await asyncio.wait_for(asyncio.gather(*waits), timeout)
    except asyncio.TimeoutError:
        timed_out = True
    finally:
        unsubscribe()
        ticker.cancel()
        progress.close()
    final = [await _note_already_done(session, session.get_run(run_id)) for run_id in run_ids]
    timed_out = timed_out or any(item.state not in TERMINAL for run in final for item in run.items)
    for run in final:
        if args.json:
            if run.id not in printed:  # still undecided at --timeout: as it stands
                _json_line(console, run_record(run))
        else:
            for line in verdict_lines(run):
                console.out(line)
    if timed_out:
        if _unreachable(tracker, final):
            console.error("error: the backend stayed unreachable until --timeout expired")
            return ToolExit.UNAVAILABLE
        console.error("error: --timeout expired before every verdict was in")
        return ToolExit.WATCH_TIMEOUT
    if not args.exit_status:
        return ToolExit.OK
    codes = []
    for run in final:
        for item in sorted(run.items, key=lambda i: (i.array_index or 0, i.id)):
            code = item_exit_status(item, require_confirmed=args.require_confirmed)
            codes.append(ToolExit.WATCH_TIMEOUT if code is None else code)
    return combine(codes)


async def _watch_command(args: argparse.Namespace, session: Session) -> int:
    watching = _watch_settings(args)
    run_ids = list(dict.fromkeys(session.resolve(ref) for ref in args.refs))
    return await _watch(session, run_ids, args, watching)


# -- status / list / cancel ------------------------------------------------------------


async def _refresh(session: Session, backends: Sequence[str]) -> None:
    """One poll of the given backends, so what is shown is current. A failure is a
    warning (the stored state is still shown), never a verdict."""
    if not backends:
        return
    try:
        await session.tracker(backends).poll_once()
    except (StoreError, ConfigError):
        raise
    except Exception as exc:
        session.console.warn(f"could not ask {', '.join(sorted(set(backends)))}: {exc}")


async def _status(args: argparse.Namespace, session: Session) -> int:
    run_id = session.resolve(args.ref)
    run = session.get_run(run_id)
    if not args.cached and run.status not in TERMINAL:
        await _refresh(session, [run.backend])
        run = session.get_run(run_id)
    run = await _note_already_done(session, run)
    if args.json:
        _json_line(session.console, run_record(run))
    else:
        session.console.out(status_text(run))
    return ToolExit.OK


async def _list(args: argparse.Namespace, session: Session) -> int:
    store = session.store
    if not args.cached:
        active = store.list_runs(active_only=True)
        usable = set(session.config.names())  # once: it reads the installed entry points
        await _refresh(session, [s.backend for s in active if s.backend in usable])
    # Filter first, then limit: "--state failed --limit 2" is the two newest failed runs.
    summaries = [
        summary
        for summary in store.list_runs()
        if (not args.backend or summary.backend == args.backend)
        and (not args.state or summary.status.value == args.state)
    ]
    if args.limit is not None:
        summaries = summaries[: max(args.limit, 0)]
    rows: list[list[str]] = []
    broken = 0
    for summary in summaries:
        try:
            run = store.get_run(summary.id)
        except CorruptRow as exc:
            broken += 1
            session.console.reported.add(summary.id)
            session.console.fail(
                Failure(
                    code=ToolExit.DATA_ERROR,
                    message=f"run {summary.id} is damaged in the state database and cannot "
                    f"be read ({exc.detail}); the other runs are listed",
                    refers_to={"kind": "run", "value": summary.id},
                )
            )
            rows.append(
                [summary.id, summary.backend, "?", str(summary.status), "unreadable", summary.name]
            )
            continue
        if args.json:
            _json_line(session.console, run_record(run))
            continue
        first = run.items[0] if len(run.items) == 1 else None
        rows.append(
            [
                run.id,
                run.backend,
                (first.native_id or "-") if first else f"{len(run.items)} jobs",
                str(run.status),
                exit_text(first) if first and first.terminal else "-",
                run.name,
            ]
        )
    if not args.json:
        if rows:
            session.console.out(
                table(rows, ["RUN", "BACKEND", "NATIVE ID", "STATE", "EXIT", "NAME"])
            )
        else:
            session.console.error("no runs")
    if broken:
        return ToolExit.DATA_ERROR
    return ToolExit.OK


async def _cancel(args: argparse.Namespace, session: Session) -> int:
    run_id = session.resolve(args.ref)
    run = session.get_run(run_id)
    if run.status in TERMINAL:
        if args.json:
            _json_line(session.console, run_record(run))
        else:
            session.console.out(f"{run.id} already finished: {run.status}")
        return ToolExit.OK
    run = await session.tracker([run.backend]).cancel(run_id)
    if args.json:
        _json_line(session.console, run_record(run))
    else:
        session.console.out(f"{run.id} cancel requested")
    return ToolExit.OK


# -- logs ------------------------------------------------------------------------------


async def _read_from(session: Session, backend: BackendConfig, path: str, offset: int) -> bytes:
    """Bytes of ``path`` from ``offset`` on, where the job runs (locally or over SSH)."""
    if backend.host is None:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read()
        except FileNotFoundError:
            return b""
    runner = make_runner(backend)
    try:
        result = await runner.run(Command(argv=("tail", "-c", f"+{offset + 1}", path)))
    finally:
        await runner.close()
    if result.returncode != 0:
        if "No such file" in result.stderr:
            return b""
        raise DataError(f"{backend.name}: cannot read {path}: {result.stderr.strip()}")
    return result.stdout.encode()


def _output_path(session: Session, run: Run, item: RunItem, *, stderr: bool) -> str:
    """Where an item's stdout (or stderr) is, on the job's side: the backend's answer
    (its job directory, its scheduler's default file), else the JobSpec's file."""
    assert item.native_id is not None
    backend = session.backend_config(run.backend)
    spec = session.store.run_spec(run.id)
    locate = registry.load(backend.kind).output_location
    if locate is not None:
        question = OutputQuestion(
            config=backend,
            spec=spec,
            native_id=item.native_id,
            array_index=item.array_index,
            stderr=stderr,
        )
        found = locate(question)
        if found:
            return found
    path = None if spec is None else (spec.stderr or spec.stdout if stderr else spec.stdout)
    if not path:
        raise DataError(
            f"run {run.id}: hpcstate does not know where its output went; submit with "
            "--output PATH (or --chdir DIR where the scheduler writes a default file there) "
            "to make `hpcstate logs` find it"
        )
    if spec is not None and spec.working_directory and not path.startswith(("/", "~")):
        path = f"{spec.working_directory.rstrip('/')}/{path}"
    return expand_output_pattern(path, item.native_id, item.array_index)


async def _logs(args: argparse.Namespace, session: Session) -> int:
    run_id = session.resolve(args.ref)
    run = session.get_run(run_id)
    interval = _seconds("--interval", args.interval) or _DEFAULT_FOLLOW_INTERVAL
    backend = session.backend_config(run.backend)
    items = sorted(run.items, key=lambda i: (i.array_index or 0, i.id))
    targets = []
    for item in items:
        if item.native_id is None:
            continue
        path = _output_path(session, run, item, stderr=args.stderr)
        targets.append((item.id, item.array_index, path))
    offsets = {item_id: 0 for item_id, _, _ in targets}
    out = session.console.stdout
    while True:
        for item_id, index, path in targets:
            data = await _read_from(session, backend, path, offsets[item_id])
            if data or (args.json and not args.follow):
                offsets[item_id] += len(data)
                text = data.decode("utf-8", errors="replace")
                if args.json:
                    stream = "stderr" if args.stderr else "stdout"
                    document = {"schema": 1, "id": run_id, "item_id": item_id, "index": index}
                    document.update(path=path, stream=stream, text=text)
                    _json_line(session.console, document)
                    continue
                if len(targets) > 1 and not args.follow:
                    out.write(f"==> [{index}] {path} <==\n")
                out.write(text)
                out.flush()
        if not args.follow:
            return ToolExit.OK
        run = session.get_run(run_id)
        if run.status in TERMINAL:
            return ToolExit.OK
        await _refresh(session, [run.backend])
        await asyncio.sleep(interval)


# -- submit --once: the "already there" marker ------------------------------------------

_TAIL_BYTES: Final = 4096


async def _read_tail(backend: BackendConfig, path: str) -> str:
    """The last few KiB of a file where the job ran ("" if it does not exist)."""
    if backend.host is None:
        try:
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - _TAIL_BYTES))
                return handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
    runner = make_runner(backend)
    try:
        result = await runner.run(Command(argv=("tail", "-c", str(_TAIL_BYTES), path)))
    finally:
        await runner.close()
    return result.stdout if result.returncode == 0 else ""


async def _note_already_done(session: Session, run: Run) -> Run:
    """Mark the items of a ``--once`` run whose wrapper found its sentinel.

    The wrapper says so as the last line of its stderr; it is read once the item has
    its verdict, and the marker is stored (compare-and-set: a lost race is harmless,
    the next look adds it).
    """
    done = [
        item
        for item in run.items
        if item.state is State.COMPLETED
        and item.native_id is not None
        and not item.has_marker(MarkerCode.ALREADY_DONE.value)
    ]
    if not done:
        return run
    try:
        spec = session.store.run_spec(run.id)
    except StoreError:
        return run
    if spec is None or spec.command[3:4] != (WRAPPER_NAME,):
        return run
    backend = session.backend_config(run.backend)
    changes = []
    now = datetime.now(timezone.utc)
    for item in done:
        assert item.native_id is not None
        try:
            path = _output_path(session, run, item, stderr=True)
            tail = await _read_tail(backend, path)
        except (DataError, HpcStateError, OSError):
            continue
        lines = [line for line in tail.splitlines() if line.strip()]
        if lines and is_already_there(lines[-1]):
            text = "already there: " + lines[-1][len(ALREADY_THERE) :]
            marker = Marker(code=MarkerCode.ALREADY_DONE.value, text=text)
            step = add_marker(item, marker, at=now)
            changes.append(
                Change(item=step.item, expected_version=item.version, events=step.events)
            )
    if changes:
        session.store.commit(changes)
        return session.get_run(run.id)
    return run


# -- prune / decode / report / backends ------------------------------------------------


async def _prune(args: argparse.Namespace, session: Session) -> int:
    try:
        older = parse_duration(args.older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    count = session.store.prune(older_than=older, now=datetime.now(timezone.utc))
    if args.json:
        _json_line(session.console, {"schema": 1, "pruned": count})
    else:
        session.console.out(f"pruned {count} finished run(s) unchanged for {args.older_than}")
    return ToolExit.OK


async def _fleet(args: argparse.Namespace, session: Session) -> int:
    from ._fleet import lease_doc, lease_rows, prometheus_text

    if args.json and args.prometheus:
        raise UsageError("--json and --prometheus: choose one")
    leases = session.store.leases()
    now = datetime.now(timezone.utc)
    console = session.console
    if args.prometheus:
        console.stdout.write(prometheus_text(leases, now))
        console.stdout.flush()
    elif args.json:
        for lease in leases:
            _json_line(console, lease_doc(lease, now))
    elif not leases:
        console.out("no process has polled a backend through this store yet")
    else:
        console.out(
            table(
                lease_rows(leases, now),
                ["BACKEND", "HOLDER", "LEASE", "SINCE", "LAST POLL", "CALLS"],
            )
        )
    return ToolExit.OK


async def _decode(args: argparse.Namespace, console: Console) -> int:
    decoded = decode(args.value, args.form)
    if args.json:
        _json_line(console, decoded_dict(decoded))
    else:
        console.out(decoded_text(decoded))
    return ToolExit.OK


def _reported_status(args: argparse.Namespace) -> ExitStatus:
    try:
        if args.exit_code is not None:
            return ExitStatus.exited(args.exit_code)
        if args.signal is not None:
            return ExitStatus.killed(signal_number(args.signal))
        return ExitStatus.from_wait_status(args.wait_status)
    except ParseError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def _report(args: argparse.Namespace, console: Console) -> int:
    status = _reported_status(args)
    done = report(status, detail=args.detail)
    if args.json:
        _json_line(console, done.to_dict())
    else:
        console.out(f"reported {status.describe()} for run {done.run_id}")
    return ToolExit.OK


def _backend_doc(name: str, found: BackendInfo | Exception) -> dict[str, Any]:
    if isinstance(found, BackendInfo):
        return {
            "schema": 1,
            "name": name,
            "ok": True,
            "version": found.version,
            "api_version": found.api_version,
            "description": found.description,
            "capabilities": attrs.asdict(found.capabilities),
            "error": None,
        }
    return {
        "schema": 1,
        "name": name,
        "ok": False,
        "version": None,
        "api_version": None,
        "description": "",
        "capabilities": None,
        "error": str(found),
    }


def _load_backend(name: str) -> BackendInfo | Exception:
    try:
        return registry.load(name)
    except Exception as exc:  # a broken plugin is listed with its error, never fatal
        return exc


async def _backends(args: argparse.Namespace, console: Console) -> int:
    installed = registry.available()
    found = [(name, _load_backend(name)) for name in installed]
    missing = [name for name in registry.FIRST_PARTY if name not in installed]
    if args.json:
        for name, info in found:
            _json_line(console, _backend_doc(name, info))
        for name in missing:
            absent = BackendNotFound(f"not installed: {registry.install_hint(name)}")
            _json_line(console, _backend_doc(name, absent))
        return ToolExit.OK
    rows = []
    notes = []
    for name, info in found:
        if isinstance(info, BackendInfo):
            rows.append(backend_line(info))
            continue
        text = str(info)
        hint = text.rpartition("to add it: ")[2] if "to add it: " in text else ""
        if isinstance(info, BackendNotFound) and hint:
            # Installed, but a dependency is missing: the command that fixes it.
            rows.append([name, "-", "-", f"needs: {hint}"])
        else:
            rows.append([name, "-", "-", "cannot be loaded (see below)"])
            notes.append(f"{name}: {text}")
    # The project's own backends that are not installed, with the command that adds them.
    rows += [[name, "-", "-", f"not installed: {registry.install_hint(name)}"] for name in missing]
    rows.sort(key=lambda row: row[0])
    console.out(table(rows, ["NAME", "VERSION", "API", "CAPABILITIES"]))
    for line in notes:
        console.out(f"  {line}")
    return ToolExit.OK


def record_schema() -> str:
    """The JSON Schema of the run record (package data: hpcstate/schema/record-v1.json)."""
    from importlib.resources import files

    return files("hpcstate").joinpath("schema/record-v1.json").read_text(encoding="utf-8")


async def _schema(args: argparse.Namespace, console: Console) -> int:
    console.stdout.write(record_schema())
    console.stdout.flush()
    return ToolExit.OK


# -- dispatch --------------------------------------------------------------------------

_SessionHandler = Callable[[argparse.Namespace, Session], Awaitable[int]]
_ConsoleHandler = Callable[[argparse.Namespace, Console], Awaitable[int]]

_WITH_SESSION: Final[dict[str, _SessionHandler]] = {
    "submit": _submit,
    "track": _track,
    "watch": _watch_command,
    "status": _status,
    "list": _list,
    "cancel": _cancel,
    "logs": _logs,
    "prune": _prune,
    "fleet": _fleet,
}
_WITHOUT_SESSION: Final[dict[str, _ConsoleHandler]] = {
    "decode": _decode,
    "report": _report,
    "backends": _backends,
    "schema": _schema,
}


async def dispatch(args: argparse.Namespace, config: Config | None, console: Console) -> int:
    if args.command in _WITHOUT_SESSION:
        return await _WITHOUT_SESSION[args.command](args, console)
    assert config is not None
    session = Session(config, console, args.db)
    try:
        return await _WITH_SESSION[args.command](args, session)
    finally:
        await session.close()
