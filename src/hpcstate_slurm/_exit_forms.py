"""``hpcstate decode --from slurm``: Slurm's ExitCode / DerivedExitCode ``code:signal``
as it reads, and what it cannot say. Pure."""

from __future__ import annotations

import re
from typing import Final

from hpcstate import ExitStatus, signal_name
from hpcstate.backend import ExitForm, ExitReading, exit_code_notes

_SHAPE: Final = re.compile(r"\A[0-9]{1,10}:[0-9]{1,10}\Z")
#: Slurm's SIG_OOM (253) as ExitCode shows it: 253 & 0x7f.
SIG_OOM: Final = 125
_LABEL: Final = "a Slurm ExitCode (code:signal)"


def read_exit_code(text: str) -> ExitReading:
    """One reading of ``code:signal``; ParseError when it is not one."""
    status = ExitStatus.from_slurm(text)
    known: list[str] = []
    doubts: list[str] = []
    if status.signal is not None:
        sig = status.signal
        if sig == SIG_OOM:
            known.append(
                "signal 125 is Slurm's out-of-memory marker (SIG_OOM), not a real signal: "
                "the step was killed for exceeding its memory; it has no exit code"
            )
        else:
            known.append(
                f"the batch script (or step) was killed by {signal_name(sig)} ({sig}); "
                "it has no exit code"
            )
        if sig in (9, 15):
            doubts.append(
                f"Slurm itself sends {signal_name(sig)} on scancel, at the time limit and on "
                "preemption: the job's state (CANCELLED, TIMEOUT, PREEMPTED) says who sent it"
            )
    else:
        code = status.code if status.code is not None else 0
        script_known, script_doubts = exit_code_notes(code, who="the batch script (or step)")
        known.extend(script_known)
        doubts.extend(script_doubts)
        if code < 128:
            doubts.append(
                f"if this came from sacct's text output on Slurm 22.05 (which subtracts 128 "
                f"from exit codes >= 128), the exit code may be {code + 128}; scontrol and "
                "squeue --json are exact while the job is still in the controller"
            )
    summary = status.describe()
    if status.signal == SIG_OOM:
        summary = "killed for exceeding its memory (Slurm's SIG_OOM, shown as signal 125)"
    return ExitReading(
        label=_LABEL, status=status, summary=summary, known=tuple(known), ambiguous=tuple(doubts)
    )


EXIT_FORMS: Final = {
    "slurm": ExitForm(
        read=read_exit_code,
        claims=lambda text: _SHAPE.match(text) is not None,
        shape="CODE:SIGNAL (Slurm)",
    ),
}
