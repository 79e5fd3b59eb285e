"""Backend infos used by the registry tests (registered at run time, like a plugin)."""

from __future__ import annotations

from hpcstate.backend import API_VERSION, BackendConfig, BackendInfo, Capabilities


def _make(config: BackendConfig) -> object:
    raise NotImplementedError("the registry tests never build this backend")


GOOD = BackendInfo(
    name="good",
    api_version=API_VERSION,
    version="1.0",
    description="a plugin",
    capabilities=Capabilities(),
    make_backend=_make,  # type: ignore[arg-type]
)
FUTURE = BackendInfo(
    name="future",
    api_version=API_VERSION + 1,
    version="9.0",
    description="made for a newer hpcstate",
    capabilities=Capabilities(),
    make_backend=_make,  # type: ignore[arg-type]
)
NEEDS_MISSING = BackendInfo(
    name="needy",
    api_version=API_VERSION,
    version="1.0",
    description="needs a module that is not installed",
    capabilities=Capabilities(),
    make_backend=_make,  # type: ignore[arg-type]
    requires=("a_module_nobody_installed_xyz",),
    install_hint="pip install 'hpcstate-needy[all]'",
)
NOT_AN_INFO = object()
