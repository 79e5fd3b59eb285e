"""The Flux backend's typed options (FluxOptions, BACKEND.options_type).

Before: the options were read when the backend was made, and an unknown key (a typo such
as ``timout``) was silently ignored. Now each ``[backends.NAME]`` table of kind ``flux`` is
structured into FluxOptions when the config file is loaded: an unknown key or a wrong value
is one ConfigError naming the file, the table and the key (exit 78 from any command). The
messages below are written by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hpcstate import ConfigError
from hpcstate.backend import BackendConfig
from hpcstate.config import parse_config
from hpcstate_flux import BACKEND, FluxDialect, FluxOptions
from hpcstate_flux._io import FluxBackend

PATH = "/home/alice/.config/hpcstate/config.toml"
KNOWN = (
    "client_keys, connect_timeout, find_limit, flux, jump_host, known_hosts, ssh_port, "
    "ssh_user, timeout, uri"
)


def _load(table: str) -> BackendConfig:
    text = f'[backends.cluster]\nkind = "flux"\n{table}'
    return parse_config(text, env={"HOME": "/home/alice"}, path=PATH).backend("cluster")


def test_the_backend_declares_its_options_record() -> None:
    assert BACKEND.options_type is FluxOptions
    # today's names and defaults
    assert FluxOptions().dialect() == FluxDialect()
    assert FluxOptions().dialect() == FluxDialect(
        flux="flux", uri=None, timeout=60.0, find_limit=1000
    )


def test_an_unknown_key_is_refused_when_the_file_is_loaded() -> None:
    with pytest.raises(ConfigError) as info:
        _load("timout = 5\n")
    assert str(info.value) == (
        f"{PATH}: [backends.cluster]: timout: unknown option; known options: {KNOWN}"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('timeout = "5"\n', "timeout: expected a number, got string '5'"),
        ("timeout = true\n", "timeout: expected a number, got boolean True"),
        ("timeout = 0\n", "timeout: must be > 0 (seconds), got 0.0"),
        ("find_limit = 0\n", "find_limit: must be >= 1, got 0"),
        ("find_limit = 1.5\n", "find_limit: expected an integer, got float 1.5"),
        ("flux = 7\n", "flux: expected a string, got integer 7"),
        ("uri = []\n", "uri: expected a string, got array []"),
    ],
)
def test_a_wrong_value_names_the_key(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(line)
    assert str(info.value) == f"{PATH}: [backends.cluster]: {message}"


def test_good_options_and_the_ssh_keys_load() -> None:
    config = _load(
        'host = "alice@login"\nflux = "/opt/flux/bin/flux"\nuri = "local:///run/flux/local"\n'
        'timeout = 5\nfind_limit = 50\nknown_hosts = "~/.ssh/known_hosts"\nconnect_timeout = 10\n'
        'client_keys = ["~/.ssh/id_ed25519"]\nssh_port = 2222\n'
    )
    assert config.host == "alice@login"
    made = FluxBackend.from_config(BackendConfig(name="cluster", kind="flux", options={
        k: v for k, v in config.options.items() if k not in ("known_hosts", "client_keys",
                                                               "ssh_port", "connect_timeout")
    }))  # fmt: skip
    assert made._dialect == FluxDialect(
        flux="/opt/flux/bin/flux", uri="local:///run/flux/local", timeout=5.0, find_limit=50
    )


def test_making_the_backend_refuses_an_unknown_key_naming_the_backend() -> None:
    with pytest.raises(ConfigError) as info:
        BACKEND.make_backend(BackendConfig(name="cluster", kind="flux", options={"urii": "x"}))
    assert str(info.value) == f"backend 'cluster': urii: unknown option; known options: {KNOWN}"


def test_the_cli_exits_78_naming_the_file_and_the_key(tmp_path: Path) -> None:
    script = shutil.which("hpcstate")
    assert script is not None, "the hpcstate console script is not installed (pip install -e .)"
    config = tmp_path / "config.toml"
    config.write_text('[backends.cluster]\nkind = "flux"\nfind_limt = 10\n', encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HPCSTATE_")},
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "HPCSTATE_CONFIG": str(config),
        "HPCSTATE_DB": str(tmp_path / "state.db"),
    }
    done = subprocess.run(
        [script, "list"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 78, done.stderr
    assert done.stderr == (
        f"hpcstate: error: {config}: [backends.cluster]: find_limt: unknown option; "
        f"known options: {KNOWN}\n"
    )


def test_the_documented_example_configures_what_it_says() -> None:
    # docs/backends/flux.md had `options = { flux = ..., uri = ... }`: a key named
    # "options", silently ignored (the backend ran with no uri); now it would be refused.
    import re

    doc = Path(__file__).resolve().parents[2] / "docs" / "backends" / "flux.md"
    match = re.search(r"```toml\n(.*?)```", doc.read_text(encoding="utf-8"), re.DOTALL)
    assert match is not None
    config = parse_config(match.group(1), env={"HOME": "/home/alice"}, path=PATH)
    backend = config.backend("cluster")
    assert (backend.kind, backend.host) == ("flux", "user@login")
    dialect = FluxOptions(**backend.options).dialect()
    assert (dialect.uri, dialect.timeout) == ("ssh://login/run/flux/local", 60.0)
