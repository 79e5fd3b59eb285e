"""Version-aware exit parsing: ``squeue -O exit_code`` is the raw wait status on 22.05
(measured) and ``code:signal`` from 23.02 on (recorded on 26.05.3). An answer in the
other format is read by the format it has, with a logged note: never a failed poll."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import attrs
import pytest
from slurm_golden import COLUMNS_22_BIG_O

from hpcstate import ExitStatus, ParseError
from hpcstate.backend import CommandResult
from hpcstate_slurm import SlurmBehaviour, SlurmDialect, SlurmVersion, behaviour_for
from hpcstate_slurm._parse import parse_queue_exit, parse_squeue
from hpcstate_slurm._versions import EVIDENCE

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "slurm"
AT = datetime(2026, 12, 6, 16, 0, tzinfo=timezone.utc)


def _v(text: str) -> SlurmVersion:
    return SlurmVersion.parse(f"slurm {text}")


@pytest.mark.parametrize(
    ("version", "wait_status"),
    [
        ("21.08.8", True),
        ("22.05.8", True),
        ("23.02.0", False),
        ("24.11.1", False),
        ("26.05.3", False),
    ],
)
def test_the_format_each_release_prints(version: str, wait_status: bool) -> None:
    assert behaviour_for(_v(version)).squeue_exit_code_is_wait_status is wait_status


def test_every_flag_of_the_table_says_where_it_was_measured() -> None:
    flags = {a.name for a in attrs.fields(SlurmBehaviour) if a.type in (bool, "bool")}
    assert flags == {row.flag for row in EVIDENCE}
    for row in EVIDENCE:
        assert "measured" in row.before + row.after or "recorded" in row.before + row.after


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3:0", ExitStatus.exited(3)),
        ("137:0", ExitStatus.exited(137)),
        ("0:15", ExitStatus.killed(15)),
        ("0:11", ExitStatus.killed(11)),
    ],
)
def test_code_signal_is_exact(text: str, expected: ExitStatus) -> None:
    parsed = parse_queue_exit(text, wait_status=False)
    assert parsed == expected
    assert parsed is not None
    assert parsed.exact


def test_a_26_05_answer_read_by_a_22_05_dialect_is_read_as_code_signal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A misdetected release (or a proxy in front of a newer one): 26.05's '3:0'."""
    out = (GOLDEN / "26.05.3-production" / "exit_3" / "squeue_O.out").read_text()
    old = SlurmDialect.for_version("22.05.8")
    with caplog.at_level(logging.INFO, logger="hpcstate_slurm"):
        (obs,) = old.parse_queue(
            CommandResult(argv=("squeue",), returncode=0, stdout=out),
            native_ids=["64"],
            observed_at=AT,
        )
    assert obs.stats.exit == ExitStatus.exited(3)
    assert any("code:signal" in r.getMessage() for r in caplog.records)


def test_a_22_05_answer_read_by_a_26_05_reader_is_read_as_a_wait_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = (GOLDEN / "22.05.8" / "exit_137" / "squeue_O.out").read_text()
    with caplog.at_level(logging.INFO, logger="hpcstate_slurm"):
        (row,) = parse_squeue(out, columns=COLUMNS_22_BIG_O, exit_is_wait_status=False)
    assert row.exit == ExitStatus.exited(137)  # 35072 = 137 << 8
    assert any("raw wait status" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("text", ["3:", ":0", "1:2:3", "0:999", "-1", "x", "3:0x"])
@pytest.mark.parametrize("wait_status", [True, False])
def test_neither_format_is_a_parse_error(text: str, wait_status: bool) -> None:
    with pytest.raises(ParseError):
        parse_queue_exit(text, wait_status=wait_status)
