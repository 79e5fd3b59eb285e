"""hpcstate backend for Flux (flux-core), through its command-line tools.

Importing this package imports no I/O module and never ``flux``: the dialect is pure,
and ``BACKEND.make_backend`` imports the runtime only when a backend is built.

Modules: ``_commands`` (argv: Command records only), ``_parse`` (text -> rows, ParseError
only), ``_observe`` (rows -> Observations), ``_ids`` (RFC 19 job ids), ``_options`` (the
typed options record), ``_dialect`` (the thin class composing them), ``_io`` (the only
async module: ``FluxBackend``).
"""

from __future__ import annotations

from typing import Final

from hpcstate.backend import API_VERSION, Backend, BackendConfig, BackendInfo, Capabilities

from ._dialect import FluxDialect
from ._exit_forms import EXIT_FORMS
from ._ids import native_id, normalize_native_id, parse_jobid
from ._options import FluxOptions

__version__: Final = "0.1.0"

CAPABILITIES: Final = Capabilities(
    array_jobs=False,  # Flux has no array jobs (--cc submits independent jobs)
    steps=False,  # a batch job's inner jobs live in its own instance, gone when it ends
    # Partial: the exec eventlog records the first task to exit losslessly, which is
    # exact for single-task jobs but not for every multi-task job, nor for a flux batch
    # script killed by a signal (its broker exits 128+N: ambiguous; see docs).
    lossless_signals=False,
    accounting=False,  # job-list serves queue and history: no separate source, no gap
    cancel=True,
    requeue=False,
    adopt=True,
    push=False,  # the journal (JournalConsumer) needs the bindings; not used yet
    self_report=False,
    # tag in attributes.user.hpcstate_tag, found by flux python: FluxBackend.find_submission
    idempotent_submit=True,
)


def make_dialect() -> FluxDialect:
    return FluxDialect()


def make_backend(config: BackendConfig) -> Backend:
    from ._io import FluxBackend  # the runtime (asyncio) only when a backend is built

    return FluxBackend.from_config(config)


BACKEND: Final = BackendInfo(
    name="flux",
    api_version=API_VERSION,
    version=__version__,
    description="Flux (flux-core, recorded against 0.88.0) through its CLI",
    capabilities=CAPABILITIES,
    make_backend=make_backend,
    make_dialect=make_dialect,
    requires=(),
    install_hint="pip install 'hpcstate[flux]'",
    options_type=FluxOptions,
    # flux batch --time-limit, -N, -n, -c; no memory request, no GPUs
    resources=frozenset({"time_limit", "cpus", "tasks", "nodes"}),
    exit_forms=EXIT_FORMS,  # a waitstatus, or a negative returncode
)

__all__ = [
    "BACKEND",
    "CAPABILITIES",
    "FluxDialect",
    "FluxOptions",
    "make_backend",
    "make_dialect",
    "native_id",
    "normalize_native_id",
    "parse_jobid",
]
