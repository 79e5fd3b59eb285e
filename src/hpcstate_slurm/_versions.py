"""What each Slurm release does differently, as data.

Every fact here is one a tracker's correctness depends on. Each carries where it was
seen (:data:`EVIDENCE`): *measured* (real 22.05.8 outputs in ``tests/golden/slurm/22.05.8``),
*recorded* (real 26.05.3 outputs in ``tests/golden/slurm/26.05.3`` and
``26.05.3-production``) or *source* (read in Slurm's source, not seen running).
Releases between the two recorded ones that nobody verified get the cautious answer: an
exit code is called ambiguous rather than presented as fact.
"""

from __future__ import annotations

import re
from functools import total_ordering

from attrs import frozen

from hpcstate import ParseError

_VERSION = re.compile(r"\bslurm(?:-wlm)?\s+(\d{1,3})\.(\d{1,2})(?:\.(\d{1,3}))?", re.IGNORECASE)


@total_ordering
@frozen(kw_only=True)
class SlurmVersion:
    """A Slurm release, ordered: ``22.05.8 < 23.02.0 < 26.05.3``."""

    major: int
    minor: int
    micro: int = 0

    @classmethod
    def parse(cls, text: str) -> SlurmVersion:
        """Read ``sbatch --version`` output (``slurm 22.05.8``, ``slurm-wlm 22.05.8``)."""
        match = _VERSION.search(text)
        if match is None:
            raise ParseError(
                "expected a Slurm version like 'slurm 22.05.8'",
                command="sbatch --version",
                line=text.strip()[:200],
            )
        micro = match.group(3)
        return cls(
            major=int(match.group(1)),
            minor=int(match.group(2)),
            micro=int(micro) if micro is not None else 0,
        )

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.micro)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SlurmVersion):
            return NotImplemented
        return self.key < other.key

    def __str__(self) -> str:
        return f"{self.major}.{self.minor:02d}.{self.micro}"


def _v(text: str) -> SlurmVersion:
    major, minor, micro = (int(part) for part in text.split("."))
    return SlurmVersion(major=major, minor=minor, micro=micro)


#: The oldest release this backend supports: ``squeue -O exit_code``/``RestartCnt``,
#: ``sacct -D --noconvert`` and ``SLURM_TIME_FORMAT=%s`` all exist from here on (source).
MINIMUM_VERSION = _v("21.08.0")
#: The releases whose real outputs are in tests/golden/slurm.
MEASURED_VERSION = _v("22.05.8")
RECORDED_VERSION = _v("26.05.3")
#: First release seen printing sacct's ExitCode without subtracting 128 (recorded 26.05.3:
#: ``exit 137`` -> ``137:0``). 22.05.8 prints ``9:0`` (measured); the 23.02 source still
#: has the subtraction. Releases in between are unverified and treated as lossy.
_SACCT_TEXT_LOSSLESS_FROM = _v("26.05.0")
#: sacct --json reports every plain non-zero exit as SUCCESS/0 before data_parser v0.0.40
#: (measured on 22.05 dbv0.0.38; source for 21.08 dbv0.0.37 and 23.02 v0.0.39).
_SACCT_JSON_EXIT_FIXED_FROM = _v("23.11.0")
#: squeue --json ignores every filter on 21.08 and 22.05 (measured: the whole queue).
_SQUEUE_JSON_FILTERS_FROM = _v("23.02.0")
#: A script killed by a signal gets Reason RaisedSignal:N(...) from 23.02 (source,
#: commit c1185c6d20; recorded on 26.05.3); 22.05.8 says JobLaunchFailure (measured).
_RAISED_SIGNAL_REASON_FROM = _v("23.02.0")
#: ``squeue -O exit_code``/``DerivedEC`` print ``code:signal`` from 23.02 on (the issue
#: report and the 23.02 release notes; recorded on 26.05.3: ``137:0``, ``0:15``); 22.05.8
#: prints the raw wait status (measured: ``35072``, ``15``).
_SQUEUE_EXIT_CODE_SIGNAL_FROM = _v("23.02.0")


@frozen(kw_only=True)
class Evidence:
    """Where one row of the behaviour table was seen, per side of its boundary."""

    flag: str
    #: The first release with the newer behaviour (None: every supported release).
    changes_at: SlurmVersion | None
    #: Releases whose real output shows the OLD behaviour, and how it was seen.
    before: str
    #: Releases whose real output shows the NEW behaviour, and how it was seen.
    after: str


