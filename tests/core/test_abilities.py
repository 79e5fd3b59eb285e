"""Optional backend abilities are declared (Capabilities flags), never probed: abilities()
types a backend as each declared protocol, and a flag declared without its methods is
refused, naming the backend, the flag and the missing method."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from hpcstate import ConfigError, Observation, registry
from hpcstate.backend import (
    ABILITY_METHODS,
    AccountingQuery,
    Backend,
    BackendConfig,
    BackendContractError,
    BackendInfo,
    Capabilities,
    JobSpec,
    OutputSnapshot,
    Submission,
    abilities,
)


class Plain:
    """A Backend with none of the optional methods."""

    def __init__(self, capabilities: Capabilities, name: str = "toy") -> None:
        self.name = name
        self.capabilities = capabilities

    async def submit(self, spec: JobSpec) -> Submission:
        return Submission(native_id="1")

    async def queue(self, native_ids: Sequence[str]) -> Sequence[Observation]:
        return ()

    async def accounting(self, query: AccountingQuery) -> Sequence[Observation]:
        return ()

    async def cancel(self, native_ids: Sequence[str]) -> None:
        return None

    async def close(self) -> None:
        return None


class Everything(Plain):
    """Every optional method, so every flag may be declared."""

    async def find_submission(self, tag: str) -> Submission | None:
        return None

    def watch(self, native_ids: Sequence[str]) -> AsyncIterator[Observation]:
        raise NotImplementedError

    def reports_itself(self, spec: JobSpec) -> bool:
        return True

    async def read_text_files(self, paths: Sequence[str]) -> Mapping[str, str]:
        return {}

    async def read_output(
        self, native_id: str, path: str | None, lines: int
    ) -> OutputSnapshot | None:
        return None

    def facts(self) -> Mapping[str, str]:
        return {}

    def adopt_facts(self, facts: Mapping[str, str]) -> None:
        return None

    def lease_scope(self) -> str:
        return "host:/root"


ALL = Capabilities(
    idempotent_submit=True,
    push=True,
    report_files=True,
    output=True,
    shares_facts=True,
    host_local=True,
    self_report=True,
)

# Written by hand: flag -> the Abilities field it fills -> the methods it needs.
FLAGS = {
    "idempotent_submit": ("finder", ("find_submission",)),
    "push": ("watcher", ("watch",)),
    "report_files": ("report_files", ("reports_itself", "read_text_files")),
    "output": ("output", ("read_output",)),
    "shares_facts": ("facts", ("facts", "adopt_facts")),
    "host_local": ("host_local", ("lease_scope",)),
}


def test_the_table_is_the_one_written_here() -> None:
    assert {flag: methods for flag, (_, methods) in FLAGS.items()} == dict(ABILITY_METHODS)


def test_nothing_declared_means_no_abilities_even_when_methods_exist() -> None:
    found = abilities(Everything(Capabilities()))
    assert attrs.asdict(found, recurse=False) == {
        "finder": None,
        "watcher": None,
        "report_files": None,
        "output": None,
        "facts": None,
        "host_local": None,
    }


def test_every_declared_flag_gives_the_backend_itself() -> None:
    backend = Everything(ALL)
    found = abilities(backend)
    for field, _ in FLAGS.values():
        assert getattr(found, field) is backend, field


@pytest.mark.parametrize("flag", sorted(FLAGS))
def test_one_flag_gives_one_ability(flag: str) -> None:
    backend = Everything(Capabilities(**{flag: True}))
    found = attrs.asdict(abilities(backend), recurse=False)
    wanted = FLAGS[flag][0]
    assert {k for k, v in found.items() if v is not None} == {wanted}


@pytest.mark.parametrize(
    ("flag", "method"), [(flag, m) for flag, (_, methods) in FLAGS.items() for m in methods]
)
def test_a_declared_flag_without_its_method_is_refused_naming_all_three(
    flag: str, method: str
) -> None:
    # A subclass that hides just this one method.
    hidden = type("Broken", (Everything,), {method: None})
    backend = hidden(Capabilities(**{flag: True}), name="mine")
    with pytest.raises(BackendContractError) as caught:
        abilities(backend)
    message = str(caught.value)
    assert "'mine'" in message
    assert f"{flag}=True" in message
    assert f"{method}()" in message
    assert isinstance(caught.value, ConfigError)  # the CLI reports it (exit 78)


def test_self_report_needs_somewhere_to_report_to() -> None:
    with pytest.raises(BackendContractError, match="self_report=True without report_files"):
        abilities(Everything(Capabilities(self_report=True)))
    abilities(Everything(Capabilities(self_report=True, report_files=True)))
    abilities(Everything(Capabilities(self_report=True, host_local=True)))


# -- the registry checks what a plugin makes -------------------------------------------


def _broken_backend(config: BackendConfig) -> Backend:
    return Plain(Capabilities(push=True), name=config.name)


BROKEN = BackendInfo(
    name="broken",
    api_version=registry.API_VERSION,
    version="0.0.1",
    description="declares push without watch()",
    capabilities=Capabilities(push=True),
    make_backend=_broken_backend,
)

LYING = BackendInfo(
    name="lying",
    api_version=registry.API_VERSION,
    version="0.0.1",
    description="its BackendInfo declares output; what it makes has no read_output()",
    capabilities=Capabilities(output=True),
    make_backend=lambda config: Plain(Capabilities(), name=config.name),
)


SHY = BackendInfo(
    name="shy",
    api_version=registry.API_VERSION,
    version="0.0.1",
    description="has every optional method, declares none (written when hpcstate probed)",
    capabilities=Capabilities(),
    make_backend=lambda config: Everything(Capabilities(), name=config.name),
)


@pytest.fixture
def plugins() -> Iterator[None]:
    registry.register("broken", f"{__name__}:BROKEN")
    registry.register("lying", f"{__name__}:LYING")
    registry.register("shy", f"{__name__}:SHY")
    yield
    registry.unregister("broken")
    registry.unregister("lying")
    registry.unregister("shy")


@pytest.mark.usefixtures("plugins")
def test_undeclared_methods_are_not_used_and_the_registry_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="hpcstate.registry"):
        backend = registry.make_backend(BackendConfig(name="s1", kind="shy"))
    assert attrs.astuple(abilities(backend), recurse=False) == (None,) * 6
    (record,) = [r for r in caplog.records if r.name == "hpcstate.registry"]
    message = record.getMessage()
    assert "'s1'" in message
    assert "'shy'" in message
    for flag in ("idempotent_submit", "push", "report_files", "output", "shares_facts"):
        assert f"{flag}=True" in message


@pytest.mark.usefixtures("plugins")
def test_the_registry_refuses_a_plugin_that_breaks_its_declaration() -> None:
    with pytest.raises(BackendContractError) as caught:
        registry.make_backend(BackendConfig(name="b1", kind="broken"))
    message = str(caught.value)
    assert "'b1'" in message
    assert "'broken'" in message
    assert "push=True" in message
    assert "watch()" in message
    with pytest.raises(BackendContractError) as caught:
        registry.make_backend(BackendConfig(name="l1", kind="lying"))
    message = str(caught.value)
    assert "output=True" in message
    assert "read_output()" in message


# -- the first-party backends keep their word ------------------------------------------


def _kubeconfig(tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


def _options(kind: str, tmp_path: Path) -> dict[str, Any]:
    if kind == "local":
        return {"root": str(tmp_path / "jobs")}
    if kind == "k8s":
        return {"kubeconfig": _kubeconfig(tmp_path), "namespace": "batch"}
    return {}


# Written by hand from what each backend implements today.
DECLARED = {
    "local": {"finder", "watcher", "output", "host_local"},
    "slurm": {"finder", "report_files", "output"},
    "flux": {"finder"},
    "k8s": {"watcher"},
}


@pytest.mark.parametrize("kind", sorted(DECLARED))
async def test_each_first_party_backend_has_what_it_declares(kind: str, tmp_path: Path) -> None:
    if kind not in registry.available():
        pytest.skip(f"{kind} is not installed")
    info = registry.load(kind)
    backend = registry.make_backend(
        BackendConfig(name=kind, kind=kind, options=_options(kind, tmp_path)), info
    )
    try:
        found = attrs.asdict(abilities(backend), recurse=False)
        # At least what it has today; an owner may declare more (e.g. shares_facts).
        assert DECLARED[kind] <= {k for k, v in found.items() if v is not None}
        for flag, (field, methods) in FLAGS.items():
            if getattr(info.capabilities, flag):
                assert found[field] is backend
                for method in methods:
                    assert callable(getattr(backend, method)), (kind, method)
    finally:
        await backend.close()
