"""A damaged store: real SQLite files, damaged row by row and byte by byte.

Promises under test: a damaged row is named (CorruptRow, one plain sentence) and never
hides the others; a damaged file is a StoreError naming the file; no other exception
ever escapes (no UnicodeDecodeError, no sqlite3.DatabaseError); and opening and reading
a damaged store loses nothing that was readable.
"""

from __future__ import annotations

import contextlib
import io
import random
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import hpcstate as h
from hpcstate import Run, State
from hpcstate.cli import run_cli
from hpcstate.runtime import CorruptRow, Store, StoreError
from hpcstate.runtime._store import Change

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def _run(run_id: str, count: int = 2) -> Run:
    items = [
        h.new_item(id=f"{run_id}.{i}", run_id=run_id, backend="local", now=T0, array_index=i)
        for i in range(count)
    ]
    return Run(id=run_id, backend="local", name=f"job {run_id}", created_at=T0, items=items)


def _fill(path: Path, runs: int) -> None:
    """``runs`` runs of two items; the even ones queued (with events), a self-report."""
    with Store(path) as store:
        for n in range(runs):
            store.create_run(_run(f"r{n:03d}"))
            if n % 2 == 0:
                item = store.get_item(f"r{n:03d}.0")
                step = h.submitted(item, native_id=str(1000 + n), at=T0 + timedelta(seconds=n))
                store.commit([Change(item=step.item, expected_version=0, events=step.events)])
        store.add_self_report(run_id="r000", item_id="r000.0", reported_at=T0, doc={"exit": 0})


def _bad_text(path: Path, sql: str) -> None:
    """Run ``sql`` with plain sqlite3 (it writes bytes that are not UTF-8 as TEXT)."""
    with sqlite3.connect(path) as db:
        db.execute(sql)
    db.close()


def test_invalid_utf8_in_a_run_name_names_that_run_and_lists_the_others(db_path: Path) -> None:
    _fill(db_path, 3)
    _bad_text(db_path, "UPDATE runs SET name = CAST(X'6a6f62ff' AS TEXT) WHERE id = 'r001'")
    with Store(db_path) as store:
        summaries = store.list_runs()
        assert sorted(s.id for s in summaries) == ["r000", "r001", "r002"]
        damaged = next(s for s in summaries if s.id == "r001")
        assert damaged.name == "job\\xff"  # printable, the bad byte shown
        assert damaged.damage == "its name column holds bytes that are not valid UTF-8 text"
        with pytest.raises(CorruptRow) as info:
            store.get_run("r001")
        assert (info.value.table, info.value.row_id) == ("runs", "r001")
        assert "not valid UTF-8" in str(info.value)
        assert [i.id for i in store.get_run("r000").items] == ["r000.0", "r000.1"]
        assert store.get_run("r002").items[0].native_id == "1002"


def test_invalid_utf8_in_an_item_document_names_the_item(db_path: Path) -> None:
    _fill(db_path, 2)
    _bad_text(
        db_path,
        "UPDATE items SET doc = CAST(X'7b22ff22' AS TEXT) WHERE id = 'r000.1'",
    )
    _bad_text(db_path, "UPDATE events SET doc = CAST(X'ff' AS TEXT) WHERE item_id = 'r000.0'")
    with Store(db_path) as store:
        assert store.last_sweep is not None
        assert store.last_sweep.corrupt == ("r000.1",)
        with pytest.raises(CorruptRow) as info:
            store.get_run("r000")
        assert (info.value.table, info.value.row_id) == ("items", "r000.1")
        assert "its document column holds bytes that are not valid UTF-8 text" in str(info.value)
        good, bad = store.active_items()
        assert [r.item.id for r in good] == ["r000.0", "r001.0", "r001.1"]
        assert [b.row_id for b in bad] == ["r000.1"]
        assert store.get_run("r001").items[1].id == "r001.1"
        with pytest.raises(CorruptRow, match="table 'events'"):
            store.events(run_id="r000")
        assert store.events(run_id="r000", skip_corrupt=True) == []


def test_invalid_utf8_in_an_item_id_is_named_and_does_not_break_lookups(db_path: Path) -> None:
    _fill(db_path, 2)
    _bad_text(db_path, "UPDATE items SET id = CAST(X'7230ff' AS TEXT) WHERE id = 'r001.1'")
    with Store(db_path) as store:
        versions = store.active_versions()
        assert "r001.0" in versions
        good, bad = store.items_by_id(versions)
        assert "r001.0" in [r.item.id for r in good]
        assert [b.row_id for b in bad] == ["r0\\xff"]
        assert store.versions_of(list(versions))["r001.0"] == 0


