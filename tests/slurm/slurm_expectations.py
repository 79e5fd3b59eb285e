"""What each recorded job DID, written by hand from its case definition (case.sh and the
sbatch arguments), never copied from a parser's output. The golden tests check the
parsers and the state machine against these."""

from __future__ import annotations

from attrs import field, frozen

from hpcstate import ExitStatus, ReasonKind, State


def code(value: int) -> ExitStatus:
    return ExitStatus.exited(value)


def sig(value: int) -> ExitStatus:
    return ExitStatus.killed(value)


@frozen(kw_only=True)
class Verdict:
    state: State
    exit: ExitStatus | None  # what the job's script did; None: it never ran
    derived: ExitStatus | None = None  # the worst srun step (None: not checked)
    reason: ReasonKind | None = None  # None: not checked
    uid: int | None = None  # "CANCELLED by <uid>" (all recorded jobs ran as root)
    step_failed: bool = False  # ended 0 while a step failed
    max_rss_at_least: int | None = None
    #: The exit may hide a signal (a shell's 128+N): hpcstate must say so.
    ambiguous: bool = False
    restarts: int | None = None


@frozen(kw_only=True)
class Case:
    """``items``: native id -> verdict, for every id the test tracks (array tasks too)."""

    items: dict[str, Verdict]


NZ = ReasonKind.NON_ZERO_EXIT_CODE
RAISED = ReasonKind.RAISED_SIGNAL
NONE = ReasonKind.NONE  # a success: no reason (never a pending one left over)
CANCELLED = ReasonKind.CANCELLED


def _one(job_id: str, verdict: Verdict) -> Case:
    return Case(items={job_id: verdict})


def _cancelled_never_ran(job_id: str) -> Case:
    return _one(job_id, Verdict(state=State.CANCELLED, exit=None, reason=CANCELLED, uid=0))


