"""Array task specifications: ``1-10``, ``0,3,5-7``, ``1-9:2``, with a ``%N`` throttle."""

from __future__ import annotations

import re

from ._errors import ParseError

_PART = re.compile(r"\A([0-9]{1,9})(?:-([0-9]{1,9})(?::([0-9]{1,9}))?)?\Z")
MAX_TASKS = 1_000_000  # refuse to expand absurd specs into memory


def expand_array_spec(spec: str) -> tuple[int, ...]:
    """The task indexes of an array spec, sorted and unique. Raises ParseError."""
    text = spec.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    if not text:
        raise ParseError("empty array specification", field="array", line=spec)
    indexes: set[int] = set()
    for part in text.split(","):
        match = _PART.match(part.strip())
        if match is None:
            raise ParseError("bad array range (expected N, N-M or N-M:S)", field="array", line=spec)
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        stride = int(match.group(3)) if match.group(3) is not None else 1
        if last < first or stride < 1:
            raise ParseError("array range goes backwards or has stride 0", field="array", line=spec)
        if (last - first) // stride + 1 + len(indexes) > MAX_TASKS:
            raise ParseError(f"array has more than {MAX_TASKS} tasks", field="array", line=spec)
        indexes.update(range(first, last + 1, stride))
    return tuple(sorted(indexes))
