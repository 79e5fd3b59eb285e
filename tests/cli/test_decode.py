"""``hpcstate decode``: each form, what is known and what stays ambiguous."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcstate import ParseError
from hpcstate.cli._decode import decode, decoded_dict, decoded_text


def one(value: str, form: str | None = None) -> dict[str, object]:
    readings = decoded_dict(decode(value, form))["readings"]
    assert isinstance(readings, list)
    assert len(readings) == 1
    reading = readings[0]
    assert isinstance(reading, dict)
    return reading


def test_slurm_signal() -> None:
    r = one("0:9")
    assert (r["from"], r["exit_code"], r["signal"], r["signal_name"]) == (
        "slurm",
        None,
        9,
        "SIGKILL",
    )
    assert r["shell_code"] == 137
    assert r["exact"] is True
    # Who sent it is not in the number: Slurm itself kills with SIGKILL too.
    assert any("scancel" in text for text in r["ambiguous"])  # type: ignore[attr-defined]


def test_slurm_exit_137_is_an_exit_not_a_signal() -> None:
    r = one("137:0")
    assert (r["exit_code"], r["signal"]) == (137, None)
    assert any("128+9" in text for text in r["ambiguous"])  # type: ignore[attr-defined]


def test_slurm_low_code_warns_about_the_lossy_sacct() -> None:
    r = one("9:0", "slurm")
    assert r["exit_code"] == 9
    assert any("may be 137" in text for text in r["ambiguous"])  # type: ignore[attr-defined]


def test_slurm_sig_oom() -> None:
    r = one("0:125")
    assert r["signal"] == 125
    assert "memory" in str(r["summary"])


def test_wait_status_of_a_shell_that_exited_137() -> None:
    # Flux's `kill -KILL $$` job: the shell exits 137 (wait status 35072 = 137 << 8).
    r = one("35072")
    assert (r["from"], r["exit_code"], r["signal"], r["wait_status"]) == ("wait", 137, None, 35072)


def test_wait_status_signal_with_core() -> None:
    r = one("139", "wait")  # 0x8b: SIGSEGV (11) + core-dump bit
    assert (r["signal"], r["core_dumped"], r["exit_code"]) == (11, True, None)


def test_flux_forms() -> None:
    timeout = one("36352", "flux")
    assert timeout["exit_code"] == 142
    assert any("SIGALRM" in text for text in timeout["ambiguous"])  # type: ignore[attr-defined]
    cancelled = one("-128", "flux")
    assert (cancelled["exit_code"], cancelled["signal"]) == (None, None)
    assert "cancelled before it ran" in str(cancelled["summary"])
    shell_killed = one("-3")
    assert (shell_killed["from"], shell_killed["signal"]) == ("flux", 3)


def test_k8s_137_says_it_cannot_know() -> None:
    r = one("137", "k8s")
    assert (r["exit_code"], r["signal"], r["exact"]) == (137, None, False)
    text = " ".join(r["ambiguous"])  # type: ignore[arg-type]
    assert "OOMKilled" in text
    assert "never reports signals" in text


def test_a_bare_small_integer_is_read_both_ways() -> None:
    readings = decoded_dict(decode("9"))["readings"]
    assert [(r["from"], r["exit_code"], r["signal"]) for r in readings] == [  # type: ignore[union-attr]
        ("exit", 9, None),
        ("wait", None, 9),
    ]
    assert "use --from" in decoded_text(decode("9"))


@pytest.mark.parametrize(
    ("value", "form", "message"),
    [
        ("abc", None, "expected CODE:SIGNAL (Slurm), an exit code"),
        ("1:2", None, "Slurm exit status has both a code and a signal"),
        ("300", "k8s", "an exit code is 0..255"),
        ("x", "wait", "expected an integer for --from wait"),
        ("127", "wait", "stopped/continued"),
        ("-200", "flux", "Flux returncode out of range"),
    ],
)
def test_bad_values(value: str, form: str | None, message: str) -> None:
    with pytest.raises(ParseError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode(value, form)


@given(st.text(max_size=30), st.sampled_from([None, "slurm", "wait", "flux", "k8s", "exit"]))
def test_decode_returns_or_raises_parse_error(value: str, form: str | None) -> None:
    try:
        decoded = decode(value, form)
    except ParseError:
        return
    assert decoded.readings
    assert decoded_text(decoded)
