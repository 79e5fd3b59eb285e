"""Decoding the API server's answers: JSON bodies, LIST bodies and watch-stream lines.

Pure: no I/O. Each entry point returns a result or raises :class:`hpcstate.ParseError`
naming what was being read, whatever the bytes: malformed JSON, a value of the wrong
shape, and JSON nested deeper than Python's decoder can recurse (an answer nested 1,000
levels deep makes ``json.loads`` raise ``RecursionError``, which is not a ``ValueError``).
"""

from __future__ import annotations

import json
from typing import Any, Final

from attrs import frozen

from hpcstate import ParseError

#: Watch event types the API server sends (ERROR carries a Status object).
EVENT_TYPES: Final = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"})


def _shown(text: str | bytes) -> str:
    shown = text[:120]
    return shown.decode("utf-8", "replace") if isinstance(shown, bytes) else shown


def decode_json(text: str | bytes, *, what: str) -> Any:
    """One JSON document. Raises ParseError: bad JSON, or nested too deep to decode."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ParseError(
            "JSON nested too deep to decode", command=what, line=_shown(text)
        ) from None
    except ValueError as error:  # UnicodeDecodeError is a ValueError
        raise ParseError(f"not JSON: {error}", command=what, line=_shown(text)) from None


@frozen(kw_only=True)
class ListAnswer:
    """A LIST response: its items (plain JSON), resourceVersion and continue token."""

    items: tuple[Any, ...]
    resource_version: str
    continue_token: str


def parse_list(text: str | bytes, *, what: str = "LIST") -> ListAnswer:
    """A ``...List`` body. Raises ParseError."""
    body = decode_json(text, what=what)
    if not isinstance(body, dict):
        raise ParseError(f"expected a List object, got {type(body).__name__}", command=what)
    items, meta = body.get("items"), body.get("metadata")
    if items is None:
        items = []  # an empty list may be sent as "items": null
    if not isinstance(items, list) or not isinstance(meta, dict):
        raise ParseError("not a list response (items, metadata)", command=what)
    rv, token = meta.get("resourceVersion"), meta.get("continue")
    if rv is not None and not isinstance(rv, str):
        raise ParseError("metadata.resourceVersion is not a string", command=what, field="rv")
    if token is not None and not isinstance(token, str):
        raise ParseError("metadata.continue is not a string", command=what, field="continue")
    return ListAnswer(items=tuple(items), resource_version=rv or "", continue_token=token or "")


@frozen(kw_only=True)
class WatchEvent:
    """One line of a watch stream: ``type`` and ``object``. An ERROR event's object is a
    Status (``code`` says 410 for an expired resourceVersion)."""

    type: str
    object: dict[str, Any]

    @property
    def code(self) -> int | None:
        code = self.object.get("code")
        return code if isinstance(code, int) and not isinstance(code, bool) else None

    @property
    def message(self) -> str:
        message = self.object.get("message")
        return message if isinstance(message, str) else ""


def parse_watch_event(line: str | bytes, *, what: str = "watch") -> WatchEvent:
    """One watch-stream line. Raises ParseError."""
    event = decode_json(line, what=what)
    if not isinstance(event, dict):
        raise ParseError(
            f"a watch event must be an object, got {type(event).__name__}", command=what
        )
    kind, obj = event.get("type"), event.get("object")
    if not isinstance(kind, str) or not isinstance(obj, dict):
        raise ParseError("a watch event needs a type and an object", command=what)
    if kind not in EVENT_TYPES:
        raise ParseError(f"unknown watch event type {kind[:40]!r}", command=what, field="type")
    return WatchEvent(type=kind, object=obj)


def status_message(text: str | bytes) -> str:
    """The ``message`` of an error answer (a Status), else the start of the text."""
    try:
        body = decode_json(text, what="error answer")
    except ParseError:
        return _shown(text)
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else _shown(text)
