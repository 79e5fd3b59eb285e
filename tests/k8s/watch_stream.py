"""Writing a watch response as the API server does, for both test servers.

The fake API server (fake_apiserver.py) and the replay of a recording
(replay_server.py) decide differently what to send; how it is sent is this module's:
a 200 response of JSON lines, one compact ``{"type":...,"object":...}`` per event (as
the real server writes them, and as the 1.36 recordings hold them), the backlog first,
then whatever the server's queue brings, until ``timeoutSeconds`` (default an hour) has
passed, the server ends the stream cleanly, or drops the connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")

DROP: Any = object()  # put on a watch's queue: abort the connection (a broken stream)


def watch_line(event_type: str, obj: Mapping[str, Any]) -> str:
    """One event of a watch stream, without its newline."""
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":"))


async def serve_watch(
    request: web.Request,
    backlog: Iterable[str],
    queue: asyncio.Queue[T] | None,
    lines: Callable[[T], Sequence[str] | None],
    *,
    on_close: Callable[[], None] = lambda: None,
) -> web.StreamResponse:
    """Stream ``backlog`` (event lines), then ``lines(item)`` for each item the queue
    brings: ``None`` ends the stream cleanly, :data:`DROP` aborts the connection. With
    no queue the stream ends after the backlog. ``on_close`` runs however it ended."""
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(request.query.get("timeoutSeconds") or 3600)
    try:
        await response.prepare(request)
        batch: Sequence[str] | None = list(backlog)
        while batch is not None:
            if batch:
                await response.write("".join(line + "\n" for line in batch).encode())
            remaining = deadline - loop.time()
            if queue is None or remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            if item is DROP:
                if request.transport is not None:
                    request.transport.abort()
                return response
            batch = lines(item)
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        on_close()
    return response
