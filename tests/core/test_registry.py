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


# -- declarations the CLI reads (BackendInfo.resources, .exit_forms) -----------------------


def test_the_bundled_backends_declarations_are_sound() -> None:
    from hpcstate.testing.conformance import declaration_problems

    for name in ("local", "slurm", "flux", "k8s"):
        assert declaration_problems(registry.load(name)) == [], name


def test_unsound_declarations_are_named() -> None:
    import attrs

    from hpcstate.backend import ExitForm, ExitReading
    from hpcstate.testing.conformance import declaration_problems

    from .fake_plugin import GOOD

    def crashes(text: str) -> ExitReading:
        return ExitReading(label="x", status=None, summary=str(int(text)))  # ValueError

    bad = attrs.evolve(
        GOOD,
        resources=frozenset({"walltime", "cpus"}),
        exit_forms={
            "wait": ExitForm(read=crashes),
            "two words": ExitForm(read=crashes, claims=lambda text: True),
        },
    )
    problems = declaration_problems(bad, values=["x"])
    assert problems == [
        "resources names walltime, which no JobSpec asks for (known: cpus, gpus, "
        "memory_bytes, nodes, tasks, time_limit)",
        "exit form 'wait': hpcstate decode reads that form itself",
        "exit form 'wait': read('x') raised ValueError: invalid literal for int() with base "
        "10: 'x' (a reader returns an ExitReading or raises ParseError)",
        "exit form name 'two words': one word, as --from takes it",
        "exit form 'two words' claims values but names no shape",
        "exit form 'two words': read('x') raised ValueError: invalid literal for int() with "
        "base 10: 'x' (a reader returns an ExitReading or raises ParseError)",
    ]
