"""Property tests: every parser returns a value or raises ParseError, never anything else;
sacct rows rendered the way Slurm prints them (no escaping) read back exactly."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sacct_json import parse_sacct_json
from sacct_reference import reference_rows

from hpcstate import AccountingRow, ExitStatus, ParseError, State
from hpcstate.backend import AccountingQuery, CommandResult
from hpcstate_slurm import SlurmDialect, SlurmVersion
from hpcstate_slurm._parse import (
    SACCT_FIELDS,
    SQUEUE_COLUMNS,
    parse_cpu_time,
    parse_elapsed,
    parse_exit_text,
    parse_rss,
    parse_sacct_text,
    parse_sbatch_output,
    parse_squeue,
    parse_time,
    parse_wait_status,
)

UTC = timezone.utc
AT = datetime(2026, 1, 1, tzinfo=UTC)
DIALECTS = (SlurmDialect.for_version("22.05.8"), SlurmDialect.for_version("26.05.3"))

# Text that looks like Slurm output often enough to get past the first checks.
TOKENS = st.sampled_from(
    [
        "12",
        "12_3",
        "12_[1-3%2]",
        "12.batch",
        "12.extern",
        "12+0",
        "12.0",
        "FAILED",
        "COMPLETED",
        "CANCELLED by 0",
        "REQUEUED",
        "PENDING",
        "RUNNING",
        "COMPLETING",
        "0:0",
        "137:0",
        "0:15",
        "300:0",
        "0:200",
        "35072",
        "65535",
        "2026-11-23T19:08:21",
        "2026-02-30T00:00:00",
        "1795460901",
        "Unknown",
        "None",
        "N/A",
        "00:01:02",
        "1-00:00:00",
        "01:05.123",
        "4900K",
        "11.77M",
        "None assigned",
        "node[1-3]",
        "",
        "|",
        "x|y",
        "\u00e9\u2603",
    ]
)
ROW = st.lists(st.one_of(TOKENS, st.text(max_size=6)), min_size=0, max_size=18).map("|".join)
TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(ROW, max_size=6).map("\n".join),
    st.lists(ROW, max_size=6).map(lambda rows: "\n".join(["|".join(SACCT_FIELDS), *rows])),
)


def _only_parse_errors(call: Callable[[], object]) -> None:
    with contextlib.suppress(ParseError):
        call()


@given(TEXT)
def test_sacct_text_parser_is_total(text: str) -> None:
    for lossy in (False, True):
        _only_parse_errors(lambda lossy=lossy: parse_sacct_text(text, exit_lossy=lossy))


@given(TEXT)
def test_squeue_parser_is_total(text: str) -> None:
    _only_parse_errors(lambda: parse_squeue(text))
    _only_parse_errors(lambda: parse_squeue(text, columns=("id", "state", "reason", "name")))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | TOKENS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "jobs",
                    "job_id",
                    "state",
                    "current",
                    "exit_code",
                    "status",
                    "return_code",
                    "signal",
                    "signal_id",
                    "id",
                    "set",
                    "number",
                    "infinite",
                    "steps",
                    "step",
                    "time",
                    "start",
                    "end",
                    "array",
                    "task_id",
                    "task",
                    "het",
                    "job_offset",
                    "name",
                    "nodes",
                    "tres",
                    "requested",
                    "max",
                    "type",
                    "count",
                    "total",
                    "seconds",
                    "microseconds",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)


@given(st.one_of(st.text(max_size=200), JSON.map(json.dumps)))
def test_sacct_json_parser_is_total(text: str) -> None:
    for faulty in (False, True):
        _only_parse_errors(lambda faulty=faulty: parse_sacct_json(text, exit_faulty=faulty))


@given(JSON)
def test_sacct_json_parser_is_total_on_job_shapes(job: object) -> None:
    _only_parse_errors(lambda: parse_sacct_json(json.dumps({"jobs": [job]}), exit_faulty=True))


@given(st.text(max_size=60))
def test_value_parsers_are_total(text: str) -> None:
    for parser in (
        lambda: parse_time(text),
        lambda: parse_elapsed(text),
        lambda: parse_cpu_time(text),
        lambda: parse_rss(text),
        lambda: parse_exit_text(text, high_codes_lossy=True),
        lambda: parse_wait_status(text),
        lambda: parse_sbatch_output(text),
        lambda: SlurmVersion.parse(text),
    ):
        _only_parse_errors(parser)


@given(TEXT, st.integers(min_value=0, max_value=2))
def test_dialect_parsers_are_total(text: str, returncode: int) -> None:
    """With rc 0 only ParseError may come out; other codes are failures of their own."""
    result = CommandResult(argv=("x",), returncode=0, stdout=text)
    for dialect in DIALECTS:
        _only_parse_errors(
            lambda d=dialect: d.parse_queue(result, native_ids=["12", "12_3"], observed_at=AT)
        )
        _only_parse_errors(
            lambda d=dialect: d.parse_accounting(
                result, query=AccountingQuery(native_ids=["12", "12_3"]), observed_at=AT
            )
        )
        _only_parse_errors(lambda d=dialect: d.parse_find_submission(result, "tag"))


# -- round trip --------------------------------------------------------------------------

NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
    max_size=30,
).filter(lambda name: name.strip() == name or True)
STATES = st.sampled_from(
    [
        ("COMPLETED", State.COMPLETED),
        ("FAILED", State.FAILED),
        ("TIMEOUT", State.TIMEOUT),
        ("OUT_OF_MEMORY", State.OUT_OF_MEMORY),
        ("CANCELLED by 1000", State.CANCELLED),
        ("RUNNING", State.RUNNING),
        ("PENDING", State.QUEUED),
    ]
)
EXITS = st.one_of(
    st.integers(min_value=0, max_value=255).map(ExitStatus.exited),
    st.integers(min_value=1, max_value=64).map(ExitStatus.killed),
)
TIMES = st.integers(min_value=1_600_000_000, max_value=1_900_000_000).map(
    lambda s: datetime.fromtimestamp(s, tz=UTC)
)


@st.composite
def sacct_rows(draw: st.DrawFn) -> AccountingRow:
    job = str(draw(st.integers(min_value=1, max_value=10**7)))
    task = draw(st.none() | st.integers(min_value=0, max_value=999))
    if task is not None:
        job = f"{job}_{task}"
    text, state = draw(STATES)
    submitted = draw(TIMES)
    started = submitted + timedelta(seconds=draw(st.integers(min_value=0, max_value=10**5)))
    return AccountingRow(
        job_id=job,
        step=draw(st.none() | st.sampled_from(["batch", "extern", "0", "12"])),
        raw_id=job.split("_")[0],
        state=state,
        state_text=text,
        exit=draw(EXITS),
        submitted_at=submitted,
        started_at=started,
        finished_at=started + timedelta(seconds=draw(st.integers(min_value=0, max_value=10**6))),
        elapsed_s=float(draw(st.integers(min_value=0, max_value=10**7))),
        cpu_time_s=draw(st.integers(min_value=0, max_value=10**6).map(lambda ms: ms / 1000)),
        max_rss_bytes=draw(st.none() | st.integers(min_value=0, max_value=10**12)),
        name=draw(NAMES),
    )


def _elapsed(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def _cpu(seconds: float) -> str:
    """sacct's _elapsed_time(): MM:SS.mmm under an hour with a sub-second part."""
    whole, millis = divmod(round(seconds * 1000), 1000)
    if whole >= 3600 or millis == 0:
        return _elapsed(whole) if whole >= 3600 else f"00:{whole // 60:02d}:{whole % 60:02d}"
    return f"{whole // 60:02d}:{whole % 60:02d}.{millis:03d}"


