"""The tracker's backends by name (runtime/_backend_set.BackendSet): given ones checked
against their declaration at once, configs and bare names made through the real
registry on first use and then kept, every one closed once at the end."""

from __future__ import annotations

import pytest

from hpcstate import BackendNotFound
from hpcstate.backend import BackendConfig, BackendContractError, Capabilities
from hpcstate.runtime._backend_set import BackendSet
from hpcstate.runtime.local import LocalBackend


class _Closing:
    """Just enough of a Backend for the set: a name, capabilities and close()."""

    def __init__(self, name: str, *, fail: bool = False) -> None:
        self.name = name
        self.capabilities = Capabilities()
        self.closed = 0
        self._fail = fail

    async def close(self) -> None:
        self.closed += 1
        if self._fail:
            raise RuntimeError("close failed")


class _Pushless:
    name = "pushless"
    capabilities = Capabilities(push=True)  # declares push, has no watch()


def test_a_given_backend_breaking_its_declaration_is_refused_at_once() -> None:
    with pytest.raises(BackendContractError, match=r"backend 'p'.*push=True.*watch"):
        BackendSet({"p": _Pushless()})  # type: ignore[dict-item]
    backends = BackendSet()
    with pytest.raises(BackendContractError, match=r"backend 'p'.*push=True.*watch"):
        backends.add("p", _Pushless())  # type: ignore[arg-type]
    with pytest.raises(BackendNotFound):  # the refused one was not kept: made by kind 'p'
        backends.get("p")


def test_a_given_backend_is_returned_as_given() -> None:
    given = _Closing("mine")
    backends = BackendSet({"mine": given})  # type: ignore[dict-item]
    assert backends.get("mine") is given


def test_a_config_is_made_through_the_registry_on_first_use_and_kept() -> None:
    backends = BackendSet({"here": BackendConfig(name="here", kind="local")})
    made = backends.get("here")
    assert isinstance(made, LocalBackend)
    assert made.name == "here"
    assert backends.get("here") is made


def test_a_name_without_a_config_is_made_as_its_own_kind() -> None:
    backends = BackendSet()
    made = backends.get("local")
    assert isinstance(made, LocalBackend)
    assert backends.get("local") is made
    with pytest.raises(BackendNotFound, match="no-such-kind"):
        backends.get("no-such-kind")


def test_adding_a_config_replaces_nothing_already_made() -> None:
    # As the tracker always did: a made backend wins over a config added later.
    backends = BackendSet()
    made = backends.get("local")
    backends.add("local", BackendConfig(name="local", kind="local"))
    assert backends.get("local") is made
    given = _Closing("local")
    backends.add("local", given)  # type: ignore[arg-type]
    assert backends.get("local") is given


async def test_close_closes_each_backend_once_and_goes_on_after_an_error() -> None:
    first, failing, last = _Closing("a"), _Closing("b", fail=True), _Closing("c")
    backends = BackendSet({"a": first, "b": failing, "c": last})  # type: ignore[dict-item]
    await backends.close()
    assert (first.closed, failing.closed, last.closed) == (1, 1, 1)