#: Slurm 26.05.3 (recorded). Job ids are the ones sbatch printed (jobid.txt).
CASES_26: dict[str, Case] = {
    # exit 0
    "exit_0": _one("2", Verdict(state=State.COMPLETED, exit=code(0), reason=NONE, derived=code(0))),
    # exit 3
    "exit_3": _one("3", Verdict(state=State.FAILED, exit=code(3), derived=code(0), reason=NZ)),
    # exit 137: a plain exit code, not SIGKILL and not OOM
    "exit_137": _one("4", Verdict(state=State.FAILED, exit=code(137), reason=NZ)),
    "exit_200": _one("5", Verdict(state=State.FAILED, exit=code(200), reason=NZ)),
    # a command bash cannot find: bash exits 127
    "command_not_found": _one("9", Verdict(state=State.FAILED, exit=code(127), reason=NZ)),
    # kill -TERM $$ / -SEGV / -KILL: the script dies of the signal
    "sigterm": _one("6", Verdict(state=State.FAILED, exit=sig(15), reason=RAISED)),
    "sigsegv": _one("7", Verdict(state=State.FAILED, exit=sig(11), reason=RAISED)),
    "sigkill": _one("8", Verdict(state=State.FAILED, exit=sig(9), reason=RAISED)),
    # srun exit 7; srun exit 3; srun exit 2 (the script ends with the last one)
    "steps_7_3_2": _one(
        "10", Verdict(state=State.FAILED, exit=code(2), derived=code(7), reason=NZ)
    ),
    # srun exit 5; true
    "step_exit_5_then_true": _one(
        "11",
        Verdict(
            state=State.COMPLETED, exit=code(0), reason=NONE, derived=code(5), step_failed=True
        ),
    ),
    # srun kill -TERM; exit 0
    "step_sigterm_then_exit_0": _one(
        "25",
        Verdict(
            state=State.COMPLETED, exit=code(0), reason=NONE, derived=sig(15), step_failed=True
        ),
    ),
    # -n2, task 0 exits 3, task 1 exits 0; the script ends with that srun
    "multi_task_3_0": _one(
        "24", Verdict(state=State.FAILED, exit=code(3), derived=code(3), reason=NZ)
    ),
    # -t 1, sleep 300: Slurm sends SIGTERM at the limit
    "timeout": _one("12", Verdict(state=State.TIMEOUT, exit=sig(15), reason=ReasonKind.TIME_LIMIT)),
    # sleep 300, scancel while running: SIGTERM
    "cancel_running": _one(
        "13", Verdict(state=State.CANCELLED, exit=sig(15), reason=CANCELLED, uid=0)
    ),
    # held / begin in an hour / waiting on a failed parent, then scancel: never ran
    "cancel_pending_hold": _cancelled_never_ran("14"),
    "cancel_pending_begin": _cancelled_never_ran("15"),
    "dependency_afterok_parent_fails": _cancelled_never_ran("28"),
    # a het job that cannot start on one node, then scancel
    "hetjob": _cancelled_never_ran("19"),
    # --array=1-4, exit (task % 2): odd tasks fail with 1
    "array_mod2": Case(
        items={
            "16_1": Verdict(state=State.FAILED, exit=code(1), reason=NZ),
            "16_2": Verdict(state=State.COMPLETED, exit=code(0), reason=NONE),
            "16_3": Verdict(state=State.FAILED, exit=code(1), reason=NZ),
            "16_4": Verdict(state=State.COMPLETED, exit=code(0), reason=NONE),
            "16": Verdict(state=State.FAILED, exit=None),  # the whole array
        }
    ),
    # --array=1-3 -H, scancel: no task ever ran
    "array_cancel_pending": Case(
        items={
            "26_1": Verdict(state=State.CANCELLED, exit=None, uid=0),
            "26_2": Verdict(state=State.CANCELLED, exit=None, uid=0),
            "26_3": Verdict(state=State.CANCELLED, exit=None, uid=0),
            "26": Verdict(state=State.CANCELLED, exit=None),
        }
    ),
    # --job-name="we|ird'name", exit 4
    "name_special_chars": _one("17", Verdict(state=State.FAILED, exit=code(4), reason=NZ)),
    # --mem=100M, allocates 600 MB; no enforcement configured: it completes
    "mem_over_limit": _one(
        "18",
        Verdict(state=State.COMPLETED, exit=code(0), reason=NONE, max_rss_at_least=500_000_000),
    ),
    # same with OverMemoryKill: Slurm kills it with SIGKILL (not OUT_OF_MEMORY)
    "mem_over_limit_overmemorykill": _one(
        "29", Verdict(state=State.FAILED, exit=sig(9), reason=RAISED)
    ),
}


@frozen(kw_only=True)
class Case22:
    """Slurm 22.05.8 (measured here). Keys are suffixes of the recorded job id ("" is the
    job itself, "_1" its array task 1), because re-recording changes the ids.

    ``alone``: the exit status sacct alone gives, where it differs from the truth:
    22.05's sacct prints ``code - 128`` for codes >= 128, so every exit code it prints
    could be either value and is ambiguous; signals and DerivedExitCode are exact.
    """

    items: dict[str, Verdict]
    alone: dict[str, ExitStatus] = field(factory=dict)


def _ambiguous(value: int) -> ExitStatus:
    return ExitStatus.exited(value, ambiguous="x")


# 22.05's own reason for a script killed by a signal is JobLaunchFailure; the verdict's
# reason is raised_signal with the signal (issue 12), Slurm's words kept in its text.
LAUNCH = ReasonKind.RAISED_SIGNAL


def _one22(verdict: Verdict, alone: ExitStatus | None = None) -> Case22:
    return Case22(items={"": verdict}, alone={"": alone} if alone is not None else {})


