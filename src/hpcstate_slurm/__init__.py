"""hpcstate's Slurm backend.

``BACKEND`` is what the ``hpcstate.backends`` entry point ``slurm`` names. Importing this
package imports no I/O: the backend itself (``_io``) is imported only when one is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpcstate.backend import API_VERSION, BackendConfig, BackendInfo, Capabilities

from ._dialect import SlurmDialect as SlurmDialect
from ._dialect import SubmitRejected as SubmitRejected
from ._dialect import parse_version as parse_version
from ._dialect import version_command as version_command
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
)

__all__ = [
    "BACKEND",
    "CAPABILITIES",
    "MINIMUM_VERSION",
    "SlurmBehaviour",
    "SlurmDialect",
    "SlurmVersion",
    "SubmitRejected",
    "behaviour_for",
    "parse_version",
    "version_command",
]
