"""A plain reference reading of ``sacct -P`` text, for tests only: the rules written the
obvious way (split_rows into a dict per row, each field through its own value parser, no
memo, no index tricks) so that the one production parser, tuned for speed
(hpcstate_slurm._parse.parse_sacct_text), can be checked against it on every recording
and on generated tables: the same rows, or a ParseError naming the same line and field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hpcstate import AccountingRow, ParseError, State, parse_slurm_reason
from hpcstate_slurm._parse import (
    accounting_state,
    parse_cpu_time,
    parse_elapsed,
    parse_exit_text,
    parse_nodes,
    parse_rss,
    parse_time,
    split_job_id,
    split_rows,
)


def reference_rows(
    body: str, columns: Sequence[str], *, exit_lossy: bool, derived_lossy: bool = False
) -> list[AccountingRow]:
    """The rows of a body (the output after its header line) in the given columns."""
    free = "JobName" if "JobName" in columns else columns[-1]
    table = split_rows(body, columns=columns, free_column=free, command="sacct", first_line_no=2)
    rows = []
    for line_no, fields in table:
        try:
            rows.append(_row(fields, exit_lossy=exit_lossy, derived_lossy=derived_lossy))
        except ParseError as error:  # noqa: PERF203 (a test's reference: clarity first)
            if error.line_no is None:
                error.line_no = line_no
                error.line = "|".join(fields.values())
            raise
    return rows


def _row(fields: Mapping[str, str], *, exit_lossy: bool, derived_lossy: bool) -> AccountingRow:
    get = fields.get
    job_id, step = split_job_id(fields["JobID"], command="sacct")
    state, reason = accounting_state(fields["State"], command="sacct")
    if reason is None and get("Reason", "").strip():
        reason = parse_slurm_reason(get("Reason", ""))
    return AccountingRow(
        job_id=job_id,
        step=step,
        raw_id=get("JobIDRaw", "").strip(),
        state=state,
        state_text=fields["State"].strip(),
        exit=parse_exit_text(
            get("ExitCode", ""),
            high_codes_lossy=exit_lossy,
            known_success=state is State.COMPLETED,
            command="sacct",
        ),
        derived_exit=parse_exit_text(
            get("DerivedExitCode", ""),
            high_codes_lossy=derived_lossy,
            command="sacct",
            field="DerivedExitCode",
        ),
        reason=reason,
        submitted_at=parse_time(get("Submit", ""), command="sacct", field="Submit"),
        started_at=parse_time(get("Start", ""), command="sacct", field="Start"),
        finished_at=parse_time(get("End", ""), command="sacct", field="End"),
        elapsed_s=_elapsed(get("ElapsedRaw", ""), get("Elapsed", "")),
        cpu_time_s=parse_cpu_time(get("TotalCPU", ""), command="sacct"),
        max_rss_bytes=parse_rss(get("MaxRSS", ""), command="sacct"),
        nodes=parse_nodes(get("NodeList", "")),
        name=get("JobName", ""),
    )


def _elapsed(raw: str, text: str) -> float | None:
    """ElapsedRaw (whole seconds) when the row has it, else Elapsed."""
    raw = raw.strip()
    if not raw:
        return parse_elapsed(text, command="sacct")
    if not (raw.isascii() and raw.isdecimal()) or len(raw) > 12:
        raise ParseError("expected seconds", command="sacct", field="ElapsedRaw", line=raw)
    return float(int(raw))
