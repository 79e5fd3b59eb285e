"""The tracker's backends: those it was given, and those it makes on first use.

A Backend object is checked against its declared abilities when it is added (a
declared ability without its methods is refused before anything opens); a
BackendConfig, or a name that has neither, is made through the registry
(``hpcstate.registry.make_backend``, which checks what the plugin declares) the first
time it is asked for, then kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from hpcstate import registry
from hpcstate.backend import Backend, BackendConfig, check_abilities

__all__ = ["BackendSet"]


class BackendSet:
    """Backends by name; :meth:`get` makes a missing one from its config (or from its
    name as the kind). Raises on a Backend that breaks its declaration."""

    def __init__(self, backends: Mapping[str, Backend | BackendConfig] | None = None) -> None:
        self._made: dict[str, Backend] = {}
        self._configs: dict[str, BackendConfig] = {}
        given = dict(backends or {})
        for name, value in given.items():
            if not isinstance(value, BackendConfig):
                # A declared ability without its methods is refused before anything opens.
                check_abilities(name, value.capabilities, value)
        for name, value in given.items():
            if isinstance(value, BackendConfig):
                self._configs[name] = value
            else:
                self._made[name] = value

    def add(self, name: str, backend: Backend | BackendConfig) -> None:
        """Add (or replace) ``name``: a config is made on first use."""
        if isinstance(backend, BackendConfig):
            self._configs[name] = backend
        else:
            # A declared ability without its methods is refused here, not at first use.
            check_abilities(name, backend.capabilities, backend)
            self._made[name] = backend

    def get(self, name: str) -> Backend:
        """The backend called ``name``, created on first use. Raises BackendNotFound."""
        found = self._made.get(name)
        if found is not None:
            return found
        config = self._configs.get(name) or BackendConfig(name=name, kind=name)
        made = registry.make_backend(config)  # checks what the plugin declares
        self._made[name] = made
        return made

    async def close(self) -> None:
        """Close every backend made or given (errors ignored: the tracker is closing)."""
        for backend in self._made.values():
            with contextlib.suppress(Exception):
                await backend.close()
