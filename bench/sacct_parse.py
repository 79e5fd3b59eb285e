"""sacct parse throughput on a realistic corpus (distinct jobs, distinct times).

Run: python bench/sacct_parse.py [--jobs 20000] [--repeat 5]
The corpus repeats the SHAPE of real Slurm 22.05 output (tests/golden/slurm/22.05.8,
`sacct -P ... SLURM_TIME_FORMAT=%s`) with a new job id and new timestamps per job, so
memoization of repeated values helps only as much as it does on a real cluster (a job's
steps share its times, states and nodes). Prints the median rows/s of parse_sacct_text
(rows -> AccountingRow) on the whole corpus as ONE output and as poll-sized outputs of
1,000 jobs (5,000 rows, what one sacct of a poll returns when 1,000 jobs ended), and of
the dialect's full parse_accounting (rows -> merged, version-aware Observations).

This bench chose the one production sacct parser (issue 15): columns read by index with
memos beat the dict-per-row reading by about 2.6x on this corpus (79,057 vs 30,859 rows/s,
medians of 15 alternating runs on a loaded 2-CPU host); the latter survives only as the
tests' plain reference (tests/slurm/sacct_reference.py).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timezone

from hpcstate.backend import AccountingQuery, CommandResult
from hpcstate_slurm._dialect import SlurmDialect
from hpcstate_slurm._parse import parse_sacct_text
from hpcstate_slurm._versions import SlurmVersion

HEADER = (
    "JobID|JobIDRaw|State|ExitCode|DerivedExitCode|Reason|Elapsed|ElapsedRaw|TotalCPU|"
    "CPUTimeRAW|MaxRSS|Submit|Start|End|NodeList|JobName"
)
# One job as 22.05 prints it: job row, .batch, .extern, two srun steps.
TEMPLATE = (
    "{j}|{j}|FAILED|2:0|7:0|None|00:00:03|3|00:00.047|3||{s}|{t}|{e}|node1|case.sh\n"
    "{j}.batch|{j}.batch|FAILED|2:0|||00:00:03|3|00:00.041|3|1904K|{t}|{t}|{e}|node1|batch\n"
    "{j}.extern|{j}.extern|COMPLETED|0:0|||00:00:03|3|00:00:00|3|0|{t}|{t}|{e}|node1|extern\n"
    "{j}.0|{j}.0|FAILED|7:0|||00:00:01|1|00:00.001|1|344K|{t}|{t}|{m}|node1|sh\n"
    "{j}.1|{j}.1|FAILED|3:0|||00:00:01|1|00:00.002|1|340K|{m}|{m}|{e}|node1|sh\n"
)
ROWS_PER_JOB = 5


def corpus(jobs: int) -> tuple[str, list[str]]:
    base = 1_795_461_000
    lines = [HEADER + "\n"]
    ids = []
    for n in range(jobs):
        job = str(100_000 + n)
        ids.append(job)
        submit = base + 3 * n
        lines.append(TEMPLATE.format(j=job, s=submit, t=submit + 1, m=submit + 2, e=submit + 4))
    return "".join(lines), ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    text, ids = corpus(args.jobs)
    rows = args.jobs * ROWS_PER_JOB
    dialect = SlurmDialect.for_version(SlurmVersion(major=22, minor=5, micro=8))
    query = AccountingQuery(native_ids=ids)
    result = CommandResult(argv=("sacct",), returncode=0, stdout=text)
    now = datetime.now(timezone.utc)
    lines = text.split("\n")[1:-1]
    chunk = 1_000 * ROWS_PER_JOB
    polls = [
        HEADER + "\n" + "\n".join(lines[i : i + chunk]) + "\n" for i in range(0, len(lines), chunk)
    ]
    raw, per_poll, full = [], [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        parsed = parse_sacct_text(text, exit_lossy=True)
        raw.append(rows / (time.perf_counter() - start))
        assert len(parsed) == rows
        del parsed
        start = time.perf_counter()
        parsed_rows = sum(len(parse_sacct_text(poll, exit_lossy=True)) for poll in polls)
        per_poll.append(rows / (time.perf_counter() - start))
        assert parsed_rows == rows
        start = time.perf_counter()
        observations = dialect.parse_accounting(result, query=query, observed_at=now)
        full.append(rows / (time.perf_counter() - start))
        assert len(observations) == args.jobs
    print(f"{rows:,} rows ({args.jobs:,} jobs x {ROWS_PER_JOB} rows), median of {args.repeat}:")
    print(f"  parse_sacct_text      {statistics.median(raw):>10,.0f} rows/s (one output)")
    print(
        f"  parse_sacct_text      {statistics.median(per_poll):>10,.0f} rows/s"
        f" ({len(polls)} outputs of {chunk:,} rows)"
    )
    print(f"  dialect accounting    {statistics.median(full):>10,.0f} rows/s (merged Observations)")


if __name__ == "__main__":
    main()
