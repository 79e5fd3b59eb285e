"""Portable resource requests (``submit -t/-n/-N/-c/-G/--mem``) and which backend kinds
can express each. Pure.

The same submit line moves between Slurm and Flux; where a backend has no way to say a
resource, the submission is refused up front with the backend named (``--extra-arg``
stays the raw escape hatch). Kinds not listed here (third-party backends) get every
request and decide themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

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
_ALL: Final = frozenset(OPTIONS)
#: What each bundled kind maps (JobSpec fields; "gpus" goes in JobSpec.options).
SUPPORTED: Final[Mapping[str, frozenset[str]]] = {
    "slurm": _ALL,
    "flux": frozenset({"time_limit", "cpus", "tasks", "nodes"}),
    "k8s": frozenset({"time_limit", "memory_bytes", "cpus"}),
    "local": frozenset({"time_limit"}),
}
# Asking for one of these is what every backend gives anyway.
_ONE_IS_ENOUGH: Final = frozenset({"cpus", "tasks", "nodes"})
_GPUS: Final = re.compile(r"\A(?:[A-Za-z0-9_.-]+:)?[1-9][0-9]{0,5}\Z")


def parse_gpus(text: str) -> str:
    """``2`` or ``TYPE:2`` (as ``sbatch --gpus``)."""
    if not _GPUS.match(text.strip()):
        raise ValueError(f"expected a number of GPUs such as 2 or a100:2, got {text!r}")
    return text.strip()


def check_supported(kind: str, backend: str, requested: Mapping[str, object]) -> None:
    """Refuse a resource the backend's kind cannot express (UsageError naming both)."""
    supported = SUPPORTED.get(kind)
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
