"""structure_options: a backend's options table as its typed record, strictly, with
one-line errors "{where}: <key>: <what is wrong>". Expected messages written by hand."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

import pytest
from attrs import field, frozen, validators
from hypothesis import given
from hypothesis import strategies as st

from hpcstate import ConfigError
from hpcstate.options import structure_options

WHERE = "cfg.toml: [backends.c]"


@frozen(kw_only=True)
class Opts:
    accounting_margin_s: float = 60.0
    retries: int = field(default=3, validator=validators.ge(0))
    slurm_version: str | None = None
    wrapper: bool | Literal["yes", "no"] = True
    modules: tuple[str, ...] = ()
    labels: dict[str, str] = field(factory=dict)
    timeout_s: float | None = None


def test_defaults_and_good_values() -> None:
    assert structure_options(Opts, {}, where=WHERE) == Opts()
    got = structure_options(
        Opts,
        {
            "accounting_margin_s": 5,  # an integer where a number is wanted: that number
            "retries": 0,
            "slurm_version": "22.05.11",
            "wrapper": "no",
            "modules": ["gcc", "openmpi"],
            "labels": {"team": "a"},
            "timeout_s": 2,
        },
        where=WHERE,
    )
    assert got == Opts(
        accounting_margin_s=5.0,
        retries=0,
        slurm_version="22.05.11",
        wrapper="no",
        modules=("gcc", "openmpi"),
        labels={"team": "a"},
        timeout_s=2.0,
    )
    assert isinstance(got.accounting_margin_s, float)
    assert isinstance(got.timeout_s, float)
    assert structure_options(Opts, {"wrapper": False}, where=WHERE).wrapper is False


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"accounting_margin_s": "x"},
            "accounting_margin_s: expected a number, got string 'x'",
        ),
        # Nothing is converted silently: a numeric string is not a number...
        (
            {"accounting_margin_s": "1.5"},
            "accounting_margin_s: expected a number, got string '1.5'",
        ),
        # ...a boolean is not a number, a float is not an integer...
        ({"retries": True}, "retries: expected an integer, got boolean True"),
        ({"retries": 1.5}, "retries: expected an integer, got float 1.5"),
        (
            {"accounting_margin_s": float("inf")},
            "accounting_margin_s: expected a number, got float inf",
        ),
        # ...and a word is not a boolean.
        (
            {"wrapper": "maybe"},
            "wrapper: expected a boolean (true or false) or one of 'yes', 'no', got string 'maybe'",
        ),
        ({"slurm_version": 22}, "slurm_version: expected a string, got integer 22"),
        ({"modules": "gcc"}, "modules: expected an array of strings, got string 'gcc'"),
        ({"modules": ["gcc", 7]}, "modules: expected an array of strings, got array ['gcc', 7]"),
        ({"labels": {"a": 1}}, "labels: expected a table of strings, got table {'a': 1}"),
        ({"timeout_s": "soon"}, "timeout_s: expected a number, got string 'soon'"),
        (
            {"slurm_version": date(2024, 1, 1)},
            "slurm_version: expected a string, got date/time datetime.date(2024, 1, 1)",
        ),
        (
            {"acounting_margin_s": 5},
            "acounting_margin_s: unknown option; known options: accounting_margin_s, labels, "
            "modules, retries, slurm_version, timeout_s, wrapper",
        ),
        (
            {"zz": 1, "aa": 2},
            "aa: unknown option (also unknown: zz); known options: accounting_margin_s, "
            "labels, modules, retries, slurm_version, timeout_s, wrapper",
        ),
        # The record's own validator names the key itself.
        ({"retries": -1}, "'retries' must be >= 0: -1"),
    ],
)
def test_errors_are_one_line_naming_where_and_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        structure_options(Opts, raw, where=WHERE)
    assert str(caught.value) == f"{WHERE}: {message}"


def test_a_required_option_without_default() -> None:
    @frozen(kw_only=True)
    class Needs:
        url: str

    with pytest.raises(ConfigError) as caught:
        structure_options(Needs, {}, where=WHERE)
    assert str(caught.value) == f"{WHERE}: url: missing (this option has no default)"


def test_not_a_table() -> None:
    with pytest.raises(ConfigError) as caught:
        structure_options(Opts, ["a"], where=WHERE)  # type: ignore[arg-type]
    assert str(caught.value) == f"{WHERE}: expected a table of options, got array"


def test_not_an_attrs_class_is_the_callers_bug() -> None:
    with pytest.raises(TypeError, match="needs an attrs class"):
        structure_options(dict, {}, where=WHERE)


toml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.datetimes(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "accounting_margin_s",
                "retries",
                "slurm_version",
                "wrapper",
                "modules",
                "labels",
                "timeout_s",
                "other",
            ]
        ),
        toml_values,
        max_size=4,
    )
)
def test_any_table_gives_the_record_or_a_config_error(raw: dict[str, Any]) -> None:
    try:
        got = structure_options(Opts, raw, where=WHERE)
    except ConfigError as exc:
        text = str(exc)
        assert text.startswith(f"{WHERE}: ")
        assert "\n" not in text.split(": ", 2)[1]  # the key part is one line
        return
    # What came back holds exactly the values given, typed as declared.
    assert isinstance(got.accounting_margin_s, float)
    assert isinstance(got.retries, int)
    assert not isinstance(got.retries, bool)
    assert all(isinstance(m, str) for m in got.modules)
    for key, value in raw.items():
        assert getattr(got, key) == (tuple(value) if key == "modules" else value), key


def test_a_cli_backend_inherits_the_ssh_options_make_runner_reads() -> None:
    from hpcstate.options import SshOptions

    @frozen(kw_only=True)
    class Pbs(SshOptions):
        history: bool = True

    got = structure_options(
        Pbs,
        {"known_hosts": "~/.ssh/kh", "client_keys": ["~/.ssh/id"], "connect_timeout": 10},
        where=WHERE,
    )
    assert (got.known_hosts, got.client_keys, got.connect_timeout) == (
        "~/.ssh/kh",
        ("~/.ssh/id",),
        10.0,
    )
    assert structure_options(Pbs, {"client_keys": "~/.ssh/id"}, where=WHERE).client_keys == (
        "~/.ssh/id"
    )
    with pytest.raises(ConfigError) as caught:
        structure_options(Pbs, {"ssh_port": "22"}, where=WHERE)
    assert str(caught.value) == f"{WHERE}: ssh_port: expected an integer, got string '22'"
