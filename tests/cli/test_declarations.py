"""The CLI holds no knowledge of a particular backend (issue 15): which resource requests
a backend expresses and which exit-value forms ``decode`` reads are each backend's own
declaration (``BackendInfo.resources`` and ``.exit_forms``), read through the registry.
A plugin registered at run time (as a third party's entry point would be) is served the
same way as the bundled backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hpcstate import ExitStatus, ParseError, registry
from hpcstate.backend import (
    API_VERSION,
    BackendConfig,
    BackendInfo,
    Capabilities,
    ExitForm,
    ExitReading,
    exit_integer,
)
from hpcstate.cli._decode import decode, decoded_dict, installed_forms
from hpcstate.cli._parser import UsageError
from hpcstate.cli._resources import check_supported

from .conftest import invoke


def _make(config: BackendConfig) -> object:
    raise NotImplementedError("these tests never build the toy backend")


def _read_toy(text: str) -> ExitReading:
    value = exit_integer(text, "toy")
    return ExitReading(
        label="a toy scheduler's code",
        status=ExitStatus.exited(value % 256),
        summary=f"toy code {value}",
        known=("the toy scheduler adds 1000 to every exit code",),
    )


TOY = BackendInfo(
    name="toy",
    api_version=API_VERSION,
    version="1.0",
    description="a third-party plugin",
    capabilities=Capabilities(),
    make_backend=_make,  # type: ignore[arg-type]
    resources=frozenset({"time_limit", "cpus"}),
    exit_forms={
        "toy": ExitForm(
            read=_read_toy,
            claims=lambda text: text.startswith("1") and len(text) == 4 and text.isdigit(),
            shape="a toy code (1NNN)",
            integers=True,
        )
    },
)
SILENT = BackendInfo(
    name="silent",
    api_version=API_VERSION,
    version="1.0",
    description="a plugin that declares nothing",
    capabilities=Capabilities(),
    make_backend=_make,  # type: ignore[arg-type]
)


@pytest.fixture
def toy() -> Iterator[None]:
    registry.register("toy", f"{__name__}:TOY")
    registry.register("silent", f"{__name__}:SILENT")
    yield
    registry.unregister("toy")
    registry.unregister("silent")


# -- resources ---------------------------------------------------------------------------


@pytest.mark.usefixtures("toy")
def test_a_plugins_declared_resources_refuse_the_others(cli_env: dict[str, str]) -> None:
    result = invoke("submit", "--backend", "toy", "--mem", "1G", "--", "true", env=cli_env)
    assert result.code == 64, result.err
    assert result.err.endswith(
        "hpcstate: error: --mem: backend 'toy' (toy) cannot express a memory size; choose "
        "a backend that can, or pass its own flag with --extra-arg\n"
    )


def test_a_backend_that_declares_nothing_gets_every_request() -> None:
    everything = {"time_limit": 1, "memory_bytes": 2, "cpus": 3, "tasks": 4, "nodes": 5}
    check_supported("silent", "mine", {**everything, "gpus": "a100:2"}, None)  # no error
    with pytest.raises(UsageError, match=r"-G/--gpus: backend 'mine' \(silent\)"):
        check_supported("silent", "mine", {"gpus": "2"}, frozenset({"time_limit"}))


def test_the_bundled_backends_declare_what_the_cli_refused_before() -> None:
    # Written by hand from each backend's submit command (docs/cli.md#submit).
    expected = {
        "local": frozenset({"time_limit"}),
        "slurm": frozenset({"time_limit", "memory_bytes", "cpus", "tasks", "nodes", "gpus"}),
        "flux": frozenset({"time_limit", "cpus", "tasks", "nodes"}),
        "k8s": frozenset({"time_limit", "memory_bytes", "cpus"}),
    }
    for name, resources in expected.items():
        assert registry.load(name).resources == resources, name


# -- exit-value forms ----------------------------------------------------------------------


def test_the_bundled_forms_come_from_their_backends() -> None:
    forms = installed_forms()
    assert {"slurm", "flux", "k8s"} <= set(forms)
    assert forms["slurm"] is registry.load("slurm").exit_forms["slurm"]
    assert forms["k8s"] is registry.load("k8s").exit_forms["k8s"]


@pytest.mark.usefixtures("toy")
def test_a_plugins_form_is_read_by_name_and_guessed_by_shape(cli_env: dict[str, str]) -> None:
    result = invoke("decode", "1007", "--from", "toy", "--json", env=cli_env)
    assert result.code == 0, result.err
    [reading] = result.records()[0]["readings"]
    assert (reading["from"], reading["label"], reading["exit_code"]) == (
        "toy",
        "a toy scheduler's code",
        239,  # 1007 % 256
    )
    guessed = decoded_dict(decode("1007"))["readings"]
    assert [r["from"] for r in guessed] == ["toy"]  # type: ignore[index]
    # Its shape joins the message for a value no form claims.
    with pytest.raises(ParseError) as caught:
        decode("banana")
    assert str(caught.value) == (
        "expected CODE:SIGNAL (Slurm), an exit code, a wait status, a Flux returncode or "
        "a toy code (1NNN) (field value): 'banana'"
    )


@pytest.mark.usefixtures("toy")
def test_an_unknown_form_lists_the_installed_ones(cli_env: dict[str, str]) -> None:
    result = invoke("decode", "7", "--from", "nosuch", env=cli_env)
    assert result.code == 64
    prefix = (
        "hpcstate: error: --from nosuch: no installed backend declares this form of exit "
        "value (forms: "
    )
    assert result.err.startswith(prefix), result.err
    assert result.err.endswith(")\n"), result.err
    listed = result.err[len(prefix) : -2].split(", ")
    # Other plugins may be installed too (the PBS example declares "pbs").
    assert {"exit", "flux", "k8s", "slurm", "toy", "wait"} <= set(listed)
    assert listed == sorted(listed)


def test_a_form_of_a_backend_not_installed_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As on a machine with hpcstate alone: no slurm entry point.
    monkeypatch.setattr(registry, "available", lambda: ["flux", "k8s", "local"])
    with pytest.raises(UsageError) as caught:
        decode("0:9", "slurm")
    assert str(caught.value) == (
        "--from slurm: that form is read by backend 'slurm', which is not installed; "
        "to add it: pip install 'hpcstate[slurm]'"
    )
    # Without Slurm, "0:9" has no reading; the message names what is left.
    with pytest.raises(ParseError) as unread:
        decode("0:9")
    assert str(unread.value) == (
        "expected an exit code, a wait status or a Flux returncode (field value): '0:9'"
    )
