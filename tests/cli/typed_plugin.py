"""A third-party backend plugin with a typed options record (for tests/cli/test_config.py)."""

from __future__ import annotations

from attrs import frozen

from hpcstate.backend import API_VERSION, Backend, BackendConfig, BackendInfo, Capabilities


@frozen(kw_only=True)
class TypedOptions:
    queue: str = "batch"
    timeout_s: float = 30.0


def _make(config: BackendConfig) -> Backend:
    raise NotImplementedError("never made by these tests")


BACKEND = BackendInfo(
    name="typed",
    api_version=API_VERSION,
    version="0.0.1",
    description="a plugin that declares its options",
    capabilities=Capabilities(),
    make_backend=_make,
    options_type=TypedOptions,
)
