"""The argument parser (stdlib argparse). Building it does no I/O."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from hpcstate import State

from ._exitcodes import DESCRIPTIONS

PROG = "hpcstate"


class UsageError(Exception):
    """Bad arguments: the message is printed with the command's usage line."""

    def __init__(self, message: str, usage: str = "") -> None:
        self.usage = usage
        super().__init__(message)


class _Parser(argparse.ArgumentParser):
    # argparse exits 2 on errors; hpcstate's usage errors exit 64 (EX_USAGE), and the
    # caller decides: raise instead of exiting.
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.format_usage())

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As argparse's, but an unknown option is reported with the usage of the
        subcommand it was given to (``hpcstate list --bogus``), not the top level's."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            command = getattr(parsed, "command", None)
            sub = self._commands.get(command) if command else None
            usage = (sub or self).format_usage()
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}", usage)
        return parsed

    @property
    def _commands(self) -> dict[str, argparse.ArgumentParser]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}


def _exit_table() -> str:
    lines = ["exit status (watch, submit --watch; the hpcstate documentation lists them all):"]
    lines.append("  1-255    the job's own exit code; 128+N when signal N killed it")
    lines.extend(f"  {code:<8} {text}" for code, text in sorted(DESCRIPTIONS.items()))
    return "\n".join(lines)


def _count(text: str) -> int:
    """A whole number >= 1 (argparse names the option in its error)."""
    try:
        value = int(text, 10)
    except ValueError:
        value = 0
    if value < 1 or not text.strip().isascii():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _limit(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON (one record per line; `hpcstate schema` prints its JSON Schema); "
        "errors too, as one JSON object on stderr",
    )