def render(rows: list[AccountingRow], columns: tuple[str, ...], epoch: bool) -> str:
    """What `sacct -P --noconvert` prints: a header, then raw values joined by '|'."""

    def when(value: datetime | None) -> str:
        if value is None:
            return "Unknown"
        return str(int(value.timestamp())) if epoch else value.strftime("%Y-%m-%dT%H:%M:%S")

    lines = ["|".join(columns)]
    for row in rows:
        assert row.exit is not None
        values = {
            "JobID": row.job_id + (f".{row.step}" if row.step else ""),
            "JobIDRaw": row.raw_id + (f".{row.step}" if row.step else ""),
            "State": row.state_text,
            "ExitCode": row.exit.as_slurm(),
            "DerivedExitCode": "",
            "Reason": "None",
            "Elapsed": _elapsed(row.elapsed_s or 0),
            "ElapsedRaw": str(int(row.elapsed_s or 0)),
            "TotalCPU": _cpu(row.cpu_time_s or 0),
            "CPUTimeRAW": "0",
            "MaxRSS": "" if row.max_rss_bytes is None else str(row.max_rss_bytes),
            "Submit": when(row.submitted_at),
            "Start": when(row.started_at),
            "End": when(row.finished_at),
            "NodeList": "node1",
            "JobName": row.name,
        }
        lines.append("|".join(values[column] for column in columns))
    return "\n".join(lines) + "\n"


