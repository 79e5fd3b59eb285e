"""`hpcstate fleet`: who polls each backend for the processes sharing the store (issue 16).

The figures come from the store's lease rows (one per backend, see
docs/concepts/fleet.md): the holder, since when it holds the lease, until when, its last
poll and the scheduler calls it made under this generation. Three forms: a table, JSON
(one object per lease) and the Prometheus text exposition format (version 0.0.4), which
a node exporter's textfile collector or any scraper reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

from hpcstate.runtime import Lease
from hpcstate.serial import format_utc

#: (name, type, help) of each metric, in the order printed.
METRICS: Final = (
    (
        "hpcstate_lease_held",
        "gauge",
        "1 while a live process holds the backend's poll lease, else 0 (released or expired).",
    ),
    (
        "hpcstate_lease_generation",
        "gauge",
        "How many times the backend's poll lease has been taken (grows by one at each takeover).",
    ),
    (
        "hpcstate_lease_since_timestamp_seconds",
        "gauge",
        "When the current holder took the lease (Unix time).",
    ),
    (
        "hpcstate_lease_expires_timestamp_seconds",
        "gauge",
        "When the lease expires unless its holder renews it (Unix time).",
    ),
    (
        "hpcstate_lease_last_poll_timestamp_seconds",
        "gauge",
        "When the holder last polled the scheduler (Unix time; absent before its first poll).",
    ),
    (
        "hpcstate_lease_scheduler_calls_total",
        "counter",
        "Scheduler calls the holder made under this generation of the lease "
        "(starts again from 0 when the lease changes hands).",
    ),
)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else format_utc(at)


def lease_doc(lease: Lease, now: datetime) -> dict[str, Any]:
    """One lease as the JSON object `hpcstate fleet --json` prints."""
    return {
        "schema": 1,
        "backend": lease.backend,
        "holder": lease.holder,
        "live": lease.live(now),
        "released": lease.released,
        "generation": lease.generation,
        "since": _iso(lease.since),
        "renewed_at": _iso(lease.renewed_at),
        "expires_at": _iso(lease.expires_at),
        "last_poll_at": _iso(lease.last_poll_at),
        "scheduler_calls": lease.scheduler_calls,
        "held_for_s": round((now - lease.since).total_seconds(), 3),
    }


def lease_rows(leases: Sequence[Lease], now: datetime) -> list[list[str]]:
    """Table rows: BACKEND HOLDER STATE SINCE LAST POLL CALLS."""
    rows = []
    for lease in leases:
        if lease.released:
            state = "released"
        elif lease.live(now):
            state = f"held (gen {lease.generation})"
        else:
            state = "expired"
        last = "-" if lease.last_poll_at is None else _ago(now, lease.last_poll_at)
        rows.append(
            [
                lease.backend,
                lease.holder,
                state,
                _iso(lease.since) or "-",
                last,
                str(lease.scheduler_calls),
            ]
        )
    return rows


def _ago(now: datetime, at: datetime) -> str:
    seconds = max(0.0, (now - at).total_seconds())
    return f"{seconds:.1f}s ago"


def _label(value: str) -> str:
    """A label value as the text format writes it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def prometheus_text(leases: Iterable[Lease], now: datetime) -> str:
    """The leases as metrics in the Prometheus text exposition format (0.0.4): a HELP
    and a TYPE line per metric, then one sample per backend, labelled with the
    backend and the holder."""
    leases = list(leases)
    values: dict[str, list[tuple[Lease, float]]] = {name: [] for name, _, _ in METRICS}
    for lease in leases:
        values["hpcstate_lease_held"].append((lease, 1.0 if lease.live(now) else 0.0))
        values["hpcstate_lease_generation"].append((lease, float(lease.generation)))
        values["hpcstate_lease_since_timestamp_seconds"].append((lease, lease.since.timestamp()))
        values["hpcstate_lease_expires_timestamp_seconds"].append(
            (lease, lease.expires_at.timestamp())
        )
        if lease.last_poll_at is not None:
            values["hpcstate_lease_last_poll_timestamp_seconds"].append(
                (lease, lease.last_poll_at.timestamp())
            )
        values["hpcstate_lease_scheduler_calls_total"].append((lease, float(lease.scheduler_calls)))
    lines = []
    for name, kind, text in METRICS:
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for lease, value in values[name]:
            labels = f'backend="{_label(lease.backend)}",holder="{_label(lease.holder)}"'
            lines.append(f"{name}{{{labels}}} {_number(value)}")
    return "\n".join(lines) + "\n"
