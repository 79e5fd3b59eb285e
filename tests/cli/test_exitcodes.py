"""--exit-status: every State against the table in docs/concepts/exit-status.md.

The expected numbers are written by hand from the documented table, never computed
with the code under test.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcstate import TERMINAL, ExitStatus, State
from hpcstate.cli._exitcodes import (
    DESCRIPTIONS,
    ToolExit,
    VerdictExit,
    combine,
    exit_status_for,
)

OK = ExitStatus.exited(0)
EXIT3 = ExitStatus.exited(3)
SEGV = ExitStatus.killed(11)
TERM = ExitStatus.killed(15)
# Kubernetes: 137 may be exit 137 or SIGKILL; $? is 137 either way.
K8S_137 = ExitStatus.from_shell_code(137)
# Slurm 22.05 sacct: "9:0" may be exit 9 or exit 137; $? differs.
LOSSY_9 = ExitStatus.from_slurm("9:0", high_codes_lossy=True)

# state -> [(exit, confirmed, require_confirmed, expected)], by hand from the docs' table.
TABLE: dict[State, list[tuple[ExitStatus | None, bool, bool, int | None]]] = {
    State.PENDING: [(None, False, False, None)],
    State.QUEUED: [(None, False, True, None)],
    State.RUNNING: [(None, False, False, None)],
    State.SETTLING: [(OK, False, True, None)],
    State.COMPLETED: [
        (OK, True, False, 0),
        (OK, True, True, 0),
        (OK, False, False, 0),
        (OK, False, True, 207),
        (None, True, False, 0),
        (None, False, True, 207),
        (EXIT3, True, False, 3),  # recorded evidence of failure beats the state
    ],
    State.FAILED: [
        (EXIT3, True, False, 3),
        (ExitStatus.exited(1), False, True, 1),
        (ExitStatus.exited(255), True, False, 255),
        (SEGV, True, False, 139),
        (ExitStatus.killed(6, core_dumped=True), True, False, 134),
        (K8S_137, True, False, 137),
        (LOSSY_9, True, False, 208),
        (None, True, False, 200),
        (OK, True, False, 200),
    ],
    State.CANCELLED: [(TERM, True, False, 202), (None, True, True, 202)],
    State.TIMEOUT: [(TERM, True, False, 201), (OK, True, False, 201)],
    State.OUT_OF_MEMORY: [(ExitStatus.killed(9), True, False, 203)],
    State.NODE_FAIL: [(None, True, False, 204)],
    State.PREEMPTED: [(TERM, True, False, 204)],
    State.BOOT_FAIL: [(None, True, False, 204)],
    State.DEADLINE: [(None, True, False, 205)],
    State.GONE: [(None, False, False, 206), (None, False, True, 206)],
}


def test_table_covers_every_state() -> None:
    assert set(TABLE) == set(State)


@pytest.mark.parametrize(
    ("state", "exit", "confirmed", "require", "expected"),
    [(state, *row) for state, rows in TABLE.items() for row in rows],
)
def test_exit_status_for(
    state: State, exit: ExitStatus | None, confirmed: bool, require: bool, expected: int | None
) -> None:
    got = exit_status_for(state, exit, confirmed=confirmed, require_confirmed=require)
    assert got == expected


def test_codes_are_distinct_and_documented() -> None:
    codes = [int(c) for c in ToolExit] + [int(c) for c in VerdictExit]
    assert len(codes) == len(set(codes))
    assert set(DESCRIPTIONS) == set(codes)
    # Verdict codes stay clear of the signal range shells use (128+1 .. 128+64).
    assert all(not 129 <= int(c) <= 192 for c in VerdictExit)


def test_the_documented_numbers() -> None:
    # The published table: changing a number breaks users' scripts.
    assert (ToolExit.USAGE, ToolExit.DATA_ERROR, ToolExit.UNKNOWN_RUN) == (64, 65, 66)
    assert (ToolExit.UNAVAILABLE, ToolExit.SOFTWARE, ToolExit.CONFIG) == (69, 70, 78)
    assert (ToolExit.WATCH_TIMEOUT, ToolExit.INTERRUPTED, ToolExit.BROKEN_PIPE) == (124, 130, 141)
    assert [int(c) for c in VerdictExit] == list(range(200, 209))


def test_combine_takes_the_first_failure_in_order() -> None:
    assert combine([]) == 0
    assert combine([0, 0]) == 0
    assert combine([0, 3, 139]) == 3
    assert combine([202, 0, 3]) == 202


exits = st.one_of(
    st.none(),
    st.integers(0, 255).map(ExitStatus.exited),
    st.integers(1, 64).map(ExitStatus.killed),
    st.integers(0, 255).map(ExitStatus.from_shell_code),
    st.integers(0, 255).map(lambda c: ExitStatus.from_slurm(f"{c}:0", high_codes_lossy=True)),
)


@given(state=st.sampled_from(State), exit=exits, confirmed=st.booleans(), require=st.booleans())
def test_properties(state: State, exit: ExitStatus | None, confirmed: bool, require: bool) -> None:
    code = exit_status_for(state, exit, confirmed=confirmed, require_confirmed=require)
    if state not in TERMINAL:
        assert code is None
        return
    assert code is not None
    assert 0 <= code <= 255
    if code == 0:
        # Zero only ever means success, and never against a non-zero exit status.
        assert state is State.COMPLETED
        assert exit is None or exit.shell_code == 0
        assert confirmed or not require
