"""Portable resource requests (``submit -t/-n/-N/-c/-G/--mem``), refused up front when
the backend cannot express them.

The same submit line moves between Slurm and Flux; where a backend has no way to say a
resource, the submission is refused up front with the backend named (``--extra-arg``
stays the raw escape hatch). What each backend expresses is its own declaration
(``BackendInfo.resources``); a backend that declares nothing (None) gets every request
and decides itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from hpcstate import registry

from ._parser import UsageError

#: The option that asks for each resource (as sbatch spells it).
OPTIONS: Final[Mapping[str, str]] = {
    "time_limit": "-t/--time",
    "memory_bytes": "--mem",
    "cpus": "-c/--cpus-per-task",
    "tasks": "-n/--ntasks",
    "nodes": "-N/--nodes",
    "gpus": "-G/--gpus",
}
_WORDS: Final[Mapping[str, str]] = {
    "time_limit": "a time limit",
    "memory_bytes": "a memory size",
    "cpus": "CPUs per task",
    "tasks": "several tasks",
    "nodes": "several nodes",
    "gpus": "GPUs",
}
# Asking for one of these is what every backend gives anyway.
_ONE_IS_ENOUGH: Final = frozenset({"cpus", "tasks", "nodes"})
_GPUS: Final = re.compile(r"\A(?:[A-Za-z0-9_.-]+:)?[1-9][0-9]{0,5}\Z")


def parse_gpus(text: str) -> str:
    """``2`` or ``TYPE:2`` (as ``sbatch --gpus``)."""
    if not _GPUS.match(text.strip()):
        raise ValueError(f"expected a number of GPUs such as 2 or a100:2, got {text!r}")
    return text.strip()


def declared_resources(kind: str) -> frozenset[str] | None:
    """The requests plugin ``kind`` declares it expresses; None: it did not say, or it
    cannot be loaded (making the backend reports that, with the command that fixes it)."""
    try:
        return registry.load(kind).resources
    except Exception:
        return None


def check_supported(
    kind: str,
    backend: str,
    requested: Mapping[str, object],
    supported: frozenset[str] | None,
) -> None:
    """Refuse a resource outside ``supported`` (UsageError naming backend and kind)."""
    if supported is None:
        return
    for field, value in requested.items():
        if value is None or field in supported:
            continue
        if field in _ONE_IS_ENOUGH and value == 1:
            continue
        raise UsageError(
            f"{OPTIONS[field]}: backend {backend!r} ({kind}) cannot express {_WORDS[field]}; "
            "choose a backend that can, or pass its own flag with --extra-arg"
        )
