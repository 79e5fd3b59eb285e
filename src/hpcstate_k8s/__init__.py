"""hpcstate's Kubernetes backend: batch/v1 Jobs, watched, with verdicts from Job conditions.

Importing this package is cheap and needs no optional dependency: ``BACKEND.make_backend``
imports lightkube (``pip install 'hpcstate[k8s]'``) only when a backend is built. The pure
parts (``_commands``, ``_manifest``, ``_parse``, ``_observe``, ``_tracking``) import none of it
either; the ``_io*`` modules are the only I/O.
"""

from __future__ import annotations

from hpcstate.backend import API_VERSION, Backend, BackendConfig, BackendInfo, Capabilities

from ._exit_forms import EXIT_FORMS
from ._options import K8sOptions

__version__ = "0.1.0"

#: ``lossless_signals`` is False: the kubelet reports a signal death as exit 128+N. Jobs
#: created with ``options['wrapper']`` do get exact signals (see docs/backends/k8s.md).
CAPABILITIES = Capabilities(
    array_jobs=True,
    steps=False,
    lossless_signals=False,
    accounting=False,
    cancel=True,
    requeue=False,
    adopt=True,
    push=True,
    self_report=False,
    # find_submission(tag): the Job carrying the tag (its name derives from the tag too,
    # so a retried submit meets 409 and takes that Job).
    idempotent_submit=True,
)


def _make_backend(config: BackendConfig) -> Backend:
    from ._io import K8sBackend

    return K8sBackend.from_config(config, CAPABILITIES)


BACKEND = BackendInfo(
    name="k8s",
    api_version=API_VERSION,
    version=__version__,
    description="Kubernetes batch/v1 Jobs through the API server (watch, no polling)",
    capabilities=CAPABILITIES,
    make_backend=_make_backend,
    make_dialect=None,
    options_type=K8sOptions,
    requires=("lightkube", "httpx2"),
    install_hint="pip install 'hpcstate[k8s]'",
    # activeDeadlineSeconds and the container's cpu/memory; one node, one task
    resources=frozenset({"time_limit", "memory_bytes", "cpus"}),
    exit_forms=EXIT_FORMS,  # a container's terminated.exitCode
)

__all__ = ["BACKEND", "CAPABILITIES", "K8sOptions"]
