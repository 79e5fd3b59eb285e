"""The batch script hpcstate generates for a command spec, and the lines it adds to a
user's own shell script (pure: text in, text out).

Without a self-report target the script is ``exec <argv>``: the payload *is* the batch
shell. When the spec's environment names a report file (``HPCSTATE_REPORT_FILE``, set by
hpcstate's tracker at submit), the script execs hpcstate's Perl helper instead
(:mod:`hpcstate_slurm._helper`): the helper is then the batch shell's process, runs the
payload as its only child, passes on the signals sent to the batch shell alone (TERM
excepted: Slurm sends it to every process), reads its wait status with ``waitpid``,
writes the self-report in the JSON format of ``hpcstate.runtime.SelfReport`` and ends as
the payload did: the same exit code, or killed by the same signal. So Slurm's record of
the job is what it is with ``exec``, and the report is exact (a signal death and an
``exit(128+N)`` are told apart by the wait status, which a shell cannot do).

Where ``perl`` is not on the node's PATH the script says so on stderr and falls back to
``exec <argv>``: no self-report (the tracker's queue safety net then finds the end).

A user's own script (``#SBATCH`` lines and all) is wrapped only when its ``#!`` names a
POSIX-family shell: after its leading comment block (so every ``#SBATCH`` line stays where
sbatch reads it) a few lines re-run the script by its own path (``$0 "$@"``) under the
same helper. A guard (``HPCSTATE_HELPER_PID`` equal to ``$PPID``) keeps the re-run from
wrapping itself again, and another (``HPCSTATE_HELPER_JOB``, the job's id) keeps the
script run again inside the same job (``srun "$0"``) from writing the job's report.
Any other interpreter (Python, Perl, csh, ...) is left unchanged.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Final

from attrs import frozen

from ._helper import PERL_HELPER

#: The environment hpcstate's tracker sets in a job it submits (hpcstate.runtime._report
#: defines the same names; a test checks they agree: this module must not import the
#: runtime, which does I/O).
REPORT_FILE_ENV: Final = "HPCSTATE_REPORT_FILE"
RUN_ID_ENV: Final = "HPCSTATE_RUN_ID"
ITEM_ID_ENV: Final = "HPCSTATE_ITEM_ID"
#: Where a task's array index comes from, first match wins (as in the runtime's reader).
ARRAY_INDEX_ENVS: Final = ("HPCSTATE_ARRAY_INDEX", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")
ARRAY_INDEX_PLACEHOLDER: Final = "{array_index}"
#: The variable that keeps a user's script, re-run by the helper, from wrapping itself again.
HELPER_PID_ENV: Final = "HPCSTATE_HELPER_PID"
#: The job whose batch script the helper runs (``job:$SLURM_JOB_ID``): the script run
#: again inside that job (``srun "$0"``, ``bash "$0" worker``) is not wrapped, so only the
#: batch script writes the job's report.
HELPER_JOB_ENV: Final = "HPCSTATE_HELPER_JOB"
#: The interpreters (``#!`` line) whose scripts get the helper: POSIX-family shells.
SHELL_INTERPRETERS: Final = frozenset({"sh", "bash", "dash", "ash", "ksh", "ksh93", "mksh", "zsh"})
#: Perl's environment that could break the helper; the helper restores it for the payload.
PERL_ENV: Final = ("PERL5OPT", "PERL5LIB", "PERLLIB")
#: A name ``sh`` can ``export``: any other makes dash end the batch script (exit 2,
#: before the payload runs) and bash drop the variable with a warning.
_SHELL_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
NO_HELPER_NOTE: Final = (
    "hpcstate: no perl on this node: the job runs without hpcstate's helper "
    "and writes no self-report"
)


@frozen(kw_only=True)
class ReportTarget:
    """Where and as whom a job reports: the file name template (``{array_index}`` is
    replaced by the task's index at run time) and the run and item ids."""

    file_template: str
    run_id: str
    item_id: str = ""

    @classmethod
    def from_environment(cls, environment: Mapping[str, str]) -> ReportTarget | None:
        """The target the tracker put in a spec's environment, or None if there is none."""
        template = environment.get(REPORT_FILE_ENV, "")
        run_id = environment.get(RUN_ID_ENV, "")
        if not template or not run_id:
            return None
        return cls(file_template=template, run_id=run_id, item_id=environment.get(ITEM_ID_ENV, ""))


def command_script(
    argv: Sequence[str], environment: Mapping[str, str], *, self_report: bool = True
) -> str:
    """A batch script that runs ``argv`` exactly as given (quoted once, no second
    shell), with ``environment`` exported. With ``self_report`` and a report file named
    in the environment, the payload runs under the helper, which writes the job's
    self-report when it ends; without perl on the node, or otherwise, it is exec'd."""
    if not argv:
        raise ValueError("command_script needs a non-empty argv")
    for key in environment:
        if not _SHELL_NAME.match(key):
            raise ValueError(
                f"environment variable name {key!r} cannot be set by the batch script: a "
                "name is letters, digits and '_', not starting with a digit; refused "
                "before anything is submitted"
            )
    lines = ["#!/bin/sh"]
    lines.extend(f"export {key}={shlex.quote(value)}" for key, value in environment.items())
    target = ReportTarget.from_environment(environment) if self_report else None
    if target is not None:
        lines.extend(
            [
                "# hpcstate: run the payload under hpcstate's helper (perl), which writes the",
                "# job's self-report and then ends as the payload did (the same exit code, or",
                "# killed by the same signal). Without perl, the payload is exec'd.",
                "if command -v perl >/dev/null 2>&1; then",
                "  " + _helper_exec(shlex.join(argv)),
                "fi",
                f"echo {shlex.quote(NO_HELPER_NOTE)} >&2",
            ]
        )
    lines.append("exec " + shlex.join(argv))
    return "\n".join(lines) + "\n"


def script_interpreter(script: str) -> str | None:
    """The name of the program a script's ``#!`` line runs (``/usr/bin/env bash`` gives
    ``bash``), or None without one."""
    first = script.split("\n", 1)[0]
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    if not words:
        return None
    name = words[0].rsplit("/", 1)[-1]
    if name == "env":
        rest = [word for word in words[1:] if not word.startswith("-") and "=" not in word]
        if not rest:
            return None
        name = rest[0].rsplit("/", 1)[-1]
    return name


def script_reports_itself(script: str) -> bool:
    """Whether :func:`user_script` wraps this script (its ``#!`` names a POSIX shell)."""
    return script_interpreter(script) in SHELL_INTERPRETERS


def user_script(script: str, environment: Mapping[str, str], *, self_report: bool = True) -> str:
    """A user's own batch script, run under the helper when it is a shell script and
    ``environment`` names a report target; otherwise the script unchanged.

    The lines go right after the script's leading block of comments and blank lines
    (the ``#!`` line, ``#SBATCH`` lines), so sbatch reads every directive as before."""
    target = ReportTarget.from_environment(environment) if self_report else None
    if target is None or not script_reports_itself(script):
        return script
    lines = script.splitlines(keepends=True)
    at = 1
    while at < len(lines) and (not lines[at].strip() or lines[at].lstrip().startswith("#")):
        at += 1
    before = "".join(lines[:at])
    if not before.endswith("\n"):
        before += "\n"
    block = "\n".join(
        [
            "# hpcstate: re-run this script under hpcstate's helper (perl), which writes the",
            "# job's self-report and then ends as the script did. Without perl, it runs as is.",
            f'if [ "${{{HELPER_PID_ENV}-}}" != "$PPID" ] && '
            f'[ "${{{HELPER_JOB_ENV}-}}" != "job:${{SLURM_JOB_ID-}}" ]; then',
            "  if command -v perl >/dev/null 2>&1; then",
            f'    {HELPER_PID_ENV}=$$ {HELPER_JOB_ENV}="job:${{SLURM_JOB_ID-}}" '
            + _helper_exec('"$0" "$@"'),
            "  fi",
            f"  echo {shlex.quote(NO_HELPER_NOTE)} >&2",
            "fi",
        ]
    )
    return before + block + "\n" + "".join(lines[at:])


def _helper_exec(payload_words: str) -> str:
    """The shell command that execs the helper with the payload's words: Perl's own
    variables are emptied for perl and handed to the helper, which restores them."""
    cleared = " ".join(f"{name}=" for name in PERL_ENV)
    saved = " ".join(f'"${{{name}+=${name}}}"' for name in PERL_ENV)
    return f"{cleared} exec perl -e {shlex.quote(PERL_HELPER)} -- {saved} {payload_words}"
