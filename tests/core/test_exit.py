"""ExitStatus: exit code and signal kept apart, decoders total over their inputs."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcstate import ExitStatus, ParseError, signal_name, signal_number, slurm_signal_name


@given(st.integers(min_value=-(2**40), max_value=2**40))
def test_wait_status_decoder_is_total(status: int) -> None:
    try:
        decoded = ExitStatus.from_wait_status(status)
    except ParseError:
        return
    # Whatever decodes, encodes back to the same raw status.
    assert decoded.wait_status == status
    assert (decoded.code is None) != (decoded.signal is None)


def test_every_valid_wait_status_round_trips() -> None:
    decoded = 0
    for status in range(0x10000):
        try:
            result = ExitStatus.from_wait_status(status)
        except ParseError:
            continue
        decoded += 1
        assert result.wait_status == status
    # 256 exit codes + 126 signals x (core dumped or not).
    assert decoded == 256 + 126 * 2


@pytest.mark.parametrize(
    ("raw", "code", "signal", "core"),
    [
        (0, 0, None, False),
        (3328, 13, None, False),  # exit 13 (squeue --json on 22.05)
        (35072, 137, None, False),  # exit 137 is an EXIT CODE, not SIGKILL
        (51200, 200, None, False),
        (9, None, 9, False),  # killed by SIGKILL
        (139, None, 11, True),  # SIGSEGV with a core dump
        (253, None, 125, True),  # Slurm's SIG_OOM as stored
    ],
)
def test_known_wait_statuses(raw: int, code: int | None, signal: int | None, core: bool) -> None:
    status = ExitStatus.from_wait_status(raw)
    assert (status.code, status.signal, status.core_dumped) == (code, signal, core)
    assert status.exact


@pytest.mark.parametrize("raw", [-1, 0x10000, 0x7F, 0x137F, 0xFFFF, 0x0109])
def test_non_terminations_raise(raw: int) -> None:
    with pytest.raises(ParseError):
        ExitStatus.from_wait_status(raw)


def test_exit_137_is_not_a_signal() -> None:
    status = ExitStatus.exited(137)
    assert status.signal is None
    assert status.code == 137
    assert status.shell_code == 137
    killed = ExitStatus.killed(9)
    assert killed.code is None
    assert killed.shell_code == 137  # the shell convention, derived, never stored
    assert status != killed


@pytest.mark.parametrize(
    ("text", "code", "signal"),
    [
        ("0:0", 0, None),
        ("13:0", 13, None),
        ("137:0", 137, None),
        ("0:9", None, 9),
        ("0:15", None, 15),
    ],
)
def test_slurm_exit_text(text: str, code: int | None, signal: int | None) -> None:
    status = ExitStatus.from_slurm(text)
    assert (status.code, status.signal) == (code, signal)
    assert status.exact
    assert status.as_slurm() == text


def test_slurm_2205_text_is_marked_ambiguous() -> None:
    status = ExitStatus.from_slurm("9:0", high_codes_lossy=True)
    assert status.code == 9
    assert not status.exact
    assert "9 or 137" in (status.ambiguous or "")
    # Codes >= 128 cannot come out of a lossy sacct, and signals are unaffected.
    assert ExitStatus.from_slurm("0:9", high_codes_lossy=True).exact


@given(st.text())
def test_slurm_decoder_raises_only_parse_error(text: str) -> None:
    try:
        status = ExitStatus.from_slurm(text)
    except ParseError:
        return
    assert (status.code is None) != (status.signal is None)


@pytest.mark.parametrize("text", ["", "13", "1:2", "-1:0", "256:0", "0:128", "a:b", "0:0:0"])
def test_bad_slurm_exit_text(text: str) -> None:
    with pytest.raises(ParseError, match="ExitCode"):
        ExitStatus.from_slurm(text)


def test_shell_code_above_128_is_ambiguous_not_a_signal() -> None:
    status = ExitStatus.from_shell_code(137)
    assert status.code == 137
    assert status.signal is None
    assert status.ambiguous is not None
    assert "SIGKILL" in status.ambiguous
    assert ExitStatus.from_shell_code(3).exact
    assert ExitStatus.from_shell_code(128).exact


@given(st.integers(min_value=0, max_value=255))
def test_shell_codes_keep_the_code(code: int) -> None:
    status = ExitStatus.from_shell_code(code)
    assert status.code == code
    assert status.signal is None


def test_termination_message() -> None:
    assert ExitStatus.from_termination_message('{"exit": 3}') == ExitStatus.exited(3)
    assert ExitStatus.from_termination_message('{"signal": 9}') == ExitStatus.killed(9)
    for bad in ["", "[]", '{"exit": 3, "signal": 9}', '{"exit": 300}', '{"signal": true}', "x"]:
        with pytest.raises(ParseError):
            ExitStatus.from_termination_message(bad)


@given(st.text())
def test_termination_message_raises_only_parse_error(text: str) -> None:
    with contextlib.suppress(ParseError):
        ExitStatus.from_termination_message(text)


def test_signal_names_in_both_forms() -> None:
    assert signal_name(11) == "SIGSEGV"
    assert slurm_signal_name(11) == "Segmentation_fault"
    assert ExitStatus.killed(9).signal_name == "SIGKILL"
    assert ExitStatus.killed(9).slurm_signal_name == "Killed"
    for number in range(1, 32):
        for form in (
            str(number),
            signal_name(number),
            signal_name(number)[3:],
            slurm_signal_name(number),
        ):
            assert signal_number(form) == number
    assert signal_name(40) == "SIGRTMIN+6"


@given(st.text())
def test_signal_number_raises_only_parse_error(text: str) -> None:
    try:
        number = signal_number(text)
    except ParseError:
        return
    assert 1 <= number <= 127


def test_constructor_refuses_code_and_signal() -> None:
    with pytest.raises(ValueError, match="not both"):
        ExitStatus(code=1, signal=9)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        ExitStatus(code=256)
    with pytest.raises(ValueError, match="core_dumped"):
        ExitStatus(code=1, core_dumped=True)


def test_describe() -> None:
    assert (
        ExitStatus.killed(11, core_dumped=True).describe() == "killed by SIGSEGV (11), core dumped"
    )
    assert ExitStatus.exited(3).describe() == "exit 3"
    assert "ambiguous" in ExitStatus.from_shell_code(143).describe()


def test_termination_message_survives_deep_nesting_and_huge_input() -> None:
    for bad in ["[" * 5000, '{"exit": ' + "9" * 5000 + "}", "x" * 100_000]:
        with pytest.raises(ParseError):
            ExitStatus.from_termination_message(bad)
