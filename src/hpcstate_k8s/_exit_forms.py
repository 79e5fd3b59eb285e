"""``hpcstate decode --from k8s``: a container's ``terminated.exitCode``, and what it
cannot say (Kubernetes keeps no signal). Pure."""

from __future__ import annotations

from typing import Final

from hpcstate import ExitStatus
from hpcstate.backend import ExitForm, ExitReading, exit_code, exit_code_notes

_NOTES: Final = {
    137: (
        "137 is how SIGKILL shows, and also an OOM kill (terminated.reason OOMKilled), a pod "
        "killed after its grace period, and the kubelet's made-up ContainerStatusUnknown "
        "(not a real exit): read the container's terminated.reason"
    ),
    143: "143 is SIGTERM: pod deletion, a Job deadline, a preemption or an eviction",
    128: "containerd reports a container that could not start (reason StartError) as 128",
}


def read_exit_code(text: str) -> ExitReading:
    """One reading of a container exit code 0..255; ParseError otherwise."""
    code = exit_code(text, "k8s")
    status = ExitStatus.from_shell_code(code, source="the container's exit code")
    known, doubts = exit_code_notes(code, who="the container's main process")
    doubts.append(
        "Kubernetes never reports signals (the kubelet keeps no signal field), so no "
        "exit code above 128 is known to be a signal; hpcstate's wrapper entrypoint writes "
        "the exact status to the termination message"
    )
    if code in _NOTES:
        doubts.append(_NOTES[code])
    return ExitReading(
        label="a Kubernetes container exit code",
        status=status,
        summary=f"exit {code}",
        known=tuple(known),
        ambiguous=tuple(doubts),
    )


EXIT_FORMS: Final = {"k8s": ExitForm(read=read_exit_code)}
