"""``hpcstate decode --from pbs``: an OpenPBS ``Exit_status``, and what it cannot say.
Pure; declared in ``BACKEND.exit_forms`` through public hpcstate names only."""

from __future__ import annotations

from typing import Final

from hpcstate import signal_name
from hpcstate.backend import ExitForm, ExitReading, exit_code_notes, exit_integer

from ._dialect import _EXEC_CODES, decode_exit_status

_LABEL: Final = "an OpenPBS Exit_status"


def read_exit_status(text: str) -> ExitReading:
    """One reading of ``Exit_status``; ParseError when it is none."""
    value = exit_integer(text, "pbs")
    status = decode_exit_status(value)
    if status is None:
        exec_code = _EXEC_CODES.get(value)
        what = exec_code[2] if exec_code is not None else f"JOB_EXEC code {value}"
        return ExitReading(
            label=_LABEL,
            status=None,
            summary=f"PBS itself ended the job or could not run it ({what})",
            known=(f"a negative Exit_status is PBS's own code ({what}), not a process status",),
        )
    if status.signal is not None:
        sig = status.signal
        return ExitReading(
            label=_LABEL,
            status=status,
            summary=status.describe(),
            known=(
                f"{value} = 256+{sig}: the job's top process was killed by "
                f"{signal_name(sig)} ({sig}); it has no exit code",
            ),
        )
    code = status.code if status.code is not None else 0
    known_list, doubts = exit_code_notes(code, who="the job script's shell")
    return ExitReading(
        label=_LABEL,
        status=status,
        summary=status.describe(),
        known=tuple(known_list),
        ambiguous=tuple(doubts),
    )


#: Only read when asked (``--from pbs``): a plain integer has no PBS-only shape.
EXIT_FORMS: Final = {"pbs": ExitForm(read=read_exit_status)}
