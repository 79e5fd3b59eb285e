"""RFC 19 job ids: every form decodes to the same integer; anything else is a ParseError."""

from __future__ import annotations

import json

import pytest
from flux_golden import case_dirs, jobid_f58, read
from hypothesis import given
from hypothesis import strategies as st

from hpcstate import ParseError
from hpcstate_flux import normalize_native_id, parse_jobid
from hpcstate_flux._ids import F58_ALPHABET, MAX_JOBID, native_id


def encode_f58(value: int, *, prefix: str = "\u0192") -> str:
    """Test-only F58 encoder (RFC 19), to check the decoder against."""
    digits = ""
    while True:
        value, digit = divmod(value, 58)
        digits = F58_ALPHABET[digit] + digits
        if value == 0:
            return prefix + digits


def dothex(value: int) -> str:
    text = f"{value:016x}"
    return ".".join(text[i : i + 4] for i in range(0, 16, 4))


# One job in every form, as flux-core printed it (reference [run]).
@pytest.mark.parametrize(
    "text",
    [
        "6207569920",
        "\u0192ATYRGb",
        "fATYRGb",
        "0x172000000",
        "0000.0001.7200.0000",
        "job.0000.0001.7200.0000",
        "  \u0192ATYRGb\n",
    ],
)
def test_every_form_of_one_recorded_job(text: str) -> None:
    assert parse_jobid(text) == 6207569920
    assert normalize_native_id(text) == "6207569920"


@pytest.mark.parametrize("case", case_dirs())
def test_recorded_f58_and_integer_agree(case: str) -> None:
    record = json.loads(read(case, "jobs_json.out"))
    assert parse_jobid(record["jobid"]) == record["id"]
    assert parse_jobid(jobid_f58(case)) == record["id"]
    assert encode_f58(record["id"]) == jobid_f58(case)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "radar-signal-toronto--acrobat-academy-academy",  # words: not supported, says so
        "\U0001f600\U0001f600",  # emoji: not supported, says so
        "\u01920",  # 0 is not an F58 digit
        "fOOl",
        "\u0192" + "z" * 12,  # too many digits
        "\u0192zzzzzzzzzzz",  # 11 digits but > 2**64
        "0x",
        "0x1g",
        "0x" + "f" * 17,
        "0000.0001.7200",
        "job.0000.0001.7200.000g",
        "18446744073709551616",  # 2**64
        "-1",
        "12 34",
        "\u0661\u0662",  # Arabic-Indic digits are not decimal job ids
        "1.5",
    ],
)
def test_not_a_job_id(text: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_jobid(text, command="flux jobs")
    assert raised.value.field == "jobid"
    assert "flux jobs" in str(raised.value)


def test_unsupported_forms_say_how_to_convert() -> None:
    for text in ("radar-signal-toronto--acrobat-academy-academy", "\U0001f600"):
        with pytest.raises(ParseError, match="flux job id --to=dec"):
            parse_jobid(text)


def test_native_id_range() -> None:
    assert native_id(0) == "0"
    assert native_id(MAX_JOBID) == str(2**64 - 1)
    with pytest.raises(ValueError, match="64-bit"):
        native_id(-1)
    with pytest.raises(ValueError, match="64-bit"):
        native_id(2**64)


@given(st.integers(min_value=0, max_value=MAX_JOBID))
def test_every_form_round_trips(value: int) -> None:
    assert parse_jobid(encode_f58(value)) == value
    assert parse_jobid(encode_f58(value, prefix="f")) == value  # FLUX_F58_FORCE_ASCII / LANG=C
    assert parse_jobid(str(value)) == value
    assert parse_jobid(hex(value)) == value
    assert parse_jobid(dothex(value)) == value
    assert parse_jobid("job." + dothex(value)) == value
    assert normalize_native_id(encode_f58(value)) == str(value)


@given(st.text())
def test_arbitrary_text_is_an_id_or_a_parse_error(text: str) -> None:
    try:
        value = parse_jobid(text)
    except ParseError:
        return
    assert 0 <= value <= MAX_JOBID


@given(st.text(alphabet=F58_ALPHABET + "\u0192f0x.-job", max_size=24))
def test_id_like_text_is_an_id_or_a_parse_error(text: str) -> None:
    try:
        value = parse_jobid(text)
    except ParseError:
        return
    assert 0 <= value <= MAX_JOBID