def _watch_options(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
    group = parser.add_argument_group(f"{prefix}waiting")
    group.add_argument(
        "--exit-status",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="exit with the job's own status (0, its exit code, 128+N for signal N) or a "
        "documented code for other verdicts, as sbatch --wait does (the default); "
        "--no-exit-status: exit 0 once every verdict is in, whatever it is",
    )
    group.add_argument(
        "--require-confirmed",
        action="store_true",
        help="a success no authoritative source confirmed exits 207",
    )
    group.add_argument(
        "--interval", metavar="S", help="seconds between polls (default: the tracker's)"
    )
    group.add_argument(
        "--grace",
        metavar="DURATION",
        help="how long a job that left the queue waits for its confirmation before it gets "
        "an unconfirmed verdict (e.g. 90s, 15m; default: the config file's [tracker] grace, "
        "else 10m)",
    )
    group.add_argument(
        "--timeout",
        metavar="S",
        help="give up waiting after S (exit 124; 69 if the backend was unreachable)",
    )


def build_parser(default_backend: str | None = None) -> argparse.ArgumentParser:
    """The parser; ``default_backend`` (when known) is shown in ``submit --help``."""
    parser = _Parser(
        prog=PROG,
        description="The true outcome of batch jobs: confirmed verdicts, lossless exit:signal.",
        epilog=_exit_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="configuration file (default: $HPCSTATE_CONFIG, else "
        "$XDG_CONFIG_HOME/hpcstate/config.toml; none: the embedded local backend)",
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="state database, a file or a postgresql:// URL (default: $HPCSTATE_DB, else the "
        "config file's database, else $XDG_STATE_HOME/hpcstate/hpcstate.db)",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    submit = commands.add_parser(
        "submit",
        help="submit a job; prints its run id at once",
        usage="%(prog)s [options] -- COMMAND [ARG...]\n       %(prog)s [options] --script FILE",
    )
    submit.add_argument(
        "--backend",
        metavar="NAME",
        help="a configured backend or an installed kind (default: "
        + (
            f"{default_backend}, from $HPCSTATE_BACKEND, the config file or the built-in local)"
            if default_backend
            else "$HPCSTATE_BACKEND, else the config file's default_backend, else local)"
        ),
    )
    submit.add_argument("--name", metavar="N", default="", help="job name")
    resources = submit.add_argument_group(
        "resources (refused, naming the backend, where it cannot express one)"
    )
    resources.add_argument(
        "-t",
        "--time",
        "--time-limit",
        dest="time_limit",
        metavar="T",
        help="time limit, e.g. 90s, 15m, 1h30m, 1:30:00, 2-00:00:00 (a bare number is seconds)",
    )
    resources.add_argument(
        "--mem", metavar="M", help="memory, e.g. 512M, 4G (a bare number is MiB)"
    )
    resources.add_argument(
        "-c", "--cpus-per-task", "--cpus", dest="cpus", metavar="N", type=_count,
        help="CPUs per task",
    )  # fmt: skip
    resources.add_argument("-n", "--ntasks", dest="tasks", metavar="N", type=_count, help="tasks")
    resources.add_argument("-N", "--nodes", metavar="N", type=_count, help="nodes")
    resources.add_argument("-G", "--gpus", metavar="[TYPE:]N", help="GPUs, e.g. 2 or a100:2")
    submit.add_argument("--partition", metavar="P")
    submit.add_argument("--account", metavar="A")
    submit.add_argument("--array", metavar="SPEC", help="array tasks, e.g. 1-10%%2 or 0,3,5-7")
    submit.add_argument(
        "--env", metavar="K=V", action="append", default=[], help="set in the job's environment"
    )
    submit.add_argument("--chdir", metavar="D", help="working directory of the job")
    submit.add_argument(
        "--output",
        metavar="PATH",
        help="the job's stdout file where it runs (%%j: job id, %%A/%%a: array id/index)",
    )
    submit.add_argument("--error", metavar="PATH", help="the job's stderr file (default: --output)")
    submit.add_argument(
        "--extra-arg",
        metavar="X",
        action="append",
        default=[],
        help="raw scheduler flag, passed as is (repeatable)",
    )
    submit.add_argument(
        "--once",
        metavar="SENTINEL",
        help="run the command at most once to success: skip it if SENTINEL exists, create "
        "SENTINEL on success (~ expands where the job runs)",
    )
    submit.add_argument("--script", metavar="FILE", help="submit this batch script")
    submit.add_argument("--watch", action="store_true", help="wait for the verdict, as watch")
    _watch_options(submit, prefix="--watch ")
    _json(submit)
    submit.add_argument("command_argv", nargs="*", metavar="COMMAND", help=argparse.SUPPRESS)

    track = commands.add_parser("track", help="adopt a job submitted by other means")
    track.add_argument("ref", metavar="BACKEND:NATIVE_ID")
    track.add_argument("--name", metavar="N", default="")
    track.add_argument("--watch", action="store_true", help="wait for the verdict, as watch")
    _watch_options(track, prefix="--watch ")
    _json(track)

    watch = commands.add_parser(
        "watch",
        help="wait for confirmed verdicts",
        epilog=_exit_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument("refs", nargs="+", metavar="RUN", help="run id or BACKEND:NATIVE_ID")
    _watch_options(watch)
    _json(watch)

    status = commands.add_parser("status", help="show a run")
    status.add_argument("ref", metavar="RUN", help="run id or BACKEND:NATIVE_ID")
    status.add_argument(
        "--cached", action="store_true", help="show what is stored; do not ask the backend"
    )
    _json(status)

    listing = commands.add_parser("list", help="list runs, newest first")
    listing.add_argument(
        "--state", metavar="S", choices=[s.value for s in State], help="only runs in this state"
    )
    listing.add_argument("--backend", metavar="B", help="only runs on this backend")
    listing.add_argument(
        "--limit", metavar="N", type=_limit, help="at most N runs (after --state/--backend)"
    )
    listing.add_argument(
        "--cached", action="store_true", help="show what is stored; do not ask the backends"
    )
    _json(listing)

    cancel = commands.add_parser("cancel", help="cancel a run")
    cancel.add_argument("ref", metavar="RUN", help="run id or BACKEND:NATIVE_ID")
    _json(cancel)

    logs = commands.add_parser("logs", help="print a run's output")
    logs.add_argument("ref", metavar="RUN", help="run id or BACKEND:NATIVE_ID")
    logs.add_argument("--stderr", action="store_true", help="the error stream, not stdout")
    logs.add_argument("--follow", action="store_true", help="keep printing until the verdict")
    logs.add_argument("--interval", metavar="S", help="seconds between reads with --follow")
    _json(logs)

    prune = commands.add_parser("prune", help="forget finished runs")
    prune.add_argument(
        "--older-than", metavar="D", default="30d", help="unchanged for D (default 30d)"
    )
    _json(prune)

    decode = commands.add_parser(
        "decode",
        help="explain an exit value: 0:9, 137:0, a wait status, a scheduler's exit code",
    )
    decode.add_argument("value", metavar="VALUE")
    decode.add_argument(
        "--from",
        dest="form",
        metavar="FORM",
        help=(
            "where VALUE comes from: exit, wait, or a form an installed backend declares "
            "(default: guessed from its shape)"
        ),
    )
    _json(decode)

    report = commands.add_parser("report", help="from inside a job: report how its payload ended")
    how = report.add_mutually_exclusive_group(required=True)
    how.add_argument("--exit-code", metavar="N", type=int)
    how.add_argument("--signal", metavar="N", help="number or name (9, KILL, SIGKILL)")
    how.add_argument("--wait-status", metavar="N", type=int)
    report.add_argument("--detail", metavar="TEXT", default="")
    _json(report)

    fleet = commands.add_parser(
        "fleet",
        help="who polls each backend for the processes sharing the store (leases)",
    )
    fleet.add_argument(
        "--prometheus",
        action="store_true",
        help="print the figures as metrics in the Prometheus text format",
    )
    _json(fleet)

    backends = commands.add_parser("backends", help="installed backends and their capabilities")
    _json(backends)

    commands.add_parser(
        "schema",
        help="print the JSON Schema (draft 2020-12) of the records --json prints",
    )
    return parser


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Split ``submit ... -- COMMAND...`` at the first ``--``: argparse would read
    options inside COMMAND (``sh -c``) as its own."""
    args = list(argv)
    if "--" in args:
        at = args.index("--")
        return args[:at], args[at + 1 :]
    return args, None