#: Each row of :class:`SlurmBehaviour` and the releases it was measured on. "measured":
#: the real Debian 22.05.8 cluster (tests/golden/slurm/22.05.8, and the live tests);
#: "recorded": real 26.05.3 output of the backend's own commands
#: (tests/golden/slurm/26.05.3-production) or of other formats (tests/golden/slurm/26.05.3);
#: "source": read in Slurm's source or release notes, not seen running.
EVIDENCE: tuple[Evidence, ...] = (
    Evidence(
        flag="squeue_exit_code_is_wait_status",
        changes_at=_SQUEUE_EXIT_CODE_SIGNAL_FROM,
        before="measured on 22.05.8: raw wait status (exit 137 -> 35072, SIGTERM -> 15)",
        after="recorded on 26.05.3: code:signal (137:0, 0:15); 23.02-25.x: source only",
    ),
    Evidence(
        flag="sacct_exit_high_codes_lossy",
        changes_at=_SACCT_TEXT_LOSSLESS_FROM,
        before="measured on 22.05.8: exit 137 -> 9:0; 23.02 source still subtracts 128",
        after="recorded on 26.05.3: exit 137 -> 137:0; 23.02-25.x unverified (treated lossy)",
    ),
    Evidence(
        flag="sacct_derived_high_codes_lossy",
        changes_at=None,
        before="",
        after="measured on 22.05.8 (a step exiting 133: DerivedExitCode 133:0, ExitCode "
        "5:0) and recorded on 26.05.3; never lossy (print.c, source)",
    ),
    Evidence(
        flag="sacct_json_exit_faulty",
        changes_at=_SACCT_JSON_EXIT_FIXED_FROM,
        before="measured on 22.05.8 (dbv0.0.38: SUCCESS/0 for exit 3); source for 21.08, 23.02",
        after="recorded on 26.05.3 (data_parser v0.0.42-v0.0.45)",
    ),
    Evidence(
        flag="squeue_json_ignores_filters",
        changes_at=_SQUEUE_JSON_FILTERS_FROM,
        before="measured on 22.05.8: the whole queue whatever -j/-t say",
        after="recorded on 26.05.3: squeue --json -j ID lists that job only",
    ),
    Evidence(
        flag="raised_signal_reason",
        changes_at=_RAISED_SIGNAL_REASON_FROM,
        before="measured on 22.05.8: JobLaunchFailure for a script killed by a signal",
        after="recorded on 26.05.3: RaisedSignal:15(Terminated); source from 23.02",
    ),
    Evidence(
        flag="epoch_time_format",
        changes_at=None,
        before="",
        after="measured on 22.05.8 and recorded on 26.05.3 (squeue and sacct)",
    ),
)


@frozen(kw_only=True)
class SlurmBehaviour:
    """What one Slurm release does; the dialect reads only these flags, never a version."""

    version: SlurmVersion
    #: sacct text ExitCode prints ``code - 128`` for codes >= 128 (``9:0`` for exit 137).
    sacct_exit_high_codes_lossy: bool
    #: sacct text DerivedExitCode has no such subtraction (source: print.c prints the
    #: derived status with WEXITSTATUS only), so it stays exact.
    sacct_derived_high_codes_lossy: bool = False
    #: sacct --json exit_code says SUCCESS/0 for non-zero exits (signals are right).
    sacct_json_exit_faulty: bool
    #: squeue --json returns every job whatever -j/-t say.
    squeue_json_ignores_filters: bool
    #: Reason RaisedSignal:N for scripts killed by a signal (else JobLaunchFailure).
    raised_signal_reason: bool
    #: ``squeue -O exit_code``/``DerivedEC`` print the controller's raw wait status
    #: (measured on 22.05.8: exit 137 -> 35072, SIGINT -> 2); from 23.02 on they print
    #: ``code:signal`` (recorded on 26.05.3: ``137:0``, ``0:15``). Both are lossless,
    #: which makes the one queue call also the controller record. An answer in the other
    #: format is read by the format it has (see ``_parse.parse_queue_exit``).
    squeue_exit_code_is_wait_status: bool = True
    #: SLURM_TIME_FORMAT=%s gives epoch seconds (measured on 22.05.8 for sacct and squeue).
    epoch_time_format: bool = True

    @property
    def sacct_text_lossless(self) -> bool:
        return not self.sacct_exit_high_codes_lossy


def behaviour_for(version: SlurmVersion) -> SlurmBehaviour:
    """The behaviour table for one release (unknown newer releases: the newest known)."""
    return SlurmBehaviour(
        version=version,
        sacct_exit_high_codes_lossy=version < _SACCT_TEXT_LOSSLESS_FROM,
        sacct_json_exit_faulty=version < _SACCT_JSON_EXIT_FIXED_FROM,
        squeue_json_ignores_filters=version < _SQUEUE_JSON_FILTERS_FROM,
        raised_signal_reason=version >= _RAISED_SIGNAL_REASON_FROM,
        squeue_exit_code_is_wait_status=version < _SQUEUE_EXIT_CODE_SIGNAL_FROM,
    )