@given(
    st.lists(sacct_rows(), min_size=1, max_size=6),
    st.booleans(),
    st.integers(min_value=0, max_value=len(SACCT_FIELDS) - 1),
)
def test_sacct_rows_round_trip(rows: list[AccountingRow], epoch: bool, name_at: int) -> None:
    columns = [c for c in SACCT_FIELDS if c != "JobName"]
    columns.insert(name_at, "JobName")  # the name may be anywhere, '|' and all
    text = render(rows, tuple(columns), epoch)
    parsed = parse_sacct_text(text)
    assert len(parsed) == len(rows)
    for got, want in zip(parsed, rows, strict=True):
        assert got.name == want.name
        assert (got.job_id, got.step, got.state, got.state_text) == (
            want.job_id,
            want.step,
            want.state,
            want.state_text,
        )
        assert got.exit == want.exit
        assert (got.submitted_at, got.started_at, got.finished_at) == (
            want.submitted_at,
            want.started_at,
            want.finished_at,
        )
        assert got.elapsed_s == want.elapsed_s
        assert got.cpu_time_s == pytest.approx(want.cpu_time_s)
        assert got.max_rss_bytes == want.max_rss_bytes
        if want.state_text.startswith("CANCELLED by"):
            assert got.reason is not None
            assert got.reason.uid == 1000


@given(st.lists(NAMES, min_size=1, max_size=5))
def test_squeue_names_round_trip(names: list[str]) -> None:
    lines = [
        f"{100 + i}|{100 + i}|{100 + i}|N/A|FAILED|NonZeroExitCode|1795460891|1795460901|"
        f"1795460901|node1|768|0|0|{name}"
        for i, name in enumerate(names)
    ]
    rows = parse_squeue("\n".join(lines) + "\n", columns=SQUEUE_COLUMNS)
    assert [row.name for row in rows] == names
    assert all(row.exit == ExitStatus.exited(3) for row in rows)


@given(st.text(alphabet=st.characters(categories=("Nd", "No", "Nl")), min_size=1, max_size=12))
def test_unicode_digits_raise_parse_error_not_value_error(text: str) -> None:
    # "²".isdigit() is True but int("²") raises ValueError: parsers must not trip on it.
    from hpcstate_slurm._parse import parse_time, parse_wait_status

    for parser in (parse_time, parse_wait_status):
        with contextlib.suppress(ParseError):
            parser(text)


def _parser_and_reference(
    body: str, columns: list[str], lossy: bool
) -> tuple[list[AccountingRow] | ParseError, list[AccountingRow] | ParseError]:
    """(parse_sacct_text's rows or error, the plain reference's rows or error) for a body."""
    return (
        _rows_or_error(lambda: parse_sacct_text("|".join(columns) + "\n" + body, exit_lossy=lossy)),
        _rows_or_error(lambda: reference_rows(body, columns, exit_lossy=lossy)),
    )


def _rows_or_error(parse: Callable[[], list[AccountingRow]]) -> list[AccountingRow] | ParseError:
    try:
        return parse()
    except ParseError as error:
        return error


def _same(got: list[AccountingRow] | ParseError, want: list[AccountingRow] | ParseError) -> None:
    """The same rows, or a ParseError on the same line and field."""
    if isinstance(want, ParseError):
        assert isinstance(got, ParseError), (got, want)
        assert (got.line_no, got.field) == (want.line_no, want.field), (str(got), str(want))
        assert got.line == want.line
    else:
        assert got == want


def test_the_sacct_parser_equals_the_plain_reference_on_every_recording() -> None:
    # parse_sacct_text reads columns by index with memos; the plain reference (a dict per
    # row, each field through its own parser) must give identical rows on every real
    # output, names with `|` included.
    from pathlib import Path

    golden = Path(__file__).resolve().parents[1] / "golden" / "slurm"
    checked = 0
    for path in sorted(golden.glob("*/*/sacct_P*.out")):
        text = path.read_text()
        header, _, body = text.partition("\n")
        columns = header.split("|")
        if "JobID" not in columns or "State" not in columns:
            continue
        got, want = _parser_and_reference(body, columns, lossy="22.05" in str(path))
        assert not isinstance(want, ParseError), (path, want)
        _same(got, want)
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize(
    "body",
    [
        "1|1|FAILED|1:0|0:0|None|3|a|b\n",  # a `|` in the name
        "1|1|FAILED|1:0|0:0|None|3|two\nlines\n2|2|COMPLETED|0:0|0:0|None|3|x\n",
        "1|1|FAILED|1:0|0:0|None|3|a|b\r\n2|2|COMPLETED|0:0|0:0|None|3|x\r\n",
        "1|1|FAILED|1:0|0:0|None|3|x\n2|2|BOGUS|0:0|0:0|None|3|a|b\n",  # error after an odd line
        "1|1|FAILED|1:0|0:0|None|3|x\n2|2|FAILED|0:0|0:0|None|x|y\n",  # bad ElapsedRaw
        "short\n1|1|FAILED|1:0|0:0|None|3|x\n",  # a short first line: nothing to continue
    ],
)
def test_the_sacct_parser_equals_the_reference_on_odd_lines(body: str) -> None:
    columns = ["JobID", "JobIDRaw", "State", "ExitCode", "DerivedExitCode", "Reason"]
    columns += ["ElapsedRaw", "JobName"]
    got, want = _parser_and_reference(body, columns, lossy=False)
    _same(got, want)


