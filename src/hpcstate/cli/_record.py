"""The JSON record ``--json`` prints for a run (schema 1; docs/concepts/json-schema.md).

Pure. The record is a flat, jq-friendly view for consumers; it is not the storage
format (``hpcstate.serial`` is). Fields are only ever added within schema 1, and
every field is always present (null when unknown), so ``jq .exit_code`` never needs
a default. Array runs carry one entry per task in ``items``.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, Final

from hpcstate import TERMINAL, ExitStatus, JobStats, Reason, Run, RunItem, State
from hpcstate.serial import format_utc

RECORD_SCHEMA: Final = 1


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` (:func:`hpcstate.serial.format_utc`): strings that
    sort and compare as times."""
    return None if value is None else format_utc(value)


def _reason(reason: Reason | None) -> dict[str, Any] | None:
    if reason is None:
        return None
    return {
        "kind": reason.kind.value,
        "text": reason.text,
        "signal": reason.signal,
        "uid": reason.uid,
        "detail": reason.detail,
    }


def _exit_fields(exit: ExitStatus | None) -> dict[str, Any]:
    return {
        "exit_code": None if exit is None else exit.code,
        "signal": None if exit is None else exit.signal,
        "signal_name": None if exit is None else exit.signal_name,
        "core_dumped": False if exit is None else exit.core_dumped,
    }


def _stats(stats: JobStats, restarts: int) -> dict[str, Any]:
    ambiguous = [
        f"{label}: {status.ambiguous}"
        for label, status in (("exit", stats.exit), ("derived exit", stats.derived_exit))
        if status is not None and status.ambiguous
    ]
    return {
        "elapsed_s": stats.elapsed_s,
        "cpu_time_s": stats.cpu_time_s,
        "max_rss_bytes": stats.max_rss_bytes,
        "nodes": list(stats.nodes),
        "exit_ambiguous": "; ".join(ambiguous) or None,
        "exit_source": None if stats.exit_source is None else stats.exit_source.value,
        "confirmed_by": None if stats.confirmed_by is None else stats.confirmed_by.value,
        "finished_at_approx": stats.finished_at_approx,
        "restarts": restarts,
    }


def item_record(item: RunItem) -> dict[str, Any]:
    """One job or array task."""
    stats = item.stats
    derived = stats.derived_exit
    record: dict[str, Any] = {
        "item_id": item.id,
        "index": item.array_index,
        "native_id": item.native_id,
        "name": item.name,
        "state": item.state.value,
        **_exit_fields(stats.exit),
        "derived_exit_code": None if derived is None else derived.code,
        "derived_signal": None if derived is None else derived.signal,
        "reason": _reason(stats.reason),
        "confirmed": item.confirmed,
        "markers": [{"code": m.code, "text": m.text} for m in item.markers],
        "submitted_at": iso(stats.submitted_at),
        "started_at": iso(stats.started_at),
        "finished_at": iso(stats.finished_at),
        "stats": _stats(stats, item.restarts),
    }
    return record


def is_array(run: Run) -> bool:
    return len(run.items) > 1 or any(item.array_index is not None for item in run.items)


def _earliest(values: list[datetime | None]) -> datetime | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _latest(values: list[datetime | None]) -> datetime | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def run_record(run: Run) -> dict[str, Any]:
    """The record of a run: the item's fields for a single job, a summary plus
    ``items`` for an array."""
    counts = Counter(item.state.value for item in run.items)
    head: dict[str, Any] = {"schema": RECORD_SCHEMA, "id": run.id, "backend": run.backend}
    if not is_array(run) and run.items:
        fields = item_record(run.items[0])
        del fields["index"]
        fields["name"] = fields["name"] or run.name
        return {**head, **fields, "counts": dict(counts)}
    items = sorted(run.items, key=lambda i: (i.array_index is None, i.array_index or 0, i.id))
    all_done = bool(items) and all(item.state in TERMINAL for item in items)
    native_ids = {i.native_id for i in items}
    return {
        **head,
        "item_id": None,
        "native_id": None if len(native_ids) != 1 else native_ids.pop(),
        "name": run.name,
        "state": run.status.value,
        **_exit_fields(None),
        "derived_exit_code": None,
        "derived_signal": None,
        "reason": None,
        "confirmed": run.confirmed,
        "markers": [],
        "submitted_at": iso(_earliest([i.stats.submitted_at for i in items])),
        "started_at": iso(_earliest([i.stats.started_at for i in items])),
        "finished_at": iso(_latest([i.stats.finished_at for i in items])) if all_done else None,
        "stats": _stats(JobStats(), 0),
        "counts": dict(counts),
        "items": [item_record(item) for item in items],
    }


#: Every state name a record may carry (for the JSON Schema test).
STATE_NAMES: Final = tuple(state.value for state in State)
