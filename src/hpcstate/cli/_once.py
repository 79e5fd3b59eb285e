"""``submit --once SENTINEL``: run a command at most once to success.

Pure: builds a bash wrapper, runs nothing. The wrapper, on the job's side:

* runs under ``set -euo pipefail``;
* exits 0 at once, without running the command, when SENTINEL exists (printing
  ``hpcstate: already there: PATH`` on stderr, which the tracker turns into the
  ``already_done`` marker);
* treats what a killed earlier attempt left at SENTINEL as half-built and removes it
  (an ``SENTINEL.hpcstate-running`` file marks an attempt in progress);
* creates SENTINEL (an empty file) only when the command succeeded and did not
  create SENTINEL itself, and removes a SENTINEL the failed command left behind;
* ends the way the command ended: its exit code, or, if the wrapper itself is sent
  SIGTERM/SIGINT/SIGHUP (scancel, a time limit), killed by that same signal.

``~`` in SENTINEL is expanded by the wrapper (``$HOME`` where the job runs), never
locally. A command killed by a signal shows as exit 128+N, as in any batch script:
bash cannot tell the two apart.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Final

#: The line the wrapper prints when the sentinel is already there (stderr).
ALREADY_THERE: Final = "hpcstate: already there: "
#: argv[0] of the wrapper shell, so it is recognizable in ps and in error messages.
WRAPPER_NAME: Final = "hpcstate-once"
IN_PROGRESS_SUFFIX: Final = ".hpcstate-running"


def shell_path(path: str) -> str:
    """``path`` as a bash word, with a leading ``~`` or ``~/`` left to the job's $HOME.

    Raises ValueError for an empty path or ``~user`` (not expanded on purpose: the
    user's home on the job's side is unknown here).
    """
    if not path:
        raise ValueError("the --once sentinel path is empty")
    if "\0" in path:
        raise ValueError("the --once sentinel path contains a NUL byte")
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:]) if path[2:] else '"$HOME"/'
    if path.startswith("~"):
        raise ValueError(
            f"--once {path!r}: only '~' and '~/...' are expanded (to $HOME where the job "
            "runs); write the full path for another user's home"
        )
    return shlex.quote(path)


def once_script(sentinel: str) -> str:
    """The wrapper's text; the command to run is its positional parameters (``"$@"``)."""
    target = shell_path(sentinel)
    return f"""set -euo pipefail
sentinel={target}
running="$sentinel"{IN_PROGRESS_SUFFIX}
if [ -e "$running" ]; then
  # An earlier attempt was killed before it could clean up: its output is half-built.
  rm -rf -- "$sentinel" "$running"
fi
if [ -e "$sentinel" ]; then
  printf '%s%s\\n' {shlex.quote(ALREADY_THERE)} "$sentinel" >&2
  exit 0
fi
mkdir -p -- "$(dirname -- "$sentinel")"
: > "$running"
hpcstate_once_finish() {{
  status=$?
  if [ "$status" -ne 0 ]; then rm -rf -- "$sentinel"; fi
  rm -f -- "$running"
  exit "$status"
}}
hpcstate_once_signalled() {{
  trap - EXIT "$1"
  rm -rf -- "$sentinel" "$running"
  kill -s "$1" "$$"
}}
trap hpcstate_once_finish EXIT
trap 'hpcstate_once_signalled TERM' TERM
trap 'hpcstate_once_signalled INT' INT
trap 'hpcstate_once_signalled HUP' HUP
"$@"
if [ ! -e "$sentinel" ]; then : > "$sentinel"; fi
"""


def once_command(sentinel: str, command: Sequence[str]) -> tuple[str, ...]:
    """argv that runs ``command`` under the wrapper: ``bash -c SCRIPT hpcstate-once ARGV...``.

    The command stays an argv all the way (no quoting round trip).
    """
    if not command:
        raise ValueError("--once needs a command to run")
    return ("bash", "-c", once_script(sentinel), WRAPPER_NAME, *command)


def is_already_there(stderr_line: str) -> bool:
    return stderr_line.startswith(ALREADY_THERE)
