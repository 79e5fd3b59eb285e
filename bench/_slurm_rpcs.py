"""Counting Slurm's RPCs for the benches: slurmctld's by ``sdiag``, slurmdbd's by
``sacctmgr show stats`` (both need root to reset). Shared by slurm_load.py and
slurm_short_jobs.py; the counters are cluster-wide, by message type."""

from __future__ import annotations

import re
import subprocess

#: slurmctld RPC types a job-state query causes (squeue); the rest is the jobs' own
#: traffic (batch script completion, epilog...) and submissions.
CTLD_QUERY_TYPES = frozenset(
    {
        "REQUEST_JOB_INFO",
        "REQUEST_JOB_INFO_SINGLE",
        "REQUEST_JOB_USER_INFO",
        "REQUEST_PARTITION_INFO",
        "REQUEST_FED_INFO",
        "REQUEST_NODE_INFO",
        "REQUEST_NODE_INFO_SINGLE",
        "REQUEST_BUILD_INFO",
    }
)
#: slurmdbd RPC types a sacct call causes; the rest is slurmctld's own job records.
DBD_QUERY_TYPES = frozenset(
    {
        "SLURM_PERSIST_INIT",
        "DBD_GET_JOBS_COND",
        "DBD_FINI",
        "DBD_GET_CLUSTERS",
        "DBD_GET_TRES",
        "DBD_GET_ASSOCS",
        "DBD_GET_QOS",
        "DBD_GET_USERS",
    }
)
_RPC_LINE = re.compile(r"^\s+([A-Z_]+)\s+\(\s*\d+\)\s+count:(\d+)", re.MULTILINE)


def _output(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout


def rpc_counts(text: str) -> dict[str, int]:
    """RPC counts by message type (the section before "statistics by user")."""
    section = text.split("statistics by user")[0]
    return {name: int(count) for name, count in _RPC_LINE.findall(section)}


def reset_counters() -> None:
    _output("sdiag", "--reset")
    _output("sacctmgr", "-i", "clear", "stats")


def read_counters() -> tuple[dict[str, int], dict[str, int]]:
    """(slurmctld, slurmdbd) RPC counts by type since the last reset."""
    return rpc_counts(_output("sdiag")), rpc_counts(_output("sacctmgr", "show", "stats"))


def queries_only(counts: dict[str, int], types: frozenset[str]) -> dict[str, int]:
    """The counts of the query message types among ``counts``."""
    return {name: count for name, count in counts.items() if name in types}
