"""Reading the values people type: durations, memory sizes, K=V, run references.

Pure. Every function returns a value or raises ValueError with a message that says
what was expected; the CLI turns it into a usage error naming the option.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final

from attrs import frozen

from hpcstate.config import parse_duration as parse_duration

_MEMORY: Final = re.compile(r"\A([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?)(i?b)?\Z")
_MAX_MEMORY: Final = 2**60  # 1024 PiB: more than any node has, and fits an int64
_POWERS: Final = {"": 2**20, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}


def parse_memory(text: str) -> int:
    """Bytes from ``512M``, ``4G``, ``1.5GiB``, ``4096`` (a bare number is MiB, as sbatch).

    Units are binary (K = 1024), as the schedulers read them.
    """
    match = _MEMORY.match(text.strip().lower())
    if match is None:
        raise ValueError(f"cannot read memory size {text!r}: expected e.g. 512M, 4G, 1.5GiB")
    number, unit, suffix = match.groups()
    value = float(number)
    if not value < _MAX_MEMORY:  # also inf, from a number of 309 digits or more
        raise ValueError(f"memory size {text[:40]!r} is too large")
    if suffix == "b" and not unit:
        return int(value)  # "100b": bytes
    size = int(value * _POWERS[unit])
    if size > _MAX_MEMORY:
        raise ValueError(f"memory size {text!r} is too large (at most 1024 PiB)")
    if size <= 0:
        raise ValueError(f"memory size {text!r} must be more than 0")
    return size


_ENV_NAME: Final = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_env_assignment(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` (VALUE may be empty and may contain ``=``)."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    if not _ENV_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid environment variable name (in {text!r})")
    return name, value


@frozen(kw_only=True)
class RunRef:
    """What a user named: a run id, or a job by its backend and native id."""

    text: str
    run_id: str | None = None
    backend: str | None = None
    native_id: str | None = None

    @property
    def is_native(self) -> bool:
        return self.backend is not None


def parse_run_ref(text: str, backends: Collection[str]) -> RunRef:
    """``RUN_ID`` or ``BACKEND:NATIVE_ID`` (BACKEND one of ``backends``)."""
    value = text.strip()
    if not value:
        raise ValueError("expected a run id or BACKEND:NATIVE_ID, got an empty string")
    backend, sep, native = value.partition(":")
    if sep and backend in backends:
        if not native:
            raise ValueError(f"{text!r} names backend {backend!r} but no native id after ':'")
        return RunRef(text=value, backend=backend, native_id=native)
    return RunRef(text=value, run_id=value)


def parse_native_ref(text: str, backends: Collection[str]) -> tuple[str, str]:
    """``BACKEND:NATIVE_ID`` only (what ``track`` adopts): (backend, native id)."""
    backend, sep, native = text.strip().partition(":")
    if not sep or not backend or not native:
        raise ValueError(f"expected BACKEND:NATIVE_ID (e.g. slurm:12345), got {text!r}")
    if backend not in backends:
        raise ValueError(
            f"{backend!r} is not a configured backend (configured: {', '.join(sorted(backends))})"
        )
    return backend, native
