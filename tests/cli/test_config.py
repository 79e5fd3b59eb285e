"""The configuration loader: pure (text + environment in), one-line errors out."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcstate import ConfigError
from hpcstate.backend import BackendConfig
from hpcstate.config import Config, load_config, locate, parse_config

PATH = "/home/alice/.config/hpcstate/config.toml"
GOOD = """
default_backend = "cluster"
database = "~/state/hpcstate.db"

[backends.cluster]
kind = "slurm"
host = "alice@login.example.org:22"
known_hosts = "~/.ssh/known_hosts"
connect_timeout = 10

[backends.flux-test]
kind = "flux"
"""


def load(text: str | None, **env: str) -> Config:
    return parse_config(text, env={"HOME": "/home/alice", **env}, path=PATH)


def test_no_file_means_the_embedded_local_backend() -> None:
    config = load(None)
    assert config.default_backend == "local"
    assert config.backends == {"local": BackendConfig(name="local", kind="local")}
    assert config.database is None
    assert config.path == PATH


def test_a_full_file() -> None:
    config = load(GOOD)
    assert config.default_backend == "cluster"
    assert config.database == "/home/alice/state/hpcstate.db"
    assert config.backends["cluster"] == BackendConfig(
        name="cluster",
        kind="slurm",
        host="alice@login.example.org:22",
        options={"known_hosts": "~/.ssh/known_hosts", "connect_timeout": 10},
    )
    assert config.backends["flux-test"].host is None
    # The embedded backend stays available next to configured ones.
    assert config.backends["local"].kind == "local"
    assert config.backend(None).name == "cluster"
    assert config.backend("flux-test").kind == "flux"


def test_environment_overrides() -> None:
    config = load(GOOD, HPCSTATE_BACKEND="flux-test", HPCSTATE_DB="/tmp/x.db")
    assert config.default_backend == "flux-test"
    assert config.database == "/tmp/x.db"


def test_a_file_may_redefine_local() -> None:
    config = load('[backends.local]\nkind = "local"\nroot = "/scratch/jobs"\n')
    assert config.backends["local"].options == {"root": "/scratch/jobs"}


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        (
            'default_backend = "cluster"\n[backends.cluster]\nkind = 3\n',
            {},
            f'{PATH}: backends.cluster.kind: expected a string (e.g. kind = "slurm"), '
            "got integer 3",
        ),
        (
            '[backends.cluster]\nhost = "login"\n',
            {},
            f"{PATH}: [backends.cluster]: missing required key 'kind' (e.g. kind = \"slurm\"; "
            "`hpcstate backends` lists the installed kinds)",
        ),
        (
            'defualt_backend = "x"\n',
            {},
            f"{PATH}: unknown top-level key 'defualt_backend' (known keys: default_backend, "
            "database, backends, tracker; backend settings go in [backends.NAME])",
        ),
        (
            'default_backend = "nope"\n',
            {},
            f"{PATH}: default_backend: 'nope' names no backend (defined: local); "
            "add [backends.nope] or fix the name",
        ),
        (
            None,
            {"HPCSTATE_BACKEND": "cluster"},
            f"$HPCSTATE_BACKEND='cluster' names no backend (defined in {PATH}: local; or an "
            "installed kind, see `hpcstate backends`)",
        ),
        (
            'backends = "slurm"\n',
            {},
            f"{PATH}: backends: expected tables ([backends.NAME] with kind = ...), "
            "got string 'slurm'",
        ),
        (
            '[backends.cluster]\nkind = "slurm"\nhost = 22\n',
            {},
            f"{PATH}: backends.cluster.host: expected a string "
            '(e.g. host = "user@login.example.org:22"), got integer 22',
        ),
        (
            '[backends."a:b"]\nkind = "slurm"\n',
            {},
            f"{PATH}: [backends.a:b]: a backend name uses letters, digits, '_', '.' and '-' "
            "only (it is written NAME:NATIVE_ID in run references)",
        ),
        (
            "database = 1.5\n",
            {},
            f"{PATH}: database: expected a string (e.g. database = "
            '"~/.local/state/hpcstate/state.db"), got float 1.5',
        ),
    ],
)
def test_errors_are_one_line_and_say_what_to_fix(
    text: str | None, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(text, **env)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_invalid_toml_names_the_file_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        load('[backends.x]\nkind = "slurm\n')
    # The parser's own words vary between tomllib and tomli versions; the place does not.
    assert str(info.value).startswith(f"{PATH}: invalid TOML: ")
    assert str(info.value).endswith("(at line 2, column 14)")


def test_unknown_backend_by_name() -> None:
    from hpcstate import registry

    usable = ", ".join(sorted({"cluster", "flux-test", "local", *registry.available()}))
    with pytest.raises(ConfigError) as info:
        load(GOOD).backend("gpu")
    assert str(info.value) == (
        f"no backend named 'gpu': it is neither configured nor an installed kind (usable: "
        f"{usable}); add a [backends.gpu] table with its kind to {PATH}"
    )


def test_locate() -> None:
    assert locate({"HOME": "/h"}).path == "/h/.config/hpcstate/config.toml"  # type: ignore[union-attr]
    found = locate({"HOME": "/h", "XDG_CONFIG_HOME": "/x"})
    assert found is not None
    assert (found.path, found.required) == ("/x/hpcstate/config.toml", False)
    # XDG says a relative XDG_CONFIG_HOME is ignored.
    assert locate({"HOME": "/h", "XDG_CONFIG_HOME": "rel"}).path.startswith("/h/")  # type: ignore[union-attr]
    env = {"HOME": "/h", "HPCSTATE_CONFIG": "/etc/hpc.toml"}
    assert locate(env) is not None
    assert locate(env).required  # type: ignore[union-attr]
    assert locate(env, "/cli.toml").path == "/cli.toml"  # type: ignore[union-attr]
    assert locate({}) is None


@given(st.text(max_size=300))
def test_any_text_loads_or_raises_config_error(text: str) -> None:
    message = ""
    try:
        config = load(text)
    except ConfigError as exc:
        message = str(exc)
    else:
        assert config.default_backend in config.names()
    assert "\n" not in message


# -- zero-config backends (issue 18) -------------------------------------------------------


def test_every_installed_kind_is_usable_by_its_name_without_a_table() -> None:
    config = load(None)
    assert config.backends.keys() == {"local"}  # nothing configured...
    for kind in ("slurm", "flux", "k8s"):  # ...yet every installed kind works by name
        assert config.backend(kind) == BackendConfig(name=kind, kind=kind)
    assert load(None, HPCSTATE_BACKEND="slurm").backend(None) == BackendConfig(
        name="slurm", kind="slurm"
    )
    assert load('default_backend = "flux"\n').default_backend == "flux"


def test_a_table_named_after_a_kind_only_changes_its_options() -> None:
    config = load("[backends.slurm]\ncommand_timeout = 30\n")
    assert config.backend("slurm") == BackendConfig(
        name="slurm", kind="slurm", options={"command_timeout": 30}
    )


# -- [tracker] (issue 18: the cadence knobs, with units, checked at load) -------------------


def test_tracker_table_with_units() -> None:
    config = load(
        '[tracker]\ngrace = "10m"\nqueue_interval = "1m30s"\naccounting_lag = 2\n'
        'fast_interval = "0.5s"\nretention = "30d"\n'
    )
    assert config.tracker.kwargs() == {
        "grace": timedelta(minutes=10),
        "queue_interval": 90.0,
        "accounting_lag": 2.0,
        "fast_interval": 0.5,
        "retention": timedelta(days=30),
    }
    assert load(None).tracker.kwargs() == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[tracker]\ngrase = "5m"\n',
            f"{PATH}: tracker.grase: unknown key (known keys: grace, fast_interval, "
            "max_interval, max_error_interval, queue_interval, accounting_lag, "
            "accounting_interval, late_check_interval, late_check_window, retention, "
            "lease_ttl, wake_check_interval)",
        ),
        (
            '[tracker]\ngrace = "5 minutes"\n',
            f"{PATH}: tracker.grace: cannot read duration '5 minutes': expected e.g. 90s, "
            "15m, 1h30m, 2d, 1:30:00",
        ),
        (
            "[tracker]\nfast_interval = true\n",
            f"{PATH}: tracker.fast_interval: expected a duration with its unit (e.g. "
            'fast_interval = "30s"), got boolean True',
        ),
        (
            "[tracker]\naccounting_lag = -1\n",
            f"{PATH}: tracker.accounting_lag: -1 is not a duration >= 0",
        ),
        (
            "[tracker]\nqueue_interval = nan\n",
            f"{PATH}: tracker.queue_interval: nan is not a duration >= 0",
        ),
        (
            'tracker = "fast"\n',
            f'{PATH}: tracker: expected a table ([tracker] with grace = "10m" ...), '
            "got string 'fast'",
        ),
    ],
)
def test_tracker_errors_name_file_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(text)
    assert str(info.value) == message


def test_load_config_reads_the_file_the_cli_reads(tmp_path: Path) -> None:
    path = tmp_path / "config" / "hpcstate" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('[tracker]\ngrace = "1m"\n[backends.c]\nkind = "slurm"\n', encoding="utf-8")
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    config = load_config(env=env)
    assert config.path == str(path)
    assert config.tracker.kwargs() == {"grace": timedelta(minutes=1)}
    assert config.backend("c").kind == "slurm"
    assert load_config(path, env={}).path == str(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml", env={})


# -- the CLI passes [tracker] to the Tracker; a wrong key is 78 (installed script) --------


def test_the_cli_hands_the_tracker_table_to_the_tracker(
    cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpcstate.cli import _commands
    from hpcstate.runtime import Tracker

    from .conftest import invoke

    seen: list[dict[str, object]] = []

    def recording(**kwargs: object) -> Tracker:
        seen.append(kwargs)
        return Tracker(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_commands, "Tracker", recording)
    config = tmp_path / "config.toml"
    config.write_text('[tracker]\ngrace = "2m"\nqueue_interval = "90s"\n', encoding="utf-8")
    result = invoke("submit", "--", "true", env={**cli_env, "HPCSTATE_CONFIG": str(config)})
    assert result.code == 0, result.err
    [kwargs] = seen
    assert (kwargs["grace"], kwargs["queue_interval"]) == (timedelta(minutes=2), 90.0)


def test_a_wrong_tracker_key_is_78_naming_file_and_key(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    from .conftest import hpcstate

    config = tmp_path / "config.toml"
    config.write_text('[tracker]\ngrase = "2m"\n', encoding="utf-8")
    env = {**cli_env, "HPCSTATE_CONFIG": str(config)}
    result = hpcstate("list", env=env)
    assert result.code == 78
    assert result.err.startswith(f"hpcstate: error: {config}: tracker.grase: unknown key")
    assert len(result.err.splitlines()) == 1
    as_json = hpcstate("list", "--json", env=env)
    error = json.loads(as_json.err)
    assert (error["code"], error["refers_to"]) == (78, {"kind": "config", "value": str(config)})


def test_every_tracker_cadence_knob_is_a_tracker_key() -> None:
    import inspect

    from hpcstate.config import TRACKER_KEYS
    from hpcstate.runtime import Tracker

    # Written by hand: the Tracker arguments that are not a cadence (a time or a pace).
    not_cadence = {
        "store",
        "backends",
        "clock",
        "concurrency",
        "sweep",
        "seed",
        "default_backend",
        "poll_lease",
        "holder",
    }
    knobs = set(inspect.signature(Tracker.__init__).parameters) - not_cadence - {"self"}
    assert knobs == set(TRACKER_KEYS)
    # Each has its unit: a duration in the file, what the Tracker takes in kwargs().
    for key, (_, as_timedelta) in TRACKER_KEYS.items():
        settings = load(f'[tracker]\n{key} = "90s"\n').tracker.kwargs()
        assert settings[key] == (timedelta(seconds=90) if as_timedelta else 90.0), key


# -- backend options: structured into the backend's record when the file is loaded ------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'kill_grace = "x"',
            f"{PATH}: [backends.mine]: kill_grace: expected a number, got string 'x'",
        ),
        (
            "kil_grace = 3",
            f"{PATH}: [backends.mine]: kil_grace: unknown option; known options: kill_grace, root",
        ),
        ("root = 7", f"{PATH}: [backends.mine]: root: expected a string, got integer 7"),
        (
            "kill_grace = -1",
            f"{PATH}: [backends.mine]: kill_grace: must be seconds >= 0, got -1.0",
        ),
    ],
)
def test_a_wrong_backend_option_is_refused_at_load_naming_file_and_key(
    table: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(f'[backends.mine]\nkind = "local"\n{table}\n')
    assert str(info.value) == message


def test_good_backend_options_load_unchanged() -> None:
    config = load('[backends.mine]\nkind = "local"\nroot = "/tmp/jobs"\nkill_grace = 2\n')
    assert config.backend("mine").options == {"root": "/tmp/jobs", "kill_grace": 2}


def test_a_kind_that_is_not_installed_is_checked_when_used() -> None:
    config = load('[backends.pbs]\nkind = "nosuchkind"\nanything = 1\n')
    assert config.backend("pbs").options == {"anything": 1}


def test_a_third_party_options_record_is_used_at_load() -> None:
    from hpcstate import registry

    registry.register("typed", f"{__package__}.typed_plugin:BACKEND")
    try:
        with pytest.raises(ConfigError) as info:
            load('[backends.t]\nkind = "typed"\nqueue_name = "q"\n')
        assert str(info.value) == (
            f"{PATH}: [backends.t]: queue_name: unknown option; known options: queue, timeout_s"
        )
        with pytest.raises(ConfigError) as info:
            load('[backends.t]\nkind = "typed"\ntimeout_s = "10"\n')
        assert str(info.value) == (
            f"{PATH}: [backends.t]: timeout_s: expected a number, got string '10'"
        )
        assert load('[backends.t]\nkind = "typed"\ntimeout_s = 10\n').backend("t").kind == ("typed")
    finally:
        registry.unregister("typed")


def test_a_wrong_backend_option_is_78_for_any_command(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    # Before: read only when the backend was made (never by `list`; at watch time it read
    # as the backend being unreachable).
    from .conftest import hpcstate

    config = tmp_path / "config.toml"
    config.write_text('[backends.mine]\nkind = "local"\nkill_grace = "x"\n', encoding="utf-8")
    result = hpcstate("list", env={**cli_env, "HPCSTATE_CONFIG": str(config)})
    assert result.code == 78
    assert result.err == (
        f"hpcstate: error: {config}: [backends.mine]: kill_grace: expected a number, got "
        "string 'x'\n"
    )


# -- --grace on the command line --------------------------------------------------------


def test_grace_on_the_command_line_wins_over_the_file(
    cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpcstate.cli import _commands
    from hpcstate.runtime import Tracker

    from .conftest import invoke

    seen: list[dict[str, object]] = []

    def recording(**kwargs: object) -> Tracker:
        seen.append(kwargs)
        return Tracker(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_commands, "Tracker", recording)
    config = tmp_path / "config.toml"
    config.write_text('[tracker]\ngrace = "2m"\n', encoding="utf-8")
    env = {**cli_env, "HPCSTATE_CONFIG": str(config)}
    result = invoke("submit", "--watch", "--grace", "45s", "--", "true", env=env)
    assert result.code == 0, result.err
    assert [kwargs["grace"] for kwargs in seen] == [timedelta(seconds=45)]
    run_id = result.out.split()[0]
    seen.clear()
    assert invoke("watch", run_id, "--grace", "3m", env=env).code == 0
    assert [kwargs["grace"] for kwargs in seen] == [timedelta(minutes=3)]
    seen.clear()
    assert invoke("watch", run_id, env=env).code == 0
    assert [kwargs["grace"] for kwargs in seen] == [timedelta(minutes=2)]


def test_a_bad_grace_is_a_usage_error(cli_env: dict[str, str]) -> None:
    from .conftest import invoke

    result = invoke("submit", "--grace", "soon", "--", "true", env=cli_env)
    assert result.code == 64
    assert "--grace: cannot read duration 'soon'" in result.err
