"""The core does no I/O: importing it pulls in no asyncio, subprocess or socket."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import attrs
import pytest

import hpcstate

_IO_MODULES = "{'asyncio','subprocess','socket','asyncssh','hpcstate'}"


def _io_modules_after(imports: str) -> str:
    code = (
        f"import {imports}, sys;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{_IO_MODULES} and "
        "(not m.startswith('hpcstate') or m.startswith('hpcstate.runtime'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_core_imports_no_io() -> None:
    # What hpcstate's own modules import, beyond its two dependencies.
    core = _io_modules_after("hpcstate, hpcstate.serial, hpcstate.backend, hpcstate.registry")
    assert core == _io_modules_after("attrs, cattrs")


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="on Python 3.10 attrs itself imports platform, which imports subprocess",
)
def test_the_readme_purity_check_prints_an_empty_list() -> None:
    assert (
        _io_modules_after("hpcstate, hpcstate.serial, hpcstate.backend, hpcstate.registry") == "[]"
    )


def test_public_names_resolve_and_records_are_frozen() -> None:
    for name in hpcstate.__all__:
        obj = getattr(hpcstate, name)
        if attrs.has(obj):
            params = obj.__attrs_attrs__  # noqa: F841 - attrs class
            assert getattr(obj, "__setattr__", None) is not object.__setattr__
            assert attrs.fields(obj)


def test_records_refuse_mutation() -> None:
    item = hpcstate.new_item(
        id="a",
        run_id="r",
        backend="b",
        now=__import__("datetime").datetime.now(__import__("datetime").timezone.utc),
    )
    try:
        item.state = hpcstate.State.FAILED  # type: ignore[misc]
    except attrs.exceptions.FrozenInstanceError:
        pass
    else:  # pragma: no cover
        raise AssertionError("RunItem is mutable")


def test_py_typed_ships() -> None:
    assert (Path(hpcstate.__file__).parent / "py.typed").exists()
