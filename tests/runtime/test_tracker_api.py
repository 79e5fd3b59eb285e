"""The Python API as docs/concepts/runtime.md promises it (issue 18): every call of
Tracker on SyncTracker (watch as a blocking iterator), Tracker.from_config reading the
file the ``hpcstate`` command reads. Real local jobs, real SQLite files, real TOML."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from hpcstate import ConfigError, ExitStatus, Finished, State
from hpcstate.backend import BackendConfig, JobSpec
from hpcstate.runtime import StoreError, SyncTracker, Tracker
from hpcstate.runtime.local import LocalBackend


def test_sync_tracker_has_every_call_of_the_tracker() -> None:
    public = {n for n in dir(Tracker) if not n.startswith("_")}
    asynchronous_only = {"aclose"}  # SyncTracker.close, and the with block
    missing = sorted(n for n in public - asynchronous_only if not hasattr(SyncTracker, n))
    assert missing == []


def test_sync_watch_is_a_blocking_iterator_to_the_verdict(db_path: Path, tmp_path: Path) -> None:
    config = BackendConfig(name="here", kind="local", options={"root": str(tmp_path / "jobs")})
    with SyncTracker(store=db_path, fast_interval=0.05) as tracker:
        tracker.add_backend("here", config)  # a BackendConfig, made on first use
        made = tracker.backend("here")
        assert isinstance(made, LocalBackend)
        assert made.root == tmp_path / "jobs"
        run = tracker.submit(JobSpec(command=["sh", "-c", "sleep 0.2; exit 4"]), backend="here")
        events = list(tracker.watch(run.id))
        assert tracker.backend_status("here").reachable
        assert tracker.next_interval() > 0
        done = tracker.get_run(run.id)
    assert isinstance(events[-1], Finished)
    assert [e.state for e in events][-1] is State.FAILED
    assert [e.version for e in events] == sorted({e.version for e in events})
    (item,) = done.items
    assert item.exit == ExitStatus.exited(4)
    assert item.confirmed
    with pytest.raises(StoreError, match="closed"):
        tracker.get_run(run.id)


def test_leaving_a_sync_watch_early_unsubscribes(db_path: Path, local: LocalBackend) -> None:
    with SyncTracker(store=db_path, backends={"local": local}, fast_interval=0.05) as tracker:
        run = tracker.submit(JobSpec(command=["sleep", "30"]))
        for _event in tracker.watch(run.id):
            break  # the first (replayed) event is enough
        assert tracker.tracker._bus.watchers == []
        tracker.cancel(run.id)
        done = tracker.wait(run.id, timeout=30)
    assert done.items[0].state is State.CANCELLED


def test_an_unknown_run_id_raises_store_error(db_path: Path) -> None:
    with SyncTracker(store=db_path, start=False) as tracker:
        with pytest.raises(StoreError, match="no run with id 'nope'"):
            tracker.get_run("nope")
        with pytest.raises(StoreError, match="no run with id 'nope'"):
            tracker.cancel("nope")


def _write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


async def test_from_config_reads_the_cli_file(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    database = tmp_path / "state" / "runs.db"
    path = _write_config(
        tmp_path,
        f'default_backend = "mine"\ndatabase = "{database}"\n'
        f'[backends.mine]\nkind = "local"\nroot = "{jobs}"\nkill_grace = 0.5\n'
        '[tracker]\ngrace = "5m"\nfast_interval = "0.1s"\nqueue_interval = "2m"\n',
    )
    tracker = Tracker.from_config(path, env={})
    async with tracker:
        assert tracker.grace == timedelta(minutes=5)
        assert tracker.fast_interval == pytest.approx(0.1)
        assert tracker.queue_interval == pytest.approx(120.0)
        assert tracker.default_backend == "mine"
        assert tracker.store.path == database
        run = await tracker.submit(JobSpec(command=["true"]))  # no backend named
        done = await tracker.wait(run.id, timeout=30)
    assert done.backend == "mine"
    assert done.items[0].state is State.COMPLETED
    assert [d.name for d in jobs.iterdir() if d.name != "tags"] == [done.items[0].native_id]


def test_from_config_follows_the_environment_and_arguments_win(tmp_path: Path) -> None:
    path = _write_config(tmp_path, '[tracker]\ngrace = "5m"\n')
    env = {"HPCSTATE_CONFIG": str(path), "HPCSTATE_DB": str(tmp_path / "env.db")}
    with SyncTracker.from_config(env=env, start=False, grace=timedelta(seconds=7)) as tracker:
        assert tracker.tracker.grace == timedelta(seconds=7)
        assert tracker.store.path == tmp_path / "env.db"
        assert tracker.default_backend == "local"


def test_from_config_refuses_a_wrong_key_naming_file_and_key(tmp_path: Path) -> None:
    path = _write_config(tmp_path, '[tracker]\ngrase = "5m"\n')
    with pytest.raises(ConfigError, match=r"config\.toml: tracker\.grase: unknown key"):
        Tracker.from_config(path, env={})


async def test_a_backend_breaking_its_declaration_is_refused_when_added(tmp_path: Path) -> None:
    from hpcstate.backend import BackendContractError, Capabilities

    class Pushless:
        name = "pushless"
        capabilities = Capabilities(push=True)  # declares push, has no watch()

    with pytest.raises(BackendContractError, match=r"push=True.*watch"):
        Tracker(store=tmp_path / "s.db", backends={"p": Pushless()})  # type: ignore[dict-item]
    tracker = Tracker(store=tmp_path / "t.db")
    try:
        with pytest.raises(BackendContractError, match=r"push=True.*watch"):
            tracker.add_backend("p", Pushless())  # type: ignore[arg-type]
    finally:
        await tracker.aclose()