CASES_22: dict[str, Case22] = {
    "exit_0": _one22(Verdict(state=State.COMPLETED, exit=code(0), reason=NONE, derived=code(0))),
    "exit_3": _one22(Verdict(state=State.FAILED, exit=code(3), reason=NZ), _ambiguous(3)),
    # sacct prints 9:0 for exit 137 and 72:0 for exit 200
    "exit_137": _one22(Verdict(state=State.FAILED, exit=code(137), reason=NZ), _ambiguous(9)),
    "exit_200": _one22(Verdict(state=State.FAILED, exit=code(200), reason=NZ), _ambiguous(72)),
    "command_not_found": _one22(
        Verdict(state=State.FAILED, exit=code(127), reason=NZ), _ambiguous(127)
    ),
    "sigint": _one22(Verdict(state=State.FAILED, exit=sig(2), reason=LAUNCH)),
    "sigterm": _one22(Verdict(state=State.FAILED, exit=sig(15), reason=LAUNCH)),
    "sigsegv": _one22(Verdict(state=State.FAILED, exit=sig(11), reason=LAUNCH)),
    "sigkill": _one22(Verdict(state=State.FAILED, exit=sig(9), reason=LAUNCH)),
    "steps_7_3_2": _one22(
        Verdict(state=State.FAILED, exit=code(2), derived=code(7), reason=NZ), _ambiguous(2)
    ),
    "step_exit_5_then_true": _one22(
        Verdict(state=State.COMPLETED, exit=code(0), reason=NONE, derived=code(5), step_failed=True)
    ),
    "step_sigterm_then_exit_0": _one22(
        Verdict(state=State.COMPLETED, exit=code(0), reason=NONE, derived=sig(15), step_failed=True)
    ),
    "timeout": _one22(Verdict(state=State.TIMEOUT, exit=sig(15), reason=ReasonKind.TIME_LIMIT)),
    "cancel_running": _one22(Verdict(state=State.CANCELLED, exit=sig(15), reason=CANCELLED, uid=0)),
    "cancel_pending_hold": _one22(
        Verdict(state=State.CANCELLED, exit=None, reason=CANCELLED, uid=0)
    ),
    "array_mod2": Case22(
        items={
            "_1": Verdict(state=State.FAILED, exit=code(1), reason=NZ),
            "_2": Verdict(state=State.COMPLETED, exit=code(0), reason=NONE),
            "_3": Verdict(state=State.FAILED, exit=code(1), reason=NZ),
            "_4": Verdict(state=State.COMPLETED, exit=code(0), reason=NONE),
            "": Verdict(state=State.FAILED, exit=None),
        },
        alone={"_1": _ambiguous(1), "_3": _ambiguous(1)},
    ),
    # --job-name='we|ird'"'"'na"me', exit 4
    "name_special_chars": _one22(
        Verdict(state=State.FAILED, exit=code(4), reason=NZ), _ambiguous(4)
    ),
}


def _prod(job_id: str, verdict: Verdict) -> Case:
    return Case(items={job_id: verdict})


_TL = ReasonKind.TIME_LIMIT

