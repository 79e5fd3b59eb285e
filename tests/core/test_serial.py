"""Stored documents: versioned, round-trip, old ones load forever."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hpcstate as h
from hpcstate import serial
from hpcstate.serial import SCHEMA_VERSION

from .builders import at, obs, running, settling

SCHEMA_DIR = Path(__file__).parent.parent / "schema"


def sample_items() -> list[h.RunItem]:
    failed = h.advance(
        running(),
        obs(
            5,
            h.State.FAILED,
            source=h.Source.ACCOUNTING,
            final=True,
            stats=h.JobStats(
                exit=h.ExitStatus.from_slurm("9:0", high_codes_lossy=True),
                derived_exit=h.ExitStatus.killed(11, core_dumped=True),
                reason=h.parse_slurm_reason("CANCELLED by 0"),
                elapsed_s=0.0,
                max_rss_bytes=0,
                nodes=("node1", "node2"),
                finished_at=at(4),
            ),
        ),
    ).item
    return [running(), settling(), failed, h.tick(settling(), now=at(5000)).item]


@pytest.mark.parametrize("index", range(4))
def test_items_round_trip(index: int) -> None:
    item = sample_items()[index]
    document = serial.item_to_dict(item)
    assert document["schema"] == SCHEMA_VERSION
    assert serial.item_from_dict(json.loads(json.dumps(document))) == item


def test_zero_and_none_are_kept_apart() -> None:
    failed = sample_items()[2]
    document = serial.item_to_dict(failed)
    assert document["stats"]["elapsed_s"] == 0.0
    assert document["stats"]["cpu_time_s"] is None
    loaded = serial.item_from_dict(document)
    assert loaded.stats.elapsed_s == 0.0
    assert loaded.stats.cpu_time_s is None


def test_missing_fields_take_their_defaults_and_unknown_keys_are_ignored() -> None:
    document = serial.item_to_dict(running())
    del document["markers"]
    del document["stats"]["nodes"]
    document["a_field_from_the_future"] = 1
    loaded = serial.item_from_dict(document)
    assert loaded.markers == ()
    assert loaded.stats.nodes == ()


def test_bad_documents_raise_schema_error_naming_the_field() -> None:
    document = serial.item_to_dict(running())
    document["state"] = "exploded"
    with pytest.raises(h.SchemaError, match="state"):
        serial.item_from_dict(document)
    with pytest.raises(h.SchemaError, match="schema"):
        serial.item_from_dict({"id": "x"})
    with pytest.raises(h.SchemaError, match="never released"):
        serial.item_from_dict({**serial.item_to_dict(running()), "schema": 0})
    naive = serial.item_to_dict(running())
    naive["created_at"] = "2026-01-01T00:00:00"
    with pytest.raises(h.SchemaError, match="offset"):
        serial.item_from_dict(naive)


def test_events_round_trip_through_their_tag() -> None:
    step = h.advance(running(), obs(9, h.State.TIMEOUT))
    (event,) = step.events
    document = serial.event_to_dict(event)
    assert document["type"] == "finished"
    assert serial.event_from_dict(document) == event


def test_runs_round_trip() -> None:
    run = h.Run(id="r", backend="slurm", created_at=at(0), items=tuple(sample_items()))
    assert serial.run_from_dict(serial.run_to_dict(run)) == run


@pytest.mark.parametrize(
    "path", sorted(SCHEMA_DIR.glob("v*/*.json")), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_every_released_schema_still_loads(path: Path) -> None:
    document = json.loads(path.read_text())
    kind = path.name.split("-")[0]
    loader = {
        "item": serial.item_from_dict,
        "run": serial.run_from_dict,
        "event": serial.event_from_dict,
    }[kind]
    loaded = loader(document)
    # and re-saving it gives the current schema, which loads to the same thing
    savers: dict[str, Callable[[Any], dict[str, Any]]] = {
        "item": serial.item_to_dict,
        "run": serial.run_to_dict,
        "event": serial.event_to_dict,
    }
    assert loader(savers[kind](loaded)) == loaded


def test_schema_folder_is_not_empty() -> None:
    assert len(list(SCHEMA_DIR.glob(f"v{SCHEMA_VERSION}/*.json"))) >= 3


@given(
    code=st.one_of(st.none(), st.integers(0, 255)),
    elapsed=st.one_of(st.none(), st.floats(0, 1e9, allow_nan=False)),
    name=st.text(),
)
def test_round_trip_property(code: int | None, elapsed: float | None, name: str) -> None:
    item = running()
    from attrs import evolve

    item = evolve(item, name=name, stats=evolve(item.stats, elapsed_s=elapsed))
    if code is not None:
        item = h.advance(
            item, obs(50, h.State.FAILED, stats=h.JobStats(exit=h.ExitStatus.exited(code)))
        ).item
    assert serial.item_from_dict(json.loads(json.dumps(serial.item_to_dict(item)))) == item


def test_times_are_written_in_utc_with_a_z() -> None:
    from datetime import datetime, timedelta, timezone

    paris = timezone(timedelta(hours=1))
    assert serial.format_utc(datetime(2026, 3, 1, 13, 0, tzinfo=paris)) == "2026-03-01T12:00:00Z"
    assert (
        serial.format_utc(datetime(2026, 3, 1, 12, 0, 0, 500, tzinfo=timezone.utc))
        == "2026-03-01T12:00:00.000500Z"
    )
    # Documents and the --json record write times with this one function.
    from hpcstate.cli._record import iso

    at = datetime(2026, 3, 1, 7, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert iso(at) == serial.format_utc(at) == "2026-03-01T12:30:00Z"
    assert serial.item_to_dict(running())["created_at"] == serial.format_utc(running().created_at)


def test_the_record_builder_is_public_in_serial() -> None:
    # Backends build records from parsed rows with it (not from hpcstate._fast).
    build = serial.positional_builder(h.Marker)
    assert build("code", "text") == h.Marker(code="code", text="text")
    assert serial.dumps({"a": [1, None]}) == '{"a":[1,null]}'
