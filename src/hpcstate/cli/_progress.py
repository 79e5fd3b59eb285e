"""Progress while watching: one redrawn line on a terminal, plain lines otherwise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TextIO

from hpcstate import TERMINAL, State

from ._human import counts_text

_CLEAR_LINE = "\r\x1b[K"


def progress_line(states: Mapping[str, State], *, runs: int, elapsed_s: float) -> str:
    """``watching 12 runs (40 jobs), 1m05s: 3 queued, 5 running, 32 completed`` (pure)."""
    done = sum(1 for s in states.values() if s in TERMINAL)
    minutes, seconds = divmod(int(elapsed_s), 60)
    jobs = f" ({len(states)} jobs)" if len(states) != runs else ""
    noun = "run" if runs == 1 else "runs"
    return (
        f"watching {runs} {noun}{jobs}, {minutes}m{seconds:02d}s: "
        f"{counts_text(list(states.values()))} [{done}/{len(states)} done]"
    )


class Progress:
    """Shows where the watched jobs are.

    On a terminal, a single status line is redrawn in place and permanent lines (a
    verdict) are printed above it. Anywhere else (a pipe, a CI log), each change is one
    plain line and nothing is redrawn.
    """

    def __init__(self, stream: TextIO, *, tty: bool, runs: int, enabled: bool = True) -> None:
        self.stream = stream
        self.tty = tty
        self.runs = runs
        self.enabled = enabled
        self._shown = False

    def status(self, states: Mapping[str, State], *, elapsed_s: float) -> None:
        if not (self.enabled and self.tty):
            return
        line = progress_line(states, runs=self.runs, elapsed_s=elapsed_s)
        self.stream.write(_CLEAR_LINE + line)
        self.stream.flush()
        self._shown = True

    def line(self, text: str) -> None:
        """A permanent line (a change, a verdict)."""
        if not self.enabled:
            return
        if self._shown:
            self.stream.write(_CLEAR_LINE)
            self._shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._shown:
            self.stream.write(_CLEAR_LINE)
            self.stream.flush()
            self._shown = False
