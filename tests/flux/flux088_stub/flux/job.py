"""``flux.job`` of the stand-in (see ``flux/__init__.py``)."""

from __future__ import annotations

import json
import os
from typing import Any


def _jobs() -> list[dict[str, Any]]:
    jobs = json.loads(os.environ["STUB_FLUX_JOBS"])
    assert isinstance(jobs, list)
    return jobs


def _job(jobid: int) -> dict[str, Any] | None:
    return next((job for job in _jobs() if job["id"] == int(jobid)), None)


def _jobspec(job: dict[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {"system": {"duration": 0}}
    if job.get("tag") is not None:
        attributes["user"] = {"hpcstate_tag": job["tag"]}
    return {"version": 1, "attributes": attributes, "tasks": [], "resources": []}


class JobID(int):
    pass


class _ListedJob:
    def __init__(self, jobid: int) -> None:
        self.id = JobID(jobid)


class JobList:
    def __init__(
        self,
        handle: Any,
        filters: list[str] | None = None,
        max_entries: int = 1000,
        **_: Any,
    ) -> None:
        self.max_entries = max_entries

    def jobs(self) -> list[_ListedJob]:
        return [_ListedJob(job["id"]) for job in _jobs()[: self.max_entries]]


def job_kvs_lookup(handle: Any, jobid: int, keys: list[str] | None = None, **_: Any) -> Any:
    """0.88.0: synchronous, a dict (or None for an unknown job)."""
    job = _job(jobid)
    if job is None or job.get("errno"):
        return None
    return {"id": int(jobid), "jobspec": _jobspec(job)}


class _Future:
    def __init__(self, jobid: int) -> None:
        self.jobid = int(jobid)

    def get_decode(self) -> dict[str, Any]:
        job = _job(self.jobid)
        if job is None:
            raise FileNotFoundError(2, "No such file or directory")
        if job.get("errno"):
            raise OSError(job["errno"], os.strerror(job["errno"]))
        return {"id": self.jobid, "jobspec": _jobspec(job)}


def job_info_lookup(handle: Any, jobid: int, keys: list[str] | None = None, **_: Any) -> _Future:
    return _Future(jobid)
