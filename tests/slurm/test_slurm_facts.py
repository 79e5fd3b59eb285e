"""Shared facts (issue 16, lease facts): the Slurm backend publishes the release it
detected (``facts()``), and a backend that adopts it (the next lease holder, from the
store) runs no ``sbatch --version``: its first queue call is the squeue alone."""

from __future__ import annotations

import pytest
from slurm_live import cluster_status

from hpcstate.backend import (
    BackendConfig,
    Command,
    CommandResult,
    Runner,
    SharesFacts,
    abilities,
)
from hpcstate.testing import FakeRunner
from hpcstate_slurm import BACKEND, CAPABILITIES, SlurmVersion
from hpcstate_slurm._io import SlurmBackend

SQUEUE_EMPTY = CommandResult(argv=("squeue",), returncode=0, stdout="")
VERSION_22 = CommandResult(argv=("sbatch",), returncode=0, stdout="slurm 22.05.8\n")


def _runner() -> FakeRunner:
    return FakeRunner({("squeue", "**"): SQUEUE_EMPTY, ("sbatch", "--version"): VERSION_22})


def _backend(runner: Runner) -> SlurmBackend:
    return SlurmBackend(name="slurm", runner=runner, capabilities=CAPABILITIES)


def test_slurm_declares_shared_facts() -> None:
    assert CAPABILITIES.shares_facts
    backend = _backend(_runner())
    assert isinstance(backend, SharesFacts)
    assert abilities(backend).facts is backend


async def test_without_facts_the_first_queue_call_asks_the_version_first() -> None:
    runner = _runner()
    backend = _backend(runner)
    assert backend.facts() == {}
    (obs,) = await backend.queue(["41"])
    assert obs.absence is not None
    assert [argv[:2] for argv in runner.argvs] == [("sbatch", "--version"), ("squeue", "-h")]
    assert backend.facts() == {"slurm_version": "22.05.8"}


async def test_an_adopted_version_skips_sbatch_version() -> None:
    runner = _runner()
    backend = _backend(runner)
    backend.adopt_facts({"slurm_version": "22.05.8", "some_other_fact": "x"})
    assert backend.version == SlurmVersion(major=22, minor=5, micro=8)
    await backend.queue(["41"])
    assert runner.count("sbatch") == 0
    assert [argv[0] for argv in runner.argvs] == ["squeue"]
    # 22.05's dialect: squeue's exit_code read as a raw wait status
    assert (await backend.dialect()).behaviour.squeue_exit_code_is_wait_status
    assert backend.facts() == {"slurm_version": "22.05.8"}


async def test_the_adopted_release_picks_the_dialect() -> None:
    backend = _backend(_runner())
    backend.adopt_facts({"slurm_version": "26.05.3"})
    dialect = await backend.dialect()
    assert not dialect.behaviour.squeue_exit_code_is_wait_status
    assert not dialect.behaviour.sacct_exit_high_codes_lossy


@pytest.mark.parametrize(
    "facts",
    [
        {},
        {"slurm_version": "banana"},
        {"slurm_version": ""},
        {"slurm_version": "20.11.9"},  # older than the oldest supported release
        {"slurm_version": "22.05.8; rm -rf"},
        {"slurm_version": 22},
        {"slurm_version": None},
        {"version": "22.05.8"},
    ],
)
async def test_a_bad_fact_is_not_adopted_and_never_raises(facts: dict[str, object]) -> None:
    runner = _runner()
    backend = _backend(runner)
    backend.adopt_facts(facts)  # type: ignore[arg-type]
    assert backend.version is None
    assert backend.facts() == {}
    await backend.queue(["41"])
    assert runner.count("sbatch") == 1  # asked, as without facts


async def test_a_known_release_is_not_replaced() -> None:
    runner = _runner()
    backend = _backend(runner)
    await backend.queue(["41"])  # detects 22.05.8
    backend.adopt_facts({"slurm_version": "26.05.3"})
    assert backend.facts() == {"slurm_version": "22.05.8"}
    configured = SlurmBackend(
        name="slurm",
        runner=_runner(),
        capabilities=CAPABILITIES,
        version=SlurmVersion(major=23, minor=2, micro=7),
    )
    configured.adopt_facts({"slurm_version": "26.05.3"})
    assert configured.facts() == {"slurm_version": "23.02.7"}


# -- the real 22.05 cluster --------------------------------------------------------------


class _Counting:
    """The real runner, counting what it runs."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.argvs: list[tuple[str, ...]] = []

    async def run(self, command: Command) -> CommandResult:
        self.argvs.append(tuple(command.argv))
        return await self.inner.run(command)

    async def close(self) -> None:
        await self.inner.close()


@pytest.mark.slurm
async def test_on_the_real_cluster_the_next_holder_runs_no_sbatch_version() -> None:
    reason = cluster_status()
    if reason is not None:
        pytest.skip(reason)
    config = BackendConfig(name="slurm", kind="slurm")
    first, second = BACKEND.make_backend(config), BACKEND.make_backend(config)
    assert isinstance(first, SlurmBackend)
    assert isinstance(second, SlurmBackend)
    first.runner = one = _Counting(first.runner)
    second.runner = two = _Counting(second.runner)
    try:
        await first.queue(["1"])
        assert one.argvs[0] == ("sbatch", "--version")
        facts = first.facts()
        assert facts["slurm_version"].startswith("22.05.")
        second.adopt_facts(facts)
        (obs,) = await second.queue(["1"])
        assert obs.native_id == "1"
        assert [argv[0] for argv in two.argvs] == ["squeue"]
        assert second.facts() == facts
    finally:
        await first.close()
        await second.close()
