"""hpcstate-pbs: an OpenPBS backend for hpcstate, written as a third party would.

It uses only public hpcstate names, and registers through the ``hpcstate.backends`` entry
point (see ``pyproject.toml``). Options in the backend configuration:

``server_timezone``
    IANA zone the PBS server prints times in (default ``UTC``).
``history``
    ``true`` (default) when the server keeps job history (``job_history_enable``).
"""

from __future__ import annotations

from datetime import timezone, tzinfo
from typing import Final

from hpcstate.backend import API_VERSION, Backend, BackendConfig, BackendInfo, Capabilities

from ._dialect import PbsDialect as PbsDialect
from ._dialect import decode_exit_status as decode_exit_status
from ._dialect import parse_pbs_time as parse_pbs_time
from ._exit_forms import EXIT_FORMS

__version__ = "0.1.0"

CAPABILITIES: Final = Capabilities(
    array_jobs=False,  # qsub -J is not implemented yet
    steps=False,
    lossless_signals=True,  # Exit_status > 256 is 256 + the signal that killed the job
    accounting=False,  # qstat -x history is read by the queue call itself
    cancel=True,
    requeue=True,  # run_count goes up when PBS reruns a job under the same id
    adopt=True,
    idempotent_submit=False,
    # CommandBackend reads files where the jobs run (cat, tail): a job's report file
    # and its output, for output checks. Declared, so the tracker uses them.
    report_files=True,
    output=True,
)


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return timezone.utc
    from zoneinfo import ZoneInfo  # only when configured

    return ZoneInfo(name)


def make_dialect(config: BackendConfig | None = None) -> PbsDialect:
    options = config.options if config is not None else {}
    return PbsDialect(
        server_timezone=_zone(str(options.get("server_timezone", "UTC"))),
        history=bool(options.get("history", True)),
    )


def make_backend(config: BackendConfig) -> Backend:
    # Runtime imports stay here, so listing backends never imports asyncio or asyncssh.
    from hpcstate.runtime import CommandBackend, make_runner

    return CommandBackend(
        name=config.name,
        dialect=make_dialect(config),
        runner=make_runner(config),
        capabilities=CAPABILITIES,
    )


BACKEND: Final = BackendInfo(
    name="pbs",
    api_version=API_VERSION,
    version=__version__,
    description="OpenPBS: qsub, qstat -f -F json -x (queue and history in one call), qdel",
    capabilities=CAPABILITIES,
    make_backend=make_backend,
    make_dialect=make_dialect,
    install_hint="pip install hpcstate-pbs",
    # qsub -l walltime=, select=N:ncpus=:mem=; no task count or GPU request yet
    resources=frozenset({"time_limit", "cpus", "memory_bytes", "nodes"}),
    exit_forms=EXIT_FORMS,  # hpcstate decode --from pbs
)

__all__ = [
    "BACKEND",
    "CAPABILITIES",
    "PbsDialect",
    "decode_exit_status",
    "make_backend",
    "make_dialect",
    "parse_pbs_time",
]
