"""The public API is the listed ``__all__`` of each public module (the API reference is
generated from it): every name a module imports for its users is listed, and every
listed name exists."""

from __future__ import annotations

import importlib
import types

import pytest


@pytest.mark.parametrize("module_name", ["hpcstate", "hpcstate.runtime", "hpcstate.testing"])
def test_all_lists_exactly_the_public_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    listed = list(getattr(module, "__all__", []))
    assert listed, f"{module_name} has no __all__"
    assert len(listed) == len(set(listed)), f"{module_name}.__all__ repeats a name"
    missing = [name for name in listed if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ names what it lacks: {missing}"
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # from __future__
    }
    unlisted = sorted(public - set(listed))
    assert not unlisted, f"{module_name} exports {unlisted} without listing them"


def test_the_backend_contract_lists_what_it_defines() -> None:
    module = importlib.import_module("hpcstate.backend")
    listed = set(module.__all__)
    assert not [name for name in listed if not hasattr(module, name)]
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }
    assert not sorted(defined - listed), f"hpcstate.backend defines {defined - listed} unlisted"
