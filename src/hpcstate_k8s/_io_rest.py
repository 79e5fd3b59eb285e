"""The REST client: sends ``_commands.Request`` records, maps HTTP answers to hpcstate's
errors. No decisions: what to ask is ``_commands``', how an answer reads is ``_parse``'s."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2

from hpcstate import (
    BackendError,
    CommandFailed,
    ParseError,
    SchedulerUnavailable,
    TransportError,
)

from ._commands import Request, next_page
from ._parse import decode_json, parse_list, parse_watch_event, status_message


class Expired(Exception):
    """410 Gone: the resourceVersion is too old; LIST again."""


class StreamBroken(Exception):
    """The watch stream ended badly (dropped, undecodable, an ERROR event)."""


class Conflict(Exception):
    """409: the object already exists."""


class Forbidden(BackendError):
    """403: the credentials work but RBAC does not allow this call."""


class KubeApi:
    """The handful of REST calls hpcstate makes, with errors mapped to hpcstate's."""

    def __init__(self, http: httpx2.AsyncClient, *, request_timeout_s: float) -> None:
        self._http = http
        self._request_timeout_s = request_timeout_s

    async def close(self) -> None:
        await self._http.aclose()

    def _check(self, response: httpx2.Response, request: Request) -> None:
        code = response.status_code
        if code < 300:
            return
        message = status_message(response.content)
        where = request.where
        if code == 409:
            raise Conflict(message)
        if code == 410:
            raise Expired(message)
        if code == 429 or code >= 500:
            raise SchedulerUnavailable(f"{where}: HTTP {code}: {message}")
        if code in (401, 403):
            error = Forbidden if code == 403 else BackendError
            raise error(
                f"{where}: HTTP {code}: {message} (check the kubeconfig's credentials and "
                "RBAC: hpcstate needs create/get/list/watch/delete on jobs and "
                "get/list/watch on pods)"
            )
        raise CommandFailed((request.method, f"/{request.path}"), code, message)

    async def _send(self, request: Request) -> httpx2.Response:
        try:
            return await self._http.request(
                request.method,
                request.path,
                params=dict(request.params) or None,
                json=request.body,
            )
        except httpx2.TransportError as error:
            raise TransportError(f"{request.where}: {type(error).__name__}: {error}") from error

    async def _json(self, response: httpx2.Response, where: str) -> dict[str, Any]:
        try:
            body = decode_json(response.content, what=where)
        except ParseError as error:
            raise SchedulerUnavailable(
                f"{where}: the API server sent no readable JSON: {error}"
            ) from None
        if not isinstance(body, dict):
            raise SchedulerUnavailable(f"{where}: the API server sent {type(body).__name__}")
        return body

    async def list(self, request: Request) -> tuple[list[Any], str]:
        """All objects (following ``continue``) and the list's resourceVersion."""
        items: list[Any] = []
        while True:
            response = await self._send(request)
            self._check(response, request)
            try:
                answer = parse_list(response.content, what=request.where)
            except ParseError as error:
                raise SchedulerUnavailable(
                    f"{request.where}: not a readable list: {error}"
                ) from None
            items.extend(answer.items)
            if not answer.continue_token:
                return items, answer.resource_version
            request = next_page(request, answer.continue_token)

    async def get(self, request: Request) -> dict[str, Any] | None:
        """The object (None: 404, it does not exist)."""
        response = await self._send(request)
        if response.status_code == 404:
            return None
        self._check(response, request)
        return await self._json(response, request.where)

    async def create(self, request: Request) -> dict[str, Any]:
        """The object as created. Raises Conflict (409) if it already exists."""
        response = await self._send(request)
        self._check(response, request)
        return await self._json(response, request.where)

    async def delete(self, request: Request) -> dict[str, Any] | None:
        """The object as the server left it (None if it did not exist)."""
        response = await self._send(request)
        if response.status_code == 404:
            return None
        self._check(response, request)
        return await self._json(response, request.where)

    async def watch(self, request: Request) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """One watch request: (type, object) pairs until the server ends the stream.

        Raises Expired on 410 (as a status or an ERROR event) and StreamBroken when the
        stream breaks; a clean end just stops the iteration.
        """
        timeout = httpx2.Timeout(self._request_timeout_s, read=request.read_timeout_s)
        try:
            async with self._http.stream(
                request.method, request.path, params=dict(request.params), timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    self._check(response, request)
                    raise StreamBroken(f"watch /{request.path}: HTTP {response.status_code}")
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    yield watch_event(line, request.path)
        except httpx2.TransportError as error:
            raise StreamBroken(f"watch /{request.path}: {type(error).__name__}: {error}") from error


def watch_event(line: str, path: str) -> tuple[str, dict[str, Any]]:
    """One stream line as the watch loop takes it: an event, or Expired / StreamBroken."""
    try:
        event = parse_watch_event(line, what=f"watch /{path}")
    except ParseError as error:
        raise StreamBroken(str(error)) from None
    if event.type == "ERROR":
        if event.code == 410:
            raise Expired(event.message or "resource version too old")
        raise StreamBroken(f"watch /{path}: ERROR event {event.code}: {event.message}")
    return event.type, event.object
