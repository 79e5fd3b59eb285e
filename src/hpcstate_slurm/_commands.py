"""The commands the Slurm backend runs: argv, environment and stdin, as Command records.

Pure: builds records and refuses bad input (ValueError naming it); runs nothing and
reads no answer (that is ``_parse`` and ``_observe``). The exact argv of each command is
pinned by the golden tests (tests/golden/slurm).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from math import ceil
from typing import Final

from hpcstate import expand_array_spec
from hpcstate.backend import AccountingQuery, Command, JobSpec

from ._parse import SACCT_FIELDS, SQUEUE_FIELDS, split_job_id
from ._script import command_script, script_reports_itself, user_script

UTC: Final = timezone.utc
TAG_PREFIX: Final = "hpcstate:"
#: Variables that change what Slurm's clients print or which cluster they ask.
UNSET_ENV: Final = (
    "SQUEUE_*",
    "SACCT_*",
    "SLURM_TIME_FORMAT",
    "SLURM_CLUSTERS",
    "SLURM_BITSTR_LEN",
    "SLURM_ARRAY_*",
)
#: Set for every query: epoch times, and UTC so that ``-S`` (read as local time) is exact.
QUERY_ENV: Final[Mapping[str, str]] = {
    "SLURM_TIME_FORMAT": "%s",
    "TZ": "UTC",
    "SLURM_BITSTR_LEN": "0",  # whole array ranges, never cut with "..."
}
#: JobSpec.options the dialect turns into sbatch flags (others are for other backends).
_OPTION_FLAGS: Final[Mapping[str, str]] = {
    "qos": "--qos",
    "constraint": "--constraint",
    "reservation": "--reservation",
    "gres": "--gres",
    "gpus": "--gpus",
    "begin": "--begin",
    "nice": "--nice",
    "licenses": "--licenses",
    "signal": "--signal",
    "wckey": "--wckey",
    "mem_per_cpu": "--mem-per-cpu",
}
_BOOLEAN_OPTIONS: Final[Mapping[str, tuple[str, str | None]]] = {
    "exclusive": ("--exclusive", None),
    "hold": ("--hold", None),
    "requeue": ("--requeue", "--no-requeue"),
}
_TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS: Final = frozenset({"0", "false", "no", "off"})
#: The run id's time in a tracker's tag: hpcstate-20261206-152617-49c6a1.0
_TAG_TIME: Final = re.compile(r"\Ahpcstate-(\d{8}-\d{6})-")
_TAG_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def self_report_option(spec: JobSpec, *, default: bool = True) -> bool:
    """The job's option ``self_report_wrapper``; ``default`` (the backend's option of
    that name, true unless configured) when the job does not say."""
    return yes_no("self_report_wrapper", spec.options.get("self_report_wrapper", default))


def yes_no(key: str, value: object) -> bool:
    """A yes/no option: a boolean (a TOML ``true``) or one of the words ``true/yes/on/1``
    and ``false/no/off/0``; anything else is refused, naming the option."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise ValueError(
        f"option {key} must be true or false (a boolean, or one of the words "
        f"{', '.join(sorted(_TRUE_WORDS))} / {', '.join(sorted(_FALSE_WORDS))}), "
        f"got {value!r}"
    )


def _format_limit(limit: timedelta) -> str:
    seconds = ceil(limit.total_seconds())
    if seconds <= 0:
        raise ValueError(f"time_limit must be positive, got {limit}")
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def _dependency(entry: str) -> str:
    text = entry.strip()
    if not text:
        raise ValueError("an empty dependency")
    if text.replace("_", "").isdecimal():
        return f"afterok:{text}"
    return text


def query_ids(native_ids: Sequence[str]) -> tuple[str, ...]:
    """Ids to ask for: an array's or het job's own id covers all its tasks or components."""
    seen: dict[str, None] = {}
    for native_id in native_ids:
        job, step = split_job_id(native_id, command="(native id)")
        if step is not None:
            raise ValueError(f"{native_id!r} is a step, not a job")
        base = job.split("_", 1)[0].split("+", 1)[0]
        seen.setdefault(base, None)
    return tuple(seen)


