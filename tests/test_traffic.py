"""The traffic log format: rows of the task indexed by window in one pass and read back with their line numbers
(in any order of time in the file), and every bad line either stopping the read with file, line and field, or
counted when skipping is asked for."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from harness.config import load_task
from harness.errors import HarnessError
from harness.traffic import scan_traffic, window_of

BANKING = load_task("banking77")
GOOD = {"time": "2026-11-20T09:31:02Z", "inputs": {"text": "Where is my new card?"}, "output": "card_arrival"}


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_rows_of_the_task_are_read_with_their_lines_and_latency(tmp_path):
    log = write(tmp_path / "t.jsonl", [
        GOOD,
        {**GOOD, "task": "other-task"},
        "",
        {**GOOD, "time": "2026-11-21T10:00:00", "task": "banking77", "reference": "card_arrival",
         "latency": {"ttft_ms": 40, "e2e_ms": 250, "itl_ms": [10, 12], "output_tokens": 3}, "id": "req-9"},
    ])
    traffic = scan_traffic(log, BANKING, "all")
    rows = list(traffic.read("all"))
    assert [r.line for r in rows] == [1, 4]
    assert traffic.other_tasks == 1 and traffic.lines == 3 and traffic.broken == []
    second = rows[1]
    assert second.row.utc == datetime(2026, 11, 21, 10, tzinfo=timezone.utc)  # naive times are UTC
    completion = second.completion("banking77")
    assert (completion.example_id, completion.ttft_s, completion.e2e_s, completion.itl_s) == \
        ("req-9", 0.04, 0.25, [0.01, 0.012])
    assert second.example().reference == "card_arrival"
    assert list(scan_traffic(log, BANKING, "day").windows) == ["2026-11-20", "2026-11-21"]


def test_windows_come_in_time_order_and_hold_their_rows_whatever_the_files_order(tmp_path):
    """Logs from several servers are merged out of order: each window still reads exactly its own rows."""
    days = ["2026-11-22", "2026-11-20", "2026-11-21", "2026-11-20", "2026-11-22", "2026-11-20"]
    log = write(tmp_path / "t.jsonl",
                [{**GOOD, "time": f"{day}T08:00:00Z", "id": f"r{i}"} for i, day in enumerate(days)])
    traffic = scan_traffic(log, BANKING, "day")
    assert list(traffic.windows) == ["2026-11-20", "2026-11-21", "2026-11-22"]
    assert {w: [r.row.id for r in traffic.read(w)] for w in traffic.windows} == {
        "2026-11-20": ["r1", "r3", "r5"], "2026-11-21": ["r2"], "2026-11-22": ["r0", "r4"]}
    assert [r.line for r in traffic.read_all()] == [2, 4, 6, 3, 1, 5] and traffic.rows == 6


@pytest.mark.parametrize(("when", "window", "key"), [
    ("2026-11-23T23:59:59+00:00", "day", "2026-11-23"),
    ("2026-11-23T10:00:00+00:00", "week", "2026-W48"),
    ("2027-01-01T10:00:00+00:00", "week", "2026-W53"),  # ISO weeks cross the year
    ("2026-11-23T10:00:00+00:00", "month", "2026-11"),
    ("2026-11-23T10:00:00+00:00", "all", "all"),
])
def test_windows(when, window, key):
    assert window_of(datetime.fromisoformat(when), window) == key


BAD_LINES = [
    ("{not json", "line 2: not JSON"),
    ({**GOOD, "time": "yesterday"}, "line 2: time:"),
    ({k: v for k, v in GOOD.items() if k != "time"}, "line 2: time: Field required"),
    ({**GOOD, "inputs": {"message": "hi"}}, "line 2: inputs.text: missing"),
    ({**GOOD, "output": None}, "line 2: `output` is null but no `error` says why"),
    ({**GOOD, "reference": "not_an_intent"}, "line 2: reference: 'not_an_intent' is not a label"),
    ({**GOOD, "rating": 9}, "line 2: rating:"),
    ({**GOOD, "latency": {"ttft_ms": -1}}, "line 2: latency.ttft_ms:"),
    ({**GOOD, "labell": "x"}, "line 2: labell: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_LINES)
def test_a_bad_line_names_file_line_and_field(tmp_path, bad, message):
    log = write(tmp_path / "t.jsonl", [GOOD, bad, GOOD])
    with pytest.raises(HarnessError) as caught:
        scan_traffic(log, BANKING, "day")
    assert str(caught.value).startswith(f"{log}: {message}")
    assert "\n" not in str(caught.value)


def test_skipped_lines_are_counted_never_dropped_silently(tmp_path):
    rows = [GOOD, *[bad for bad, _ in BAD_LINES], {**GOOD, "task": "other"}, GOOD]
    traffic = scan_traffic(write(tmp_path / "t.jsonl", rows), BANKING, "day", skip_bad=True)
    assert len(traffic.broken) == len(BAD_LINES)
    assert traffic.rows + len(traffic.broken) + traffic.other_tasks == traffic.lines == len(rows)
    assert traffic.broken[0].startswith("line 2: not JSON")


def test_a_log_without_rows_of_the_task_is_an_error(tmp_path):
    with pytest.raises(HarnessError, match="no traffic rows for task banking77 \\(1 rows of other tasks"):
        scan_traffic(write(tmp_path / "t.jsonl", [{**GOOD, "task": "other"}]), BANKING, "day")
    with pytest.raises(HarnessError, match="traffic log not found"):
        scan_traffic(tmp_path / "missing.jsonl", BANKING, "day")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"x": "caf\xe9"}\n')
    with pytest.raises(HarnessError, match="cannot read the traffic log"):
        scan_traffic(tmp_path / "latin1.jsonl", BANKING, "day")
