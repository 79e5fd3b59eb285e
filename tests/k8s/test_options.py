"""The k8s backend's options as one typed record (issue 15): K8sOptions.

A wrong or unknown key in ``[backends.NAME]`` is refused when the config file is loaded,
naming the file and the key, before any backend is made (until this, the options were a
plain dict checked by hand when the backend was made, and the submit defaults only at
the first submit). The expected messages and values here are written by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from hpcstate import ConfigError
from hpcstate.config import parse_config
from hpcstate.options import structure_options
from hpcstate_k8s import BACKEND, K8sOptions
from hpcstate_k8s._manifest import SUBMIT_OPTIONS

#: Today's option names, exactly (docs/backends/k8s.md, "Options").
NAMES = {
    "kubeconfig",
    "context",
    "in_cluster",
    "service_account_dir",
    "propagation_policy",
    "request_timeout_s",
    "watch_timeout_s",
    "retry_initial_s",
    "retry_max_s",
    "namespace",
    "image",
    "name",
    "labels",
    "wrapper",
    "wrapper_command",
    "backoff_limit",
    "ttl_seconds_after_finished",
    "service_account",
    "container",
    "image_pull_policy",
    "manifest",
}


def test_the_record_has_todays_names_and_defaults() -> None:
    assert BACKEND.options_type is K8sOptions
    assert {f.name for f in attrs.fields(K8sOptions)} == NAMES
    assert SUBMIT_OPTIONS <= NAMES  # every submit option can be a backend default
    options = K8sOptions()
    assert (options.propagation_policy, options.in_cluster) == ("Foreground", False)
    assert (options.request_timeout_s, options.watch_timeout_s) == (30.0, 290.0)
    assert (options.retry_initial_s, options.retry_max_s) == (0.5, 30.0)
    assert options.submit_defaults() == {}  # nothing set: resolve_settings' own defaults


def test_a_table_structures_into_the_record() -> None:
    options = structure_options(
        K8sOptions,
        {
            "kubeconfig": "/k",
            "in_cluster": False,
            "watch_timeout_s": 60,  # an integer is a number of seconds
            "labels": {"team": "a"},
            "wrapper": True,
            "wrapper_command": ["python3", "-m", "w"],
            "backoff_limit": 2,
            "image": "busybox",
        },
        where="backend 'k8s'",
    )
    assert options.watch_timeout_s == 60.0
    assert options.watch_timeout_whole_s == 60
    assert options.submit_defaults() == {
        "backoff_limit": 2,
        "image": "busybox",
        "labels": {"team": "a"},
        "wrapper": True,
        "wrapper_command": ("python3", "-m", "w"),
    }


def _load(table: str) -> None:
    text = f'[backends.cluster]\nkind = "k8s"\n{table}\n'
    parse_config(text, env={}, path="/etc/hpcstate.toml", installed=["k8s"])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        # unknown keys, a typo of a submit default among them
        ('imgae = "busybox"', "[backends.cluster]: imgae: unknown option; known options: "),
        ('options = { kubeconfig = "x" }', "[backends.cluster]: options: unknown option"),
        # wrong types: each says what was expected and what was given
        ('request_timeout_s = "x"', "request_timeout_s: expected a number, got string 'x'"),
        ('in_cluster = "yes"', "in_cluster: expected a boolean (true or false), got string"),
        ("context = 3", "context: expected a string, got integer 3"),
        ('backoff_limit = "many"', "backoff_limit: expected an integer, got string 'many'"),
        ('propagation_policy = "Orphan"', "propagation_policy: expected one of 'Foreground'"),
        ('image_pull_policy = "Sometimes"', "image_pull_policy: expected one of 'Always'"),
        # ranges, and the submit defaults' own rules
        ("retry_max_s = 0", "retry_max_s: must be > 0, got 0"),
        ("watch_timeout_s = -5.0", "watch_timeout_s: must be > 0, got -5.0"),
        ("backoff_limit = -1", "'backoff_limit' must be >= 0, got -1"),
        ('labels = "team"', "'labels': expected KEY=VALUE, got 'team'"),
        ('name = "Not_A_Name"', "'name': 'Not_A_Name' is not a valid Job name"),
        ("wrapper_command = []", "'wrapper_command' is empty"),
    ],
)
def test_config_load_refuses_a_wrong_or_unknown_key_naming_file_and_key(
    table: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(table)
    text = str(caught.value)
    assert text.startswith("/etc/hpcstate.toml: [backends.cluster]: "), text
    assert message in text, text
    assert "\n" not in text


def test_a_good_table_loads() -> None:
    _load(
        'kubeconfig = "~/.kube/config"\ncontext = "prod"\nnamespace = "batch"\n'
        'image = "python:3.12-slim"\nwrapper = true\nlabels = "team=a,tier=batch"\n'
        'propagation_policy = "Background"\nrequest_timeout_s = 10\nbackoff_limit = 3'
    )


def test_make_backend_structures_the_options_too() -> None:
    # A library caller (Tracker(backends=...)) passes no config file: the same record.
    from hpcstate.backend import BackendConfig

    config = BackendConfig(name="cluster", kind="k8s", options={"retry_max_s": "soon"})
    with pytest.raises(ConfigError, match=r"^backend 'cluster': retry_max_s: expected a number"):
        BACKEND.make_backend(config)


def test_the_cli_exits_78_naming_the_file_and_key(tmp_path: Path) -> None:
    # `list` makes no backend: the table is refused because the file is loaded.
    config = tmp_path / "config.toml"
    config.write_text('[backends.cluster]\nkind = "k8s"\nwatch_timeout_s = "5m"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCSTATE_")}
    argv = [sys.executable, "-m", "hpcstate", "--config", str(config)]
    argv += ["--db", str(tmp_path / "db"), "list"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 78, proc.stderr
    assert f"{config}: [backends.cluster]: watch_timeout_s: expected a number" in proc.stderr