def _check_tag(tag: str) -> None:
    if not tag or not set(tag) <= _TAG_CHARS:
        raise ValueError(f"tag {tag!r} may use only letters, digits and -_.:")


# -- submit -------------------------------------------------------------------------------


def submit_command(spec: JobSpec, *, timeout: float, self_report: bool = True) -> Command:
    """``sbatch --parsable ...`` for a spec: its script on stdin (or its ``script_path``).
    ``self_report``: the default of the job's ``self_report_wrapper`` option."""
    argv = ["sbatch", "--parsable"]
    name = spec.name or (spec.command[0].rsplit("/", 1)[-1] if spec.command else "")
    if name:
        if "\n" in name:
            raise ValueError("a job name cannot contain a newline")
        argv.append(f"--job-name={name}")
    if spec.time_limit is not None:
        argv.append(f"--time={_format_limit(spec.time_limit)}")
    if spec.memory_bytes is not None:
        if spec.memory_bytes <= 0:
            raise ValueError(f"memory_bytes must be positive, got {spec.memory_bytes}")
        argv.append(f"--mem={ceil(spec.memory_bytes / (1 << 20))}M")
    for flag, value in (
        ("--cpus-per-task", spec.cpus),
        ("--ntasks", spec.tasks),
        ("--nodes", spec.nodes),
    ):
        if value is not None:
            if value <= 0:
                raise ValueError(f"{flag} must be positive, got {value}")
            argv.append(f"{flag}={value}")
    for flag, setting in (
        ("--partition", spec.partition),
        ("--account", spec.account),
        ("--chdir", spec.working_directory),
        ("--output", spec.stdout),
        ("--error", spec.stderr),
    ):
        if setting:
            argv.append(f"{flag}={setting}")
    if spec.array:
        expand_array_spec(spec.array)  # refuse a bad spec here, with a clear error
        argv.append(f"--array={spec.array}")
    if spec.dependencies:
        argv.append("--dependency=" + ",".join(_dependency(d) for d in spec.dependencies))
    if spec.environment and not spec.command:
        for key, env_value in spec.environment.items():
            if "," in env_value or "\n" in env_value:
                raise ValueError(
                    f"environment value of {key} contains ',' or a newline, which "
                    "sbatch --export cannot carry; pass a command instead of a script"
                )
        pairs = ",".join(f"{key}={value}" for key, value in spec.environment.items())
        argv.append(f"--export=ALL,{pairs}")
    for key, option in spec.options.items():
        if key in _OPTION_FLAGS:
            argv.append(f"{_OPTION_FLAGS[key]}={option}")
        elif key in _BOOLEAN_OPTIONS:
            on, off = _BOOLEAN_OPTIONS[key]
            if yes_no(key, option):
                argv.append(on)
            elif off is not None:
                argv.append(off)
    if spec.tag:
        if not set(spec.tag) <= _TAG_CHARS:
            raise ValueError(f"tag {spec.tag!r} may use only letters, digits and -_.:")
        argv.append(f"--comment={TAG_PREFIX}{spec.tag}")
    argv.extend(spec.extra_args)
    stdin: str | None = None
    if spec.script_path:  # its text is on the cluster's side: nothing to wrap
        argv.append(spec.script_path)
    elif spec.script:
        wrapped = self_report_option(spec, default=self_report)
        stdin = user_script(spec.script, spec.environment, self_report=wrapped)
    else:
        # A batch script that runs the argv as given (quoted once, no extra shell). On by
        # default (option ``self_report_wrapper``): when the tracker named a report file,
        # the payload runs under hpcstate's Perl helper, which writes the job's
        # self-report from the payload's wait status and then ends as the payload did
        # (the same exit code, or killed by the same signal), so Slurm's record is the
        # one ``exec`` gives. Without perl on the node, or with the option off, the
        # payload is exec'd and writes no report.
        wrapped = self_report_option(spec, default=self_report)
        stdin = command_script(spec.command, spec.environment, self_report=wrapped)
    return Command(argv=argv, stdin=stdin, timeout=timeout)


