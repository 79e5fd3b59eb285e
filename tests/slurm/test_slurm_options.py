"""Typed Slurm options (issue 15): a ``[backends.NAME]`` table of kind slurm is the record
SlurmOptions, with today's names and defaults; a wrong type, an unknown key or an
impossible value is refused when the configuration is read, naming the key, instead of
surfacing later as "backend unreachable"."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from hpcstate import ConfigError
from hpcstate.backend import BackendConfig, JobSpec
from hpcstate_slurm import BACKEND, SlurmOptions, SlurmVersion
from hpcstate_slurm._io import SlurmBackend


def _make(**options: object) -> SlurmBackend:
    backend = BACKEND.make_backend(BackendConfig(name="hpc", kind="slurm", options=options))
    assert isinstance(backend, SlurmBackend)
    return backend


def test_the_backend_declares_its_options_record() -> None:
    assert BACKEND.options_type is SlurmOptions


def test_the_defaults_are_todays() -> None:
    options = SlurmOptions()
    assert options.slurm_version is None
    assert options.command_timeout == 60.0
    assert options.accounting_margin_s == 600.0
    assert options.accounting_margin == timedelta(minutes=10)
    assert options.retries == 3
    assert options.self_report_wrapper is True
    backend = _make()
    assert backend.version is None  # detected at the first call
    assert backend.reports_itself(JobSpec(command=["true"]))


async def test_given_options_reach_the_dialect() -> None:
    backend = _make(slurm_version="22.05.8", command_timeout=5, accounting_margin_s=30.5, retries=0)
    assert backend.version == SlurmVersion(major=22, minor=5, micro=8)
    dialect = await backend.dialect()  # no command: the release was given
    assert dialect.timeout == 5.0
    assert dialect.accounting_margin == timedelta(seconds=30.5)
    assert (await backend.backend()).retries == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"accounting_margin_s": "x"},
            "backend 'hpc': accounting_margin_s: expected a number, got string 'x'",
        ),
        ({"retries": 1.5}, "backend 'hpc': retries: expected an integer, got float 1.5"),
        ({"retries": -1}, "backend 'hpc': retries: must be >= 0, got -1"),
        ({"command_timeout": -5}, "backend 'hpc': command_timeout: must be >= 0, got -5"),
        ({"slurm_version": 22.05}, "backend 'hpc': slurm_version: expected a string"),
        (
            {"slurm_version": "banana"},
            "backend 'hpc': slurm_version: expected a Slurm release like '22.05.8', got 'banana'",
        ),
        (
            {"slurm_version": "20.11.9"},
            "backend 'hpc': slurm_version: Slurm 20.11.9 is older than the oldest "
            "supported release 21.08.0",
        ),
        ({"self_report_wrapper": "no"}, "backend 'hpc': self_report_wrapper: expected a boolean"),
        ({"acounting_margin_s": 5}, "backend 'hpc': acounting_margin_s: unknown option"),
    ],
)
def test_a_wrong_option_is_refused_naming_it(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _make(**options)
    assert str(raised.value).startswith(message), str(raised.value)


def test_an_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as raised:
        _make(slurm_verison="22.05.8")
    text = str(raised.value)
    for known in ("accounting_margin_s", "command_timeout", "retries", "slurm_version"):
        assert known in text


def test_the_ssh_runner_keys_are_accepted() -> None:
    options = SlurmOptions(ssh_port=2222, ssh_user="u", known_hosts="/k", client_keys=("/a",))
    assert options.ssh_port == 2222
    config = BackendConfig(
        name="hpc", kind="slurm", host="u@login:2222", options={"known_hosts": "/dev/null"}
    )
    pytest.importorskip("asyncssh")
    assert isinstance(BACKEND.make_backend(config), SlurmBackend)


def test_self_report_wrapper_off_for_the_backend_a_job_may_turn_it_on() -> None:
    backend = _make(slurm_version="22.05.8", self_report_wrapper=False)
    assert not backend.reports_itself(JobSpec(command=["true"]))
    on = JobSpec(command=["true"], options={"self_report_wrapper": True})
    assert backend.reports_itself(on)


async def test_self_report_wrapper_off_sends_the_command_exec_d() -> None:
    off = await _make(slurm_version="22.05.8", self_report_wrapper=False).dialect()
    default = await _make(slurm_version="22.05.8").dialect()
    env = {"HPCSTATE_REPORT_FILE": "/tmp/r.json", "HPCSTATE_RUN_ID": "run"}
    spec = JobSpec(command=["true"], environment=env)
    assert (
        off.submit_command(spec).stdin
        == default.submit_command(
            JobSpec(command=["true"], environment=env, options={"self_report_wrapper": False})
        ).stdin
    )
    assert off.submit_command(spec).stdin != default.submit_command(spec).stdin


# -- read with the configuration file ---------------------------------------------------


def test_the_config_file_is_checked_against_slurm_options() -> None:
    from hpcstate.config import parse_config

    path = "/etc/hpc/config.toml"
    with pytest.raises(ConfigError) as raised:
        parse_config('[backends.hpc]\nkind = "slurm"\nretries = "3"\n', env={}, path=path)
    assert str(raised.value) == (
        f"{path}: [backends.hpc]: retries: expected an integer, got string '3'"
    )
    with pytest.raises(ConfigError, match=r"\[backends.slurm\]: partition: unknown option"):
        parse_config('[backends.slurm]\npartition = "debug"\n', env={}, path=path)
    good = parse_config(
        '[backends.hpc]\nkind = "slurm"\nslurm_version = "22.05.8"\nself_report_wrapper = false\n'
        'host = "u@login"\nknown_hosts = "/k"\n',
        env={},
        path=path,
    )
    assert good.backend("hpc").options == {
        "slurm_version": "22.05.8",
        "self_report_wrapper": False,
        "known_hosts": "/k",
    }


def test_a_wrong_slurm_option_is_exit_78_before_any_command(tmp_path: Path) -> None:
    script = shutil.which("hpcstate")
    assert script is not None, "the hpcstate console script is not installed (pip install -e .)"
    config = tmp_path / "config.toml"
    config.write_text('[backends.hpc]\nkind = "slurm"\ncommand_timeout = "1m"\n')
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "HPCSTATE_CONFIG": str(config),
        "HPCSTATE_DB": str(tmp_path / "state.db"),
    }
    done = subprocess.run(
        [script, "list"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 78, done.stderr
    assert done.stderr == (
        f"hpcstate: error: {config}: [backends.hpc]: command_timeout: expected a number, "
        "got string '1m'\n"
    )
