"""Text for people: verdict lines, the status view, tables. Pure (strings out).

Text that comes from elsewhere (job names, scheduler messages, markers) goes through
:func:`printable` before it reaches a terminal: a job name must not be able to move the
cursor, clear the screen or start a new line that looks like ours.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import attrs

from hpcstate import TERMINAL, Run, RunItem, State
from hpcstate.backend import BackendInfo, Capabilities

from ._record import is_array, iso

# C0 and C1 controls, DEL, the line/paragraph separators and the bidirectional
# overrides and isolates (which reorder what follows them on screen).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNPRINTABLE_BUT_NEWLINE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as an escape (``\\n``,
    ``\\x1b``, ``\\u202e``); printable text, accents included, is unchanged."""
    pattern = _UNPRINTABLE_BUT_NEWLINE if keep_newlines else _UNPRINTABLE
    return pattern.sub(_escape, text)


# The order in which counts are shown: where things are going, left to right (the
# State enum is declared in that order).
_ORDER = tuple(State)


def confirmation(item: RunItem) -> str:
    if item.state not in TERMINAL:
        return "no verdict yet"
    if item.state is State.GONE:
        return "outcome unknown"
    if item.confirmed:
        return f"confirmed by {item.stats.confirmed_by}"
    return "NOT confirmed"


def exit_text(item: RunItem) -> str:
    exit = item.stats.exit
    if exit is None:
        return "no exit status"
    text = exit.describe().split(" [ambiguous:", 1)[0]
    if exit.ambiguous:
        text += " (ambiguous)"
    return text


def item_line(item: RunItem, *, label: str) -> str:
    """``r-1 failed: exit 3 (confirmed by process)``; ``r-1 running`` before a verdict."""
    if item.state not in TERMINAL:
        return f"{label} {item.state}"
    return f"{label} {item.state}: {exit_text(item)} ({confirmation(item)})"


def counts_text(states: Sequence[State]) -> str:
    counts = Counter(states)
    return ", ".join(f"{counts[s]} {s}" for s in _ORDER if counts[s])


def _final_line(item: RunItem, *, label: str) -> str:
    line = item_line(item, label=label)
    return line if item.state in TERMINAL else f"{line} (no verdict yet)"


def verdict_lines(run: Run) -> list[str]:
    """The end-of-watch summary of a run (what the README shows)."""
    if not is_array(run) and run.items:
        item = run.items[0]
        lines = [_final_line(item, label=run.id)]
        lines.extend(f"  {m.code}: {printable(m.text)}" for m in item.markers)
        return lines
    lines = [f"{run.id} {run.status}: {counts_text([i.state for i in run.items])}"]
    for item in sorted(run.items, key=lambda i: (i.array_index or 0, i.id)):
        label = f"  [{item.array_index}]" if item.array_index is not None else f"  {item.id}"
        lines.append(_final_line(item, label=label))
        lines.extend(f"      {m.code}: {printable(m.text)}" for m in item.markers)
    return lines


def _time(value: datetime | None) -> str:
    return iso(value) or "-"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} s" if value < 1 else f"{value:.1f} s"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _item_block(item: RunItem) -> list[str]:
    stats = item.stats
    rows = [
        ("native id", item.native_id or "-"),
        ("state", f"{item.state} ({confirmation(item)})"),
        ("exit", exit_text(item)),
    ]
    if stats.exit is not None and stats.exit.ambiguous:
        rows.append(("ambiguous", stats.exit.ambiguous))
    if stats.derived_exit is not None:
        rows.append(("derived exit", stats.derived_exit.describe()))
    if stats.reason is not None and stats.reason.text:
        rows.append(("reason", stats.reason.describe()))
    rows += [
        ("submitted", _time(stats.submitted_at)),
        ("started", _time(stats.started_at)),
        ("finished", _time(stats.finished_at) + (" (approx.)" if stats.finished_at_approx else "")),
        ("elapsed", _seconds(stats.elapsed_s)),
    ]
    if stats.cpu_time_s is not None:
        rows.append(("cpu time", _seconds(stats.cpu_time_s)))
    if stats.max_rss_bytes is not None:
        rows.append(("max rss", _bytes(stats.max_rss_bytes)))
    if stats.nodes:
        rows.append(("nodes", ",".join(stats.nodes)))
    if item.restarts:
        rows.append(("restarts", str(item.restarts)))
    rows.extend(("marker", f"{m.code}: {m.text}") for m in item.markers)
    return [f"{key:<12} {printable(value)}" for key, value in rows]


def status_text(run: Run) -> str:
    lines = [f"{'run':<12} {run.id}", f"{'backend':<12} {run.backend}"]
    if run.name:
        lines.append(f"{'name':<12} {printable(run.name)}")
    if not is_array(run) and run.items:
        lines.extend(_item_block(run.items[0]))
        return "\n".join(lines)
    lines.append(f"{'state':<12} {run.status} ({counts_text([i.state for i in run.items])})")
    for item in sorted(run.items, key=lambda i: (i.array_index or 0, i.id)):
        lines.append("")
        lines.append(f"[{item.array_index}]" if item.array_index is not None else item.id)
        lines.extend("  " + line for line in _item_block(item))
    return "\n".join(lines)


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Left-aligned columns; the last one is not padded. Cells are made printable."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [header, *rows]:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def capability_names(capabilities: Capabilities) -> list[str]:
    """The capabilities a backend declares (the true ones), by field name."""
    return [f.name for f in attrs.fields(Capabilities) if getattr(capabilities, f.name) is True]


def backend_line(info: BackendInfo) -> list[str]:
    return [
        info.name,
        info.version,
        f"v{info.api_version}",
        ",".join(capability_names(info.capabilities)) or "-",
    ]
