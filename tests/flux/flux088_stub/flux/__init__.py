"""A stand-in for flux-core 0.88.0's Python bindings (``import flux``), for FIND_SCRIPT.

Only what the tag lookup touches, with the behaviour the production recordings show
(tests/golden/flux/0.88.0-production/_find_submission): ``flux.job.job_kvs_lookup()`` is
synchronous and returns a dict (``diag_find_script_errors``: ``.get()`` on it raises
``TypeError: get expected at least 1 argument, got 0``); ``flux.job.job_info_lookup()``
returns a future whose ``get_decode()`` gives ``{"id": ..., "jobspec": {...}}``
(``diag_find_script_job_info_lookup``). The jobs come from ``$STUB_FLUX_JOBS`` (JSON:
``[{"id": N, "tag": T or null, "errno": E or null}]``, newest first).
"""

from __future__ import annotations


class Flux:
    def __init__(self, url: str | None = None) -> None:
        self.url = url
