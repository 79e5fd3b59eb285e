from __future__ import annotations

from collections.abc import Iterator

import pytest

from hpcstate import BackendNotFound, IncompatibleBackend, registry


@pytest.fixture
def plugins() -> Iterator[None]:
    names = {"good": "GOOD", "future": "FUTURE", "needy": "NEEDS_MISSING", "weird": "NOT_AN_INFO"}
    for name, attr in names.items():
        registry.register(name, f"{__package__}.fake_plugin:{attr}")
    yield
    for name in names:
        registry.unregister(name)


@pytest.mark.usefixtures("plugins")
def test_load_resolves_one_name() -> None:
    info = registry.load("good")
    assert info.name == "good"
    assert "good" in registry.available()


def test_missing_backend_names_the_package_to_install() -> None:
    with pytest.raises(BackendNotFound, match=r"pip install hpcstate-nosuch"):
        registry.load("nosuch")


@pytest.mark.usefixtures("plugins")
def test_incompatible_api_version_is_refused() -> None:
    with pytest.raises(IncompatibleBackend, match="API v2"):
        registry.load("future")


@pytest.mark.usefixtures("plugins")
def test_missing_dependency_gives_the_install_hint() -> None:
    with pytest.raises(
        BackendNotFound, match=r"a_module_nobody_installed_xyz.*hpcstate-needy\[all\]"
    ):
        registry.load("needy")


@pytest.mark.usefixtures("plugins")
def test_entry_point_must_name_a_backend_info() -> None:
    with pytest.raises(BackendNotFound, match="BackendInfo"):
        registry.load("weird")


def test_unimportable_target_is_a_clear_error() -> None:
    registry.register("broken", "no_such_module_abc:BACKEND")
    try:
        with pytest.raises(BackendNotFound, match="cannot be imported"):
            registry.load("broken")
    finally:
        registry.unregister("broken")


def test_bundled_backends_use_the_entry_point_group() -> None:
    assert {"local", "slurm", "flux", "k8s"} <= set(registry.available())


def test_register_refuses_a_bad_target() -> None:
    with pytest.raises(ValueError, match="module:attr"):
        registry.register("x", "nocolon")


def test_missing_attribute_is_a_clear_error_and_listing_survives_it() -> None:
    registry.register("noattr", f"{__package__}.fake_plugin:NO_SUCH_NAME")
    try:
        with pytest.raises(BackendNotFound, match="cannot be imported"):
            registry.load("noattr")
        listed = dict(registry.iter_backends())
        assert isinstance(listed["noattr"], BackendNotFound)
    finally:
        registry.unregister("noattr")
