"""hpcstate's Slurm backend.

``BACKEND`` is what the ``hpcstate.backends`` entry point ``slurm`` names. Importing this
package imports no I/O: the backend itself (``_io``) is imported only when one is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpcstate.backend import (
    API_VERSION,
    PORTABLE_RESOURCES,
    BackendConfig,
    BackendInfo,
    Capabilities,
    OutputQuestion,
    expand_output_pattern,
)

from ._dialect import SlurmDialect as SlurmDialect
from ._dialect import SubmitRejected as SubmitRejected
from ._dialect import parse_version as parse_version
from ._dialect import version_command as version_command
from ._exit_forms import EXIT_FORMS
from ._options import SlurmOptions as SlurmOptions
from ._versions import MINIMUM_VERSION as MINIMUM_VERSION
from ._versions import SlurmBehaviour as SlurmBehaviour
from ._versions import SlurmVersion as SlurmVersion
from ._versions import behaviour_for as behaviour_for

if TYPE_CHECKING:
    from hpcstate.backend import Backend

CAPABILITIES = Capabilities(
    array_jobs=True,
    steps=True,
    lossless_signals=True,  # the controller's exit status (squeue -O); sacct's code:signal
    accounting=True,
    cancel=True,
    requeue=True,
    adopt=True,
    push=False,
    # Jobs submitted with a command write a self-report file when their payload ends
    # (the generated batch script does it); the tracker reads those files, not Slurm.
    self_report=True,
    idempotent_submit=True,  # --comment=hpcstate:<tag>, found again with squeue
    report_files=True,  # the self-report files, read with one command
    output=True,  # the end of a job's output file (output checks)
    shares_facts=True,  # the detected release: a new lease holder skips sbatch --version
)


def _make_backend(config: BackendConfig) -> Backend:
    from ._io import make_backend

    return make_backend(config)


def _make_dialect() -> SlurmDialect:
    """A dialect for an undetected version: the cautious behaviour (oldest supported)."""
    return SlurmDialect()


def _output_location(question: OutputQuestion) -> str | None:
    """sbatch's default output file when the JobSpec names none: ``slurm-%j.out``
    (``slurm-%A_%a.out`` for an array task) in the job's working directory, stdout and
    stderr together. None when the JobSpec names a file (that one is used) or the
    working directory is not known."""
    spec = question.spec
    if spec is None or not spec.working_directory:
        return None
    if (spec.stderr or spec.stdout) if question.stderr else spec.stdout:
        return None
    name = "slurm-%A_%a.out" if question.array_index is not None else "slurm-%j.out"
    path = f"{spec.working_directory.rstrip('/')}/{name}"
    return expand_output_pattern(path, question.native_id, question.array_index)


BACKEND = BackendInfo(
    name="slurm",
    api_version=API_VERSION,
    version="0.1.0",
    description=(
        "Slurm via sbatch/squeue/sacct/scancel (local or over SSH): one batched squeue and "
        "one batched sacct per poll; lossless exit codes from the controller record"
    ),
    capabilities=CAPABILITIES,
    make_backend=_make_backend,
    make_dialect=_make_dialect,
    requires=(),
    install_hint="pip install 'hpcstate[slurm]' (and 'hpcstate[ssh]' for a remote cluster)",
    output_location=_output_location,  # where `hpcstate logs` finds sbatch's default file
    options_type=SlurmOptions,
    resources=PORTABLE_RESOURCES,  # sbatch -t --mem -c -n -N -G
    exit_forms=EXIT_FORMS,  # ExitCode / DerivedExitCode "code:signal"
)

__all__ = [
    "BACKEND",
    "CAPABILITIES",
    "MINIMUM_VERSION",
    "SlurmBehaviour",
    "SlurmDialect",
    "SlurmOptions",
    "SlurmVersion",
    "SubmitRejected",
    "behaviour_for",
    "parse_version",
    "version_command",
]