def reports_itself(spec: JobSpec, *, self_report: bool = True) -> bool:
    """Whether the job's batch script runs hpcstate's report helper, so that the job
    writes its own report: a command, or a user's script whose ``#!`` names a POSIX
    shell, unless the option ``self_report_wrapper`` is off; never a ``script_path``
    (its text is on the job's side). An option that is neither true nor false answers
    False here; submitting the spec refuses it, naming the option. ``self_report``: the
    option's default (the backend's ``self_report_wrapper``)."""
    if spec.script_path:
        return False
    try:
        on = self_report_option(spec, default=self_report)
    except ValueError:
        return False
    return on and (not spec.script or script_reports_itself(spec.script))


# -- find a submission by its tag -----------------------------------------------------------


def find_submission_command(*, timeout: float) -> Command:
    """Every job's id and comment in the queue (the tag is matched in ``_observe``).

    The controller keeps the comment; 22.05's accounting stores it only with
    AccountingStoreFlags=job_comment, so the queue is the place to look first."""
    return Command(
        argv=("squeue", "-h", "-t", "all", "-o", "%F|%k"),
        env=QUERY_ENV,
        unset_env=UNSET_ENV,
        timeout=timeout,
    )


def find_submission_accounting_command(
    tag: str, *, accounting_margin: timedelta, timeout: float
) -> Command:
    """The tag lookup in accounting, for a job that already left the queue.

    Every release from 21.08 stores the submit line (measured on 22.05.8:
    ``sbatch --parsable --job-name=x --chdir=/tmp --comment=hpcstate:TAG`` while the
    Comment column stays empty without ``AccountingStoreFlags=job_comment``). The window
    opens at the time in a tracker's tag (``hpcstate-YYYYMMDD-HHMMSS-...``, UTC) less the
    accounting margin, else 7 days back. Only the calling user's jobs (no ``-a``): the
    tracker submits as that user.
    """
    _check_tag(tag)
    stamp = _TAG_TIME.search(tag)
    start = "now-7days"
    if stamp is not None:
        try:
            when = datetime.strptime(stamp.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            pass
        else:
            start = (when - accounting_margin).strftime("%Y-%m-%dT%H:%M:%S")
    return Command(
        argv=("sacct", "-P", "-n", "-X", "-S", start, "-o", "JobID,SubmitLine"),
        env=QUERY_ENV,
        unset_env=UNSET_ENV,
        timeout=timeout,
    )


# -- queue, accounting, cancel, version -----------------------------------------------------


def queue_command(native_ids: Sequence[str], *, timeout: float) -> Command:
    """One ``squeue -O`` for all ids: the queue and the controller's record in one call."""
    ids = query_ids(native_ids)
    if not ids:
        raise ValueError("queue_command needs at least one id")
    fields = ",".join(f"{name}:0" if key == "name" else f"{name}:|" for name, key in SQUEUE_FIELDS)
    return Command(
        argv=("squeue", "-h", "-t", "all", "-r", "-j", ",".join(ids), "-O", fields),
        env=QUERY_ENV,
        unset_env=UNSET_ENV,
        timeout=timeout,
    )


def accounting_command(
    query: AccountingQuery, *, accounting_margin: timedelta, timeout: float
) -> Command | None:
    """One ``sacct -P -D`` for all ids (None when there is none to ask)."""
    ids = query_ids(query.native_ids)
    if not ids:
        return None
    argv = ["sacct", "-P", "-a", "-D", "-j", ",".join(ids)]
    if query.submitted_after is not None:
        start = query.submitted_after.astimezone(UTC) - accounting_margin
        argv += ["-S", start.strftime("%Y-%m-%dT%H:%M:%S")]  # read as UTC: TZ=UTC
    argv += ["--noconvert", "-o", ",".join(SACCT_FIELDS)]
    return Command(argv=argv, env=QUERY_ENV, unset_env=UNSET_ENV, timeout=timeout)


def cancel_command(native_ids: Sequence[str], *, timeout: float) -> Command:
    if not native_ids:
        raise ValueError("cancel_command needs at least one id")
    for native_id in native_ids:
        split_job_id(native_id, command="(native id)")
    return Command(argv=("scancel", *native_ids), unset_env=UNSET_ENV, timeout=timeout)


def version_command() -> Command:
    return Command(argv=("sbatch", "--version"), unset_env=UNSET_ENV, timeout=30.0)
