"""The batch script hpcstate generates for a command spec (pure: text in, text out).

Without a self-report target the script is ``exec <argv>``: the payload *is* the batch
shell. When the spec's environment names a report file (``HPCSTATE_REPORT_FILE``, set by
hpcstate's tracker at submit), the script instead runs the payload as a child and, when
it ends, writes the self-report itself, in the JSON format of
``hpcstate.runtime.SelfReport`` (temp file + ``mv``), then leaves the way the payload did.
It needs nothing on the compute node but a POSIX ``sh``, ``date``, ``mkdir`` and ``mv``.

How the payload runs, and why:

* ``(exec argv)`` in the foreground: a forked subshell that execs the argv, so the
  wrapper's child is the payload itself (an external program, never a shell builtin),
  with the job's stdin, process group and signal dispositions. (A background ``&`` job
  would get stdin from /dev/null and SIGINT/SIGQUIT ignored.)
* The wrapper traps the signals Slurm sends to a job (cancel, time limit, ``--signal``).
  Slurm signals every process of the batch step, so the payload gets them itself; the
  trap only keeps the wrapper alive until the payload ends (a payload that handles
  USR1 goes on, as it did when it was the batch shell). A signal sent to the batch
  shell alone (``scancel -b``) stops at the wrapper: a shell runs traps only after its
  foreground child ends, and a background child would run with SIGINT ignored.
* A shell sees ``128+N`` both for "killed by signal N" and for "exit 128+N". If the
  wrapper itself received signal N and the payload ended with ``128+N``, the report
  says signal N and the wrapper kills itself with N, so Slurm records the signal as
  before. Otherwise the report keeps the exit code and, for 129..192, says that it may
  hide a signal; the wrapper exits with that code (it never invents a signal).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Final

from attrs import frozen

#: The environment hpcstate's tracker sets in a job it submits (hpcstate.runtime._report
#: defines the same names; a test checks they agree: this module must not import the
#: runtime, which does I/O).
REPORT_FILE_ENV: Final = "HPCSTATE_REPORT_FILE"
RUN_ID_ENV: Final = "HPCSTATE_RUN_ID"
ITEM_ID_ENV: Final = "HPCSTATE_ITEM_ID"
#: Where a task's array index comes from, first match wins (as in the runtime's reader).
ARRAY_INDEX_ENVS: Final = ("HPCSTATE_ARRAY_INDEX", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")
ARRAY_INDEX_PLACEHOLDER: Final = "{array_index}"
#: Signals Slurm may send to a job whose default action would end the wrapper early.
TRAPPED_SIGNALS: Final = ("HUP", "INT", "QUIT", "TERM", "USR1", "USR2", "ALRM", "XCPU")
REPORT_DETAIL: Final = "written by the batch script hpcstate generated, after the payload ended"


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
    in the environment, it writes the job's self-report when the payload ends."""
    if not argv:
        raise ValueError("command_script needs a non-empty argv")
    lines = ["#!/bin/sh"]
    lines.extend(f"export {key}={shlex.quote(value)}" for key, value in environment.items())
    target = ReportTarget.from_environment(environment) if self_report else None
    if target is None:
        lines.append("exec " + shlex.join(argv))
    else:
        lines.extend(_reporting_lines(argv, target))
    return "\n".join(lines) + "\n"


def _report_file_expression(template: str) -> str:
    """Shell words that expand to the report file's name: the template's literal parts
    quoted, ``{array_index}`` replaced by ``$hpcstate_index`` (as str.replace does)."""
    parts = template.split(ARRAY_INDEX_PLACEHOLDER)
    return '"$hpcstate_index"'.join(shlex.quote(part) for part in parts)


