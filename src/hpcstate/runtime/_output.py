"""Output-based termination checks: what a job's output says about how it is doing.

A check is pure: it gets the end of the output and the time, and returns an
observation (``Source.OUTPUT_CHECK``, never final) or None. A success marker only
settles an item (the scheduler or process still has to confirm); an error pattern or
an output stall is a failure verdict, and the tracker cancels the job.

Checks are configured per run. The three built-ins are stored with the run (as
``{"kind": ..., ...}`` documents), so they survive a tracker restart; a custom check
(any object with ``name`` and ``check``) lives as long as the tracker that got it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from attrs import field, frozen

from hpcstate import ConfigError, Observation, Source, State
from hpcstate.backend import OutputSnapshot as OutputSnapshot  # it lives in the core


@runtime_checkable
class OutputCheck(Protocol):
    """A pluggable check on a running job's output."""

    @property
    def name(self) -> str:
        """Shown in logs and markers."""
        ...

    def check(
        self, output: OutputSnapshot, *, native_id: str, now: datetime
    ) -> Observation | None: ...


def _observation(native_id: str, now: datetime, state: State, detail: str) -> Observation:
    return Observation(
        native_id=native_id, source=Source.OUTPUT_CHECK, observed_at=now, state=state, detail=detail
    )


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{what}: {pattern!r} is not a valid regular expression: {exc}") from exc


def _patterns(value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@frozen(kw_only=True)
class SuccessMarker:
    """The job printed ``pattern`` (a regular expression) in its last ``last_lines``
    lines: it considers itself done; the item settles until its end is confirmed."""

    pattern: str
    last_lines: int = 50
    name: str = "success_marker"
    _regex: re.Pattern[str] = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_regex", _compile(self.pattern, "success marker"))

    def check(self, output: OutputSnapshot, *, native_id: str, now: datetime) -> Observation | None:
        for line in output.tail[-self.last_lines :]:
            if self._regex.search(line):
                return _observation(
                    native_id, now, State.COMPLETED, f"success marker printed: {line.strip()[:200]}"
                )
        return None


@frozen(kw_only=True)
class ErrorPattern:
    """One of ``patterns`` (regular expressions) appears in the last ``last_lines``
    lines: the job failed (e.g. ``Traceback``, ``NaN loss``, ``CUDA error``)."""

    patterns: tuple[str, ...] = field(converter=_patterns)
    last_lines: int = 50
    name: str = "error_pattern"
    _regexes: tuple[re.Pattern[str], ...] = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.patterns:
            raise ConfigError("error pattern check: give at least one pattern")
        compiled = tuple(_compile(p, "error pattern") for p in self.patterns)
        object.__setattr__(self, "_regexes", compiled)

    def check(self, output: OutputSnapshot, *, native_id: str, now: datetime) -> Observation | None:
        for line in output.tail[-self.last_lines :]:
            for regex in self._regexes:
                if regex.search(line):
                    return _observation(
                        native_id,
                        now,
                        State.FAILED,
                        f"error pattern {regex.pattern!r} in output: {line.strip()[:200]}",
                    )
        return None


@frozen(kw_only=True)
class OutputStall:
    """No new output for longer than ``limit_s`` seconds: the job hangs."""

    limit_s: float
    name: str = "output_stall"

    def __attrs_post_init__(self) -> None:
        if self.limit_s <= 0:
            raise ConfigError(f"output stall check: limit_s must be > 0, got {self.limit_s!r}")

    def check(self, output: OutputSnapshot, *, native_id: str, now: datetime) -> Observation | None:
        if output.last_output_at is None:
            return None
        silent = (now - output.last_output_at).total_seconds()
        if silent > self.limit_s:
            return _observation(
                native_id,
                now,
                State.FAILED,
                f"no output for {silent:.0f} s (limit {self.limit_s:g} s)",
            )
        return None


# -- storing the built-ins with a run --------------------------------------------------


def check_to_dict(check: OutputCheck) -> dict[str, Any] | None:
    """A document for a built-in check; None for a custom one (not persisted)."""
    if isinstance(check, SuccessMarker):
        return {"kind": "success_marker", "pattern": check.pattern, "last_lines": check.last_lines}
    if isinstance(check, ErrorPattern):
        return {
            "kind": "error_pattern",
            "patterns": list(check.patterns),
            "last_lines": check.last_lines,
        }
    if isinstance(check, OutputStall):
        return {"kind": "output_stall", "limit_s": check.limit_s}
    return None


def check_from_dict(doc: Mapping[str, Any]) -> OutputCheck:
    """Raises ConfigError naming what is wrong."""
    kind = doc.get("kind")
    try:
        if kind == "success_marker":
            return SuccessMarker(
                pattern=str(doc["pattern"]), last_lines=int(doc.get("last_lines", 50))
            )
        if kind == "error_pattern":
            return ErrorPattern(
                patterns=tuple(str(p) for p in doc["patterns"]),
                last_lines=int(doc.get("last_lines", 50)),
            )
        if kind == "output_stall":
            return OutputStall(limit_s=float(doc["limit_s"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"output check {dict(doc)!r}: {exc}") from exc
    raise ConfigError(
        f"unknown output check kind {kind!r} (known: success_marker, error_pattern, output_stall)"
    )