def test_cli_list_shows_every_readable_run_and_exits_65(db_path: Path, tmp_path: Path) -> None:
    _fill(db_path, 3)
    _bad_text(db_path, "UPDATE runs SET name = CAST(X'ff1b5b324a' AS TEXT) WHERE id = 'r001'")
    env = {"HPCSTATE_DB": str(db_path), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    for args in (["list", "--cached"], ["list", "--cached", "--json"]):
        out, err = io.StringIO(), io.StringIO()
        code = run_cli(args, env=env, stdout=out, stderr=err, tty=False)
        assert code == 65, (args, out.getvalue(), err.getvalue())
        assert "r000" in out.getvalue()
        assert "r002" in out.getvalue()
        assert "r001" in err.getvalue()
        assert "Traceback" not in err.getvalue()


def test_a_damaged_file_header_is_a_store_error_naming_the_file(db_path: Path) -> None:
    _fill(db_path, 2)
    data = bytearray(db_path.read_bytes())
    data[0:16] = b"not sqlite here!"
    db_path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="not a usable hpcstate database") as info:
        Store(db_path)
    assert str(db_path) in str(info.value)


def test_a_damaged_table_page_is_a_store_error_naming_the_file(db_path: Path) -> None:
    _fill(db_path, 40)
    with sqlite3.connect(db_path) as db:
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    data = bytearray(db_path.read_bytes())
    start = (root - 1) * page_size
    data[start : start + 64] = bytes(range(200, 255)) + bytes(9)  # not a b-tree page
    db_path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as info, Store(db_path) as store:
        store.list_runs()
    assert type(info.value) is StoreError
    assert str(db_path) in str(info.value)
    assert "damaged" in str(info.value)


# -- random damage ---------------------------------------------------------------------


def _readable(path: Path) -> dict[str, Run] | None:
    """Everything hpcstate can read of ``path``: run id -> run (None: it cannot be
    opened). Fails the test if anything but a StoreError escapes."""
    problems: list[StoreError] = []
    try:
        store = Store(path)
    except StoreError as exc:
        problems.append(exc)
        store = None
    runs: dict[str, Run] = {}
    if store is None:
        assert not isinstance(problems[0], CorruptRow)
        assert str(path) in str(problems[0]), problems[0]
        return None
    with store:
        summaries = []
        try:
            summaries = store.list_runs()
        except StoreError as exc:
            problems.append(exc)
        for summary in summaries:
            with contextlib.suppress(StoreError):
                runs[summary.id] = store.get_run(summary.id)
        for call in (
            lambda: store.events(skip_corrupt=True),
            store.active_items,
            store.open_self_reports,
            lambda: store.unconfirmed_verdicts(T0 - timedelta(days=1)),
            lambda: store.items_by_id(store.active_versions()),
            store.sweep,
        ):
            with contextlib.suppress(StoreError):
                call()
    for problem in problems:
        assert isinstance(problem, CorruptRow) or str(path) in str(problem), problem
    return runs


@pytest.mark.parametrize("seed", range(60))
def test_random_byte_damage_never_escapes_and_loses_nothing_readable(
    tmp_path: Path, seed: int
) -> None:
    pristine = tmp_path / "pristine.db"
    _fill(pristine, 30)
    data = bytearray(pristine.read_bytes())
    rng = random.Random(seed)
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(data))
        data[at] = rng.randrange(256)
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(bytes(data))
    first = _readable(damaged)
    second = _readable(damaged)
    if first is None:
        return
    assert second is not None, "the store could be opened once, and not again"
    for run_id, run in first.items():
        assert second.get(run_id) == run, f"run {run_id} was readable, then was not"


def test_random_damage_leaves_most_runs_readable(tmp_path: Path) -> None:
    """The test above must not pass only because every damaged file is refused whole."""
    pristine = tmp_path / "pristine.db"
    _fill(pristine, 30)
    readable = 0
    for seed in range(20):
        data = bytearray(pristine.read_bytes())
        rng = random.Random(seed)
        at = rng.randrange(len(data))
        data[at] ^= 0xFF
        damaged = tmp_path / f"damaged{seed}.db"
        damaged.write_bytes(bytes(data))
        runs = _readable(damaged)
        readable += len(runs or {})
    assert readable >= 20 * 30 * 3 // 4, readable


def test_damaged_copy_does_not_touch_the_pristine_file(tmp_path: Path) -> None:
    pristine = tmp_path / "pristine.db"
    _fill(pristine, 3)
    copy = tmp_path / "copy.db"
    shutil.copy(pristine, copy)
    assert _readable(copy) == _readable(pristine)
    with Store(pristine) as store:
        assert store.get_run("r002").items[0].state is State.QUEUED