def _reporting_lines(argv: Sequence[str], target: ReportTarget) -> list[str]:
    # Everything the job cannot change is rendered (and JSON-escaped) here; at run time
    # the shell adds only numbers and a timestamp, so the document is always valid JSON.
    head = json.dumps({"schema": 1, "run_id": target.run_id, "item_id": target.item_id})
    head = head[:-1] + ", "  # left open: the shell appends the run-time fields
    tail = ", " + json.dumps({"detail": REPORT_DETAIL})[1:]
    index_vars = " ".join(f'"${{{name}-}}"' for name in ARRAY_INDEX_ENVS)
    return [
        "# hpcstate: run the payload as a child; when it ends, write its self-report",
        "# (JSON, atomically) and leave the way it did.",
        "hpcstate_caught=",
        f"for hpcstate_sig in {' '.join(TRAPPED_SIGNALS)}; do",
        '  trap "hpcstate_caught=$hpcstate_sig" "$hpcstate_sig"',
        "done",
        '# The shell\'s own notes ("Segmentation fault", "Terminated") are not the job\'s',
        "# output: this shell's stderr is /dev/null while the payload runs.",
        "exec 9>&2 2>/dev/null",
        f"(exec {shlex.join(argv)} 2>&9 9>&-)",
        "hpcstate_status=$?",
        "exec 2>&9 9>&-",
        "hpcstate_signal=",
        'if [ "$hpcstate_status" -gt 128 ] && [ -n "$hpcstate_caught" ] &&',
        '  [ "$(kill -l "$hpcstate_status" 2>/dev/null)" = "$hpcstate_caught" ]; then',
        "  # the job got signal N and the payload ended with 128+N: killed by it",
        "  hpcstate_signal=$((hpcstate_status - 128))",
        "fi",
        'if [ -n "$hpcstate_signal" ]; then',
        '  hpcstate_exit="\\"code\\": null, \\"signal\\": $hpcstate_signal"',
        "  hpcstate_ambiguous=null",
        'elif [ "$hpcstate_status" -gt 128 ] && [ "$hpcstate_status" -le 192 ]; then',
        '  hpcstate_exit="\\"code\\": $hpcstate_status, \\"signal\\": null"',
        '  hpcstate_ambiguous="\\"the exit code $hpcstate_status may be a plain exit'
        " $hpcstate_status or a process killed by signal $((hpcstate_status - 128));"
        ' the job\'s shell cannot tell which\\""',
        "else",
        '  hpcstate_exit="\\"code\\": $hpcstate_status, \\"signal\\": null"',
        "  hpcstate_ambiguous=null",
        "fi",
        "hpcstate_index=",
        f"for hpcstate_value in {index_vars}; do",
        "  case $hpcstate_value in",
        "    ''|*[!0-9]*) ;;",
        "    *) hpcstate_index=$hpcstate_value; break ;;",
        "  esac",
        "done",
        f"hpcstate_file={_report_file_expression(target.file_template)}",
        "case $hpcstate_file in",
        "  */*) hpcstate_dir=${hpcstate_file%/*} ;;",
        "  *) hpcstate_dir=. ;;",
        "esac",
        'hpcstate_tmp="$hpcstate_dir/.${hpcstate_file##*/}.$$.tmp"',
        "hpcstate_now=$(date -u +%Y-%m-%dT%H:%M:%SZ)",
        'if [ -e "$hpcstate_file" ] && [ ! -f "$hpcstate_file" ]; then',
        '  echo "hpcstate: $hpcstate_file is not a regular file; no self-report written" >&2',
        'elif [ -z "$hpcstate_now" ]; then',
        '  echo "hpcstate: date failed; no self-report written" >&2',
        'elif mkdir -p -- "$hpcstate_dir" &&',
        f"  printf '%s\\n' {shlex.quote(head)}"
        '"\\"array_index\\": ${hpcstate_index:-null}, \\"exit\\": {$hpcstate_exit,'
        ' \\"core_dumped\\": false, \\"ambiguous\\": $hpcstate_ambiguous},'
        ' \\"reported_at\\": \\"$hpcstate_now\\""'
        f'{shlex.quote(tail)} >"$hpcstate_tmp" &&',
        '  mv -f -- "$hpcstate_tmp" "$hpcstate_file"; then',
        "  :",
        "else",
        '  rm -f -- "$hpcstate_tmp"',
        '  echo "hpcstate: could not write the self-report $hpcstate_file" >&2',
        "fi",
        'if [ -n "$hpcstate_signal" ]; then',
        '  hpcstate_name=$(kill -l "$hpcstate_signal" 2>/dev/null)',
        '  if [ -n "$hpcstate_name" ]; then',
        "    # die of the same signal (no core file of this shell), so Slurm records it",
        "    ulimit -c 0 2>/dev/null",
        '    trap - "$hpcstate_name"',
        '    kill -s "$hpcstate_name" $$',
        "  fi",
        "fi",
        'exit "$hpcstate_status"',
    ]
