"""Backend lookup through the ``hpcstate.backends`` entry-point group.

The bundled backends register exactly like a third party's. Only the requested name
is resolved, lazily; nothing is scanned at import time.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from ._errors import BackendNotFound, IncompatibleBackend
from .backend import (
    ABILITY_METHODS,
    API_VERSION,
    Backend,
    BackendConfig,
    BackendInfo,
    check_abilities,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

GROUP: Final = "hpcstate.backends"

#: What to install for names hpcstate knows about, when they are missing.
_HINTS: Final = {
    "slurm": "pip install 'hpcstate[slurm]'",
    "flux": "pip install 'hpcstate[flux]'",
    "k8s": "pip install 'hpcstate[k8s]'",
    "kubernetes": "pip install 'hpcstate[k8s]'",
    "pbs": "pip install hpcstate-pbs",
}

#: The project's own backends: each its own distribution, pulled in by the extra of its
#: name; listed (with the command that installs it) even where it is not installed.
FIRST_PARTY: Final = ("slurm", "flux", "k8s")


def is_known(name: str) -> bool:
    """Whether hpcstate knows the command that installs backend ``name``."""
    return name in _HINTS


def install_hint(name: str) -> str:
    """The command that installs backend ``name`` (its extra, for the project's own)."""
    return _hint(name)


# name -> "module:attr", registered at run time (tests, embedded use).
_registered: dict[str, str] = {}


def register(name: str, target: str) -> None:
    """Register ``module:attr`` as backend ``name`` (takes precedence over entry points)."""
    if ":" not in target:
        raise ValueError(f"target must look like 'module:attr', got {target!r}")
    _registered[name] = target


def unregister(name: str) -> None:
    _registered.pop(name, None)


def _entry_points(name: str | None = None) -> list[EntryPoint]:
    # importlib.metadata imports email -> socket; load it only when a lookup happens.
    from importlib.metadata import entry_points

    found = entry_points(group=GROUP)
    return [ep for ep in found if name is None or ep.name == name]


def _entry_point(name: str) -> EntryPoint | None:
    found = _entry_points(name=name)
    for ep in found:
        return ep
    return None


def _resolve(target: str) -> object:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj: object = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _hint(name: str) -> str:
    return _HINTS.get(name, f"pip install hpcstate-{name}")


def load(name: str) -> BackendInfo:
    """The BackendInfo of backend ``name``.

    Raises BackendNotFound (with the pip command to run) when it is not installed or its
    dependencies are missing, and IncompatibleBackend when it targets another API version.
    """
    target = _registered.get(name)
    try:
        if target is not None:
            info = _resolve(target)
        else:
            ep = _entry_point(name)
            if ep is None:
                known = ", ".join(sorted(available())) or "none"
                raise BackendNotFound(
                    f"no hpcstate backend named {name!r} is installed (installed: {known}); "
                    f"to add it: {_hint(name)}"
                )
            info = ep.load()
    except (ImportError, AttributeError) as exc:
        raise BackendNotFound(
            f"backend {name!r} is registered but cannot be imported ({exc}); "
            f"to fix it: {_hint(name)}"
        ) from exc
    if not isinstance(info, BackendInfo):
        raise BackendNotFound(
            f"backend {name!r} entry point does not name a hpcstate.backend.BackendInfo "
            f"(got {type(info).__name__})"
        )
    if info.api_version != API_VERSION:
        raise IncompatibleBackend(
            f"backend {name!r} {info.version} implements backend API v{info.api_version}, "
            f"this hpcstate speaks v{API_VERSION}; install a version of the plugin made for "
            f"API v{API_VERSION}"
        )
    missing = [m for m in info.requires if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        hint = info.install_hint or _hint(name)
        raise BackendNotFound(
            f"backend {name!r} needs {', '.join(missing)}, which is not installed; "
            f"to add it: {hint}"
        )
    return info


def make_backend(config: BackendConfig, info: BackendInfo | None = None) -> Backend:
    """A backend made as ``config`` says, by its plugin (``info``, else ``load(config.kind)``).

    The abilities the plugin declares (its BackendInfo's capabilities, and the made
    backend's own) are checked on what it made: a flag declared without its methods raises
    :class:`~hpcstate.backend.BackendContractError` naming backend, flag and method.
    """
    if info is None:
        info = load(config.kind)
    made = info.make_backend(config)
    check_abilities(config.name, info.capabilities, made, plugin=info.name)
    check_abilities(config.name, made.capabilities, made, plugin=info.name)
    _warn_undeclared(config.name, info, made)
    return made


def undeclared_abilities(backend: Backend) -> list[str]:
    """The ability flags ``backend`` leaves off although it has all of their methods
    (a CommandBackend has read_text_files and read_output, for one)."""
    return [
        flag
        for flag, methods in ABILITY_METHODS.items()
        if not getattr(backend.capabilities, flag)
        and all(callable(getattr(backend, method, None)) for method in methods)
    ]


def _warn_undeclared(name: str, info: BackendInfo, made: Backend) -> None:
    # hpcstate uses only declared abilities (it once probed for the methods): a plugin
    # written against the probing would silently lose output checks or report files.
    flags = undeclared_abilities(made)
    if flags:
        log.warning(
            "backend %r (plugin %r) has the methods of %s but does not declare %s in its "
            "Capabilities, so hpcstate does not use them (declare %s)",
            name,
            info.name,
            ", ".join(flags),
            "them" if len(flags) > 1 else "it",
            ", ".join(f"{flag}=True" for flag in flags),
        )


def available() -> list[str]:
    """Names of the installed backends (entry points and run-time registrations)."""
    names = {ep.name for ep in _entry_points()}
    names.update(_registered)
    return sorted(names)


def iter_backends() -> Iterator[tuple[str, BackendInfo | BackendNotFound]]:
    """Every installed backend with its info, or the error that loading it raised."""
    for name in available():
        yield name, _load_or_error(name)


def _load_or_error(name: str) -> BackendInfo | BackendNotFound:
    try:
        return load(name)
    except BackendNotFound as exc:
        return exc