#: Slurm 26.05.3, the backend's own production commands (tests/golden/slurm/
#: 26.05.3-production). Written from each case's "true outcome" in that README and its
#: case.json "truth"; job ids from jobid.txt (array tasks: <id>_<index>).
CASES_26_PROD: dict[str, Case] = {
    "exit_0": _prod("63", Verdict(state=State.COMPLETED, exit=code(0), reason=NONE)),
    "exit_3": _prod("64", Verdict(state=State.FAILED, exit=code(3), reason=NZ)),
    # a plain exit code, neither SIGKILL nor out-of-memory
    "exit_137": _prod("65", Verdict(state=State.FAILED, exit=code(137), reason=NZ)),
    "exit_200": _prod("66", Verdict(state=State.FAILED, exit=code(200), reason=NZ)),
    # sh -c '...; kill -TERM $$', exec'd: the batch shell itself dies of the signal
    "sigterm": _prod("67", Verdict(state=State.FAILED, exit=sig(15), reason=RAISED)),
    "sigsegv": _prod("68", Verdict(state=State.FAILED, exit=sig(11), reason=RAISED)),
    # srun steps exit 7, 3, 2; the job exits 2 (its last command)
    "steps_7_3_2": _prod(
        "69", Verdict(state=State.FAILED, exit=code(2), derived=code(7), reason=NZ)
    ),
    # srun sh -c "exit 5"; true
    "step_exit_5_then_true": _prod(
        "70",
        Verdict(
            state=State.COMPLETED, exit=code(0), derived=code(5), reason=NONE, step_failed=True
        ),
    ),
    # --time=1 min, sleep 300: Slurm's SIGTERM at the limit
    "timeout": _prod("71", Verdict(state=State.TIMEOUT, exit=sig(15), reason=_TL)),
    # exit 4 under the name we|ird'na"me
    "name_special_chars": _prod("72", Verdict(state=State.FAILED, exit=code(4), reason=NZ)),
    # exec of a command that does not exist: /bin/sh exits 127
    "command_not_found": _prod("73", Verdict(state=State.FAILED, exit=code(127), reason=NZ)),
    # --hold, scancel while pending (by root): it never ran
    "cancel_pending_hold": _prod(
        "74", Verdict(state=State.CANCELLED, exit=None, reason=CANCELLED, uid=0)
    ),
    # sleep 300, scancel (root) 3 s after it ran: SIGTERM
    "cancel_running": _prod(
        "75", Verdict(state=State.CANCELLED, exit=sig(15), reason=CANCELLED, uid=0)
    ),
    # --array=0-3, exit (index % 2 * 3): tasks 0 and 2 exit 0, tasks 1 and 3 exit 3
    "array_mod2": Case(
        items={
            "76_0": Verdict(state=State.COMPLETED, exit=code(0), reason=NONE),
            "76_1": Verdict(state=State.FAILED, exit=code(3), reason=NZ),
            "76_2": Verdict(state=State.COMPLETED, exit=code(0), reason=NONE),
            "76_3": Verdict(state=State.FAILED, exit=code(3), reason=NZ),
        }
    ),
    # --array=0-2, sleep 15; task 1 cancelled (root) while running: SIGTERM
    "array_cancel_one": Case(
        items={
            "77_0": Verdict(state=State.COMPLETED, exit=code(0), reason=NONE),
            "77_1": Verdict(state=State.CANCELLED, exit=sig(15), reason=CANCELLED, uid=0),
            "77_2": Verdict(state=State.COMPLETED, exit=code(0), reason=NONE),
        }
    ),
    # requeued once while running; the second run exits 0
    "requeue": _prod("78", Verdict(state=State.COMPLETED, exit=code(0), reason=NONE, restarts=1)),
    # the self-report wrapper; the payload exits 3
    "wrapper_exit_3": _prod("79", Verdict(state=State.FAILED, exit=code(3), reason=NZ)),
    # the wrapper's payload dies of SIGSEGV: sh turns it into 139, which may be either
    "wrapper_sigsegv": _prod(
        "80", Verdict(state=State.FAILED, exit=code(139), reason=NZ, ambiguous=True)
    ),
    # the user's own scripts (no wrapper)
    "script_exit_0": _prod("81", Verdict(state=State.COMPLETED, exit=code(0), reason=NONE)),
    "script_exit_3": _prod("82", Verdict(state=State.FAILED, exit=code(3), reason=NZ)),
    "script_exit_137": _prod("83", Verdict(state=State.FAILED, exit=code(137), reason=NZ)),
    "script_exit_200": _prod("84", Verdict(state=State.FAILED, exit=code(200), reason=NZ)),
    "script_sigterm": _prod("85", Verdict(state=State.FAILED, exit=sig(15), reason=RAISED)),
    "script_sigsegv": _prod("86", Verdict(state=State.FAILED, exit=sig(11), reason=RAISED)),
    "script_steps_7_3_2": _prod(
        "87", Verdict(state=State.FAILED, exit=code(2), derived=code(7), reason=NZ)
    ),
    "script_step_exit_5_then_true": _prod(
        "88",
        Verdict(
            state=State.COMPLETED, exit=code(0), derived=code(5), reason=NONE, step_failed=True
        ),
    ),
    "script_name_special_chars": _prod("89", Verdict(state=State.FAILED, exit=code(4), reason=NZ)),
    # bash cannot find a command: 127
    "script_command_not_found": _prod("90", Verdict(state=State.FAILED, exit=code(127), reason=NZ)),
    # exit 3, submitted and ended while slurmdbd was down
    "dbd_outage_exit_3": _prod("96", Verdict(state=State.FAILED, exit=code(3), reason=NZ)),
}
