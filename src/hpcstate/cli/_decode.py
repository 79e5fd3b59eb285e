"""``hpcstate decode``: what an exit value from a scheduler means, and what it cannot say.

Pure but for finding the forms: each reading states the facts the value carries and,
separately, what stays ambiguous, so a number is never presented as more than it is.
The POSIX forms (a plain exit code, a raw wait status) are read here; a scheduler's own
forms are declared by its backend (``BackendInfo.exit_forms``), so the forms offered are
those of the installed backends.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any, Final

from attrs import frozen

from hpcstate import ExitStatus, ParseError, registry, signal_name
from hpcstate.backend import (
    BackendInfo,
    ExitForm,
    ExitReading,
    exit_code,
    exit_code_notes,
    exit_integer,
)

from ._parser import UsageError

_INTEGER: Final = re.compile(r"\A-?[0-9]{1,12}\Z")
WAIT: Final = "wait"  # a raw POSIX wait status
EXIT: Final = "exit"  # a plain exit code as a shell shows it in $?


@frozen(kw_only=True)
class Reading:
    """One interpretation of the value, in form ``form``."""

    form: str
    reading: ExitReading

    @property
    def label(self) -> str:
        return self.reading.label


@frozen(kw_only=True)
class Decoded:
    value: str
    readings: tuple[Reading, ...]


def _from_exit(code: int) -> ExitReading:
    status = ExitStatus.from_shell_code(code)
    known, doubts = exit_code_notes(code, who="the process")
    return ExitReading(
        label="an exit code ($?)",
        status=status,
        summary=f"exit {code}",
        known=tuple(known),
        ambiguous=tuple(doubts),
    )


def _from_wait(value: int) -> ExitReading:
    status = ExitStatus.from_wait_status(value)
    known: list[str] = []
    doubts: list[str] = []
    if status.signal is not None:
        sig = status.signal
        text = f"the process was killed by {signal_name(sig)} ({sig})"
        if status.core_dumped:
            text += " and dumped core"
        known.append(text + "; it has no exit code")
    else:
        code = status.code if status.code is not None else 0
        known, doubts = exit_code_notes(code, who="the process")
    return ExitReading(
        label="a raw wait status",
        status=status,
        summary=status.describe(),
        known=tuple(known),
        ambiguous=tuple(doubts),
    )


#: The forms every system has, whatever backends are installed.
POSIX_FORMS: Final[Mapping[str, ExitForm]] = {
    WAIT: ExitForm(read=lambda text: _from_wait(exit_integer(text, WAIT))),
    EXIT: ExitForm(read=lambda text: _from_exit(exit_code(text, EXIT))),
}


def installed_forms() -> dict[str, ExitForm]:
    """The exit-value forms the installed backends declare, by name (a backend that
    cannot be loaded declares none; the first backend by name wins a shared name)."""
    forms: dict[str, ExitForm] = {}
    for name in registry.available():
        try:
            info = registry.load(name)
        except Exception:  # a broken plugin is `hpcstate backends`'s to explain
            continue
        if isinstance(info, BackendInfo):
            for form, declared in info.exit_forms.items():
                forms.setdefault(form, declared)
    return forms


def form_names(forms: Mapping[str, ExitForm]) -> list[str]:
    return sorted({*POSIX_FORMS, *forms})


def _unknown_form(form: str, forms: Mapping[str, ExitForm]) -> UsageError:
    if registry.is_known(form) and form not in registry.available():
        return UsageError(
            f"--from {form}: that form is read by backend {form!r}, which is not installed; "
            f"to add it: {registry.install_hint(form)}"
        )
    return UsageError(
        f"--from {form}: no installed backend declares this form of exit value "
        f"(forms: {', '.join(form_names(forms))})"
    )


def decode(
    value: str, form: str | None = None, forms: Mapping[str, ExitForm] | None = None
) -> Decoded:
    """Every sensible reading of ``value`` (in ``form``, else guessed from its shape)
    among the POSIX forms and ``forms`` (None: :func:`installed_forms`). Raises
    ParseError when there is none, UsageError for a form nobody declares."""
    text = value.strip()
    if form is not None and form in POSIX_FORMS:
        return Decoded(
            value=text, readings=(Reading(form=form, reading=POSIX_FORMS[form].read(text)),)
        )
    declared = installed_forms() if forms is None else forms
    if form is not None:
        found = declared.get(form)
        if found is None:
            raise _unknown_form(form, declared)
        return Decoded(value=text, readings=(Reading(form=form, reading=found.read(text)),))
    return Decoded(value=text, readings=_guess(text, value, declared))


def _guess(text: str, value: str, forms: Mapping[str, ExitForm]) -> tuple[Reading, ...]:
    shaped = [(name, f) for name, f in sorted(forms.items()) if f.claims is not None]
    ordered = [s for s in shaped if not s[1].integers] + [s for s in shaped if s[1].integers]
    for name, declared in ordered:
        assert declared.claims is not None
        if declared.claims(text):
            return (Reading(form=name, reading=declared.read(text)),)
    number = int(text) if _INTEGER.match(text) else None
    if number is None or number < 0:
        shapes = [
            *(f.shape for _, f in ordered if not f.integers and f.shape),
            "an exit code",
            "a wait status",
            *(f.shape for _, f in ordered if f.integers and f.shape),
        ]
        raise ParseError(
            f"expected {', '.join(shapes[:-1])} or {shapes[-1]}", field="value", line=value
        )
    if number > 255:
        return (Reading(form=WAIT, reading=_from_wait(number)),)
    # 0..255 is both a valid exit code and (often) a valid wait status: show both.
    readings = [Reading(form=EXIT, reading=_from_exit(number))]
    with contextlib.suppress(ParseError):  # 127 or 255 are no termination as wait statuses
        readings.append(Reading(form=WAIT, reading=_from_wait(number)))
    return tuple(readings)


def reading_dict(reading: Reading) -> dict[str, Any]:
    status = reading.reading.status
    return {
        "from": reading.form,
        "label": reading.label,
        "summary": reading.reading.summary,
        "exit_code": None if status is None else status.code,
        "signal": None if status is None else status.signal,
        "signal_name": None if status is None else status.signal_name,
        "core_dumped": False if status is None else status.core_dumped,
        "shell_code": None if status is None else status.shell_code,
        "wait_status": None if status is None else status.wait_status,
        "exact": status is not None and status.exact,
        "known": list(reading.reading.known),
        "ambiguous": list(reading.reading.ambiguous),
    }


def decoded_dict(decoded: Decoded) -> dict[str, Any]:
    return {
        "schema": 1,
        "input": decoded.value,
        "readings": [reading_dict(r) for r in decoded.readings],
    }


def decoded_text(decoded: Decoded) -> str:
    lines: list[str] = []
    several = len(decoded.readings) > 1
    if several:
        lines.append(f"{decoded.value} can be read {len(decoded.readings)} ways (use --from):")
    for reading in decoded.readings:
        lines.append(f"{decoded.value} read as {reading.label}: {reading.reading.summary}")
        lines.extend(f"  known: {fact}" for fact in reading.reading.known)
        lines.extend(f"  ambiguous: {doubt}" for doubt in reading.reading.ambiguous)
        if not reading.reading.ambiguous:
            lines.append("  nothing about it is ambiguous")
    return "\n".join(lines)