def test_a_short_line_is_an_error_when_the_free_column_is_not_last() -> None:
    header = "JobID|JobName|State\n"
    with pytest.raises(ParseError) as raised:
        parse_sacct_text(header + "1|a|COMPLETED\n2|b\n")
    assert (raised.value.line_no, str(raised.value).split(" (")[0]) == (
        3,
        "expected 3 fields, got 2",
    )
    rows = parse_sacct_text(header + "1|a|b|COMPLETED\n")
    assert [(row.name, row.state) for row in rows] == [("a|b", State.COMPLETED)]


# Per column: valid values (with the spacing and odd forms sacct can print), then after
# the `None` the invalid ones, drawn rarely so that most examples reach the rows.
_TIMES = [
    "1795461000",
    "1795461004",
    " 1795461000",
    "0",
    "99999999999",
    "Unknown",
    "None",
    "2026-11-23T10:00:00",
    "",
    None,
    "2026-02-30T10:00:00",
    "soon",
]
_EXITS = ["0:0", "1:0", "0:15", "2:0 ", "9:0", "0:9", "", None, "x:y"]
SACCT_CELLS: dict[str, list[str | None]] = {
    "JobID": [
        "123",
        "123.batch",
        "123.extern",
        "123.0",
        "123_4",
        "123_4.batch",
        "123_[1-3%2]",
        "123+1",
        "123+1.0",
        " 123",
        "١٢٣",
        None,
        "123.",
        "123..0",
        "12a",
        "123.ba tch",
    ],
    "JobIDRaw": ["123", "124.batch", " 125", None],
    "State": [
        "COMPLETED",
        "FAILED",
        "CANCELLED by 0",
        "REQUEUED",
        "RUNNING",
        "PENDING",
        " TIMEOUT",
        None,
        "BOGUS",
    ],
    "ExitCode": _EXITS,
    "DerivedExitCode": _EXITS,
    "Reason": ["None", "", "TimeLimit", "NonZeroExitCode", "RaisedSignal:9(Killed)", "?", None],
    "Elapsed": ["00:00:03", "1-00:00:00", "", "INVALID", None, "3s"],
    "ElapsedRaw": ["3", "", " ", "86400", None, "-1"],
    "TotalCPU": ["00:00.047", "01:05:07", "00:00:00", "", None, "nope"],
    "CPUTimeRAW": ["3", "", None],
    "MaxRSS": ["1904K", "11.5M", "0", "", None, "12Q"],
    "Submit": _TIMES,
    "Start": _TIMES,
    "End": _TIMES,
    "NodeList": ["node1", "node[1-3],gpu1", "None assigned", "", None],
    "JobName": ["case.sh", "batch", "", " spaced ", None],
}


def _cells(values: list[str | None]) -> st.SearchStrategy[str]:
    split = values.index(None)
    valid = [value for value in values[:split] if value is not None]
    invalid = [value for value in values[split + 1 :] if value is not None]
    if not invalid:
        return st.sampled_from(valid)
    return st.integers(0, 24).flatmap(lambda n: st.sampled_from(invalid if n == 0 else valid))


SACCT_LINE = st.tuples(*(_cells(SACCT_CELLS[column]) for column in SACCT_FIELDS))


@given(st.lists(SACCT_LINE, min_size=1, max_size=6))
def test_the_sacct_parser_equals_the_reference_on_any_cells(table: list[tuple[str, ...]]) -> None:
    # The parser memoizes per column and checks a job id's parts separately; on any mix
    # of valid and invalid cells it must give the reference's rows, or its error (line and
    # field named).
    columns = list(SACCT_FIELDS)
    body = "\n".join("|".join(cells) for cells in table) + "\n"
    got, want = _parser_and_reference(body, columns, lossy=True)
    _same(got, want)


@pytest.mark.parametrize(
    ("text", "zone"),
    [("9999-12-31T23:59:59", "America/New_York"), ("0001-01-01T00:00:00", "Asia/Tokyo")],
)
def test_local_times_past_datetimes_range_in_utc_are_parse_errors(text: str, zone: str) -> None:
    # Valid in the zone, out of range once moved to UTC: astimezone raises OverflowError.
    from zoneinfo import ZoneInfo

    with pytest.raises(ParseError, match="impossible date"):
        parse_time(text, tz=ZoneInfo(zone), field="End")
    header = "JobID|State|End\n"
    with pytest.raises(ParseError) as raised:
        parse_sacct_text(f"{header}5|COMPLETED|{text}\n", tz=ZoneInfo(zone))
    assert raised.value.field == "End"
    assert raised.value.line_no == 2
