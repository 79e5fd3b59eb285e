"""Flux job ids (RFC 19): every textual form read back to the one 64-bit integer.

Flux prints ids as F58 (``ƒATYRGb``; ``fATYRGb`` when the locale is not UTF-8 or
``FLUX_F58_FORCE_ASCII`` is set), and accepts decimal, ``0x`` hex, dothex
(``0000.0001.7200.0000``) and KVS paths (``job.0000.0001.7200.0000``) as well. hpcstate
keeps one native id string per job: the decimal form, which no locale can mangle.

The mnemonic ``words`` and ``emoji`` forms are not decoded here (their tables are
large and no Flux command prints them unasked); they raise a ParseError that says how
to convert them.
"""

from __future__ import annotations

import re
from typing import Final

from hpcstate import ParseError

#: RFC 19's F58 alphabet (Bitcoin's base58: no 0, O, I or l).
F58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
#: U+0192 LATIN SMALL LETTER F WITH HOOK, the prefix in a UTF-8 locale.
F58_PREFIX: Final = "\u0192"
F58_ASCII_PREFIX: Final = "f"
MAX_JOBID: Final = 2**64 - 1

_F58_VALUES: Final = {char: value for value, char in enumerate(F58_ALPHABET)}
_DECIMAL: Final = re.compile(r"\A[0-9]{1,20}\Z")
_HEX: Final = re.compile(r"\A0x[0-9a-fA-F]{1,16}\Z")
_DOTHEX: Final = re.compile(r"\A[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\Z")
_F58_MAX_DIGITS: Final = 11  # 58**11 > 2**64


def _fail(message: str, text: str, command: str) -> ParseError:
    return ParseError(message, command=command, field="jobid", line=text)


def _decode_f58(digits: str, text: str, command: str) -> int:
    if not digits or len(digits) > _F58_MAX_DIGITS:
        raise _fail("an F58 job id has 1 to 11 digits after its prefix", text, command)
    value = 0
    for char in digits:
        digit = _F58_VALUES.get(char)
        if digit is None:
            raise _fail(f"{char!r} is not an F58 digit", text, command)
        value = value * 58 + digit
    if value > MAX_JOBID:
        raise _fail("F58 job id does not fit in 64 bits", text, command)
    return value


def parse_jobid(text: str, *, command: str = "") -> int:
    """The integer behind any RFC 19 job id form. Raises ParseError for anything else.

    Follows flux-core's own order: ``.`` means dothex (or a ``job.`` KVS path), ``-``
    means words, ``ƒ``/``f`` means F58, ``0x`` means hex, otherwise decimal.
    """
    stripped = text.strip()
    if not stripped:
        raise _fail("empty job id", text, command)
    if "." in stripped:
        dothex = stripped[4:] if stripped.startswith("job.") else stripped
        if not _DOTHEX.match(dothex):
            raise _fail("expected dothex XXXX.XXXX.XXXX.XXXX or job.XXXX...", text, command)
        return int(dothex.replace(".", ""), 16)
    if "-" in stripped:
        raise _fail(
            "mnemonic (words) job ids are not supported; convert with `flux job id --to=dec`",
            text,
            command,
        )
    if stripped[0] in (F58_PREFIX, F58_ASCII_PREFIX):
        return _decode_f58(stripped[1:], text, command)
    if ord(stripped[0]) >= 0x1F000:
        raise _fail(
            "emoji job ids are not supported; convert with `flux job id --to=dec`", text, command
        )
    if stripped.startswith("0x"):
        if not _HEX.match(stripped):
            raise _fail("expected a hex job id 0x followed by 1 to 16 hex digits", text, command)
        return int(stripped[2:], 16)
    if not _DECIMAL.match(stripped):
        raise _fail("not a Flux job id (decimal, f58, hex, dothex or kvs)", text, command)
    value = int(stripped)
    if value > MAX_JOBID:
        raise _fail("decimal job id does not fit in 64 bits", text, command)
    return value


def native_id(jobid: int) -> str:
    """hpcstate's native id string for a Flux job: its decimal form."""
    if not 0 <= jobid <= MAX_JOBID:
        raise ValueError(f"a Flux job id is a 64-bit unsigned integer, got {jobid}")
    return str(jobid)


def normalize_native_id(text: str, *, command: str = "") -> str:
    """Any RFC 19 form -> the decimal native id string (ParseError if unreadable)."""
    return native_id(parse_jobid(text, command=command))
