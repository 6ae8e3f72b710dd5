"""The run directory owns its files: names are spelled only in harness/store.py, and readers refuse files
that are not what they claim to be."""

import json
import re
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.records import Completion, MetricResult
from harness.store import ResultsDir, RunDir
from tests.helpers import run_record

ROOT = Path(__file__).resolve().parents[1]
FILE_NAMES = re.compile(r"""["'](run\.json|metrics\.json|comparisons\.json|scores\.jsonl|latency\.json|"""
                        r"""verdict\.json|report\.md|ratings\.sqlite|lineage\.json|latency\.png|monitor\.json)["']""")


def test_no_module_but_the_store_spells_a_run_file_name():
    offenders = []
    for path in [*ROOT.glob("harness/**/*.py"), *ROOT.glob("dashboard/**/*.py")]:
        if path.name == "store.py" and path.parent.name == "harness":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FILE_NAMES.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert offenders == []


def test_a_run_directory_writes_and_reads_its_files(tmp_path):
    run = ResultsDir(tmp_path).run("r1")
    run.write_run(run_record(status="running"))
    run.write_metrics([MetricResult("t", "c", "accuracy", 0.5, 0.4, 0.6, 10, True, 0.9)])
    run.write_scores([{"task": "t", "candidate": "c", "example_id": "e", "accuracy": 1.0}])
    with run.prediction_writer("c", "t") as writer:
        writer.append(Completion("e", "c", "t", "yes"))
    assert run.exists() and not run.is_complete()
    assert run.read_run() == run_record(status="running")
    assert run.read_metrics() == [MetricResult("t", "c", "accuracy", 0.5, 0.4, 0.6, 10, True, 0.9)]
    assert run.read_scores()[0]["accuracy"] == 1.0
    assert [c.text for c in run.read_predictions("c", "t")] == ["yes"]
    assert [r.run_id for r in ResultsDir(tmp_path).runs()] == ["r1"]
    assert run.read_verdict() is None


@pytest.mark.parametrize(("name", "content", "reader"), [
    ("run.json", "[1, 2]", RunDir.read_run),
    ("metrics.json", '{"value": 1}', RunDir.read_metrics),
    ("verdict.json", '"passed"', RunDir.read_verdict),
    ("run.json", "{not json", RunDir.read_run),
])
def test_files_of_the_wrong_shape_are_refused_with_their_path(tmp_path, name, content, reader):
    (tmp_path / name).write_text(content)
    with pytest.raises(HarnessError, match=re.escape(str(tmp_path / name))):
        reader(RunDir(tmp_path))


def test_a_damaged_detections_file_is_recomputed_not_trusted(tmp_path):
    run = RunDir(tmp_path)
    run.write_detections("c", "t", [{"example_id": "e", "answer": "a", "detector": "{}", "finding": {}}])
    assert set(run.read_detections("c", "t")) == {"e"}
    run.detections_file("c", "t").write_text(json.dumps({"example_id": "e"})[:-3] + "\n")
    assert run.read_detections("c", "t") == {}


@pytest.mark.parametrize("wanted", ["e1", 'say "hi"', "café", "naïve\\path"])
def test_one_examples_predictions_are_exactly_its_lines_of_the_whole_file(tmp_path, wanted):
    """Reading one example's lines (the dashboard's first view of an example) gives what the whole file's reading
    filtered to that example gives: retries included, an id that prefixes another (e1, e10) or that JSON escapes
    kept apart, an answer whose text is the id not mistaken for that example's, a line with its non-ASCII characters
    escaped found, a torn last line ignored."""
    run = RunDir(tmp_path)
    ids = ["e1", "e10", "e11", 'say "hi"', "café", "naïve\\path"]
    with run.prediction_writer("c", "t") as writer:
        for ex_id in ids:
            writer.append(Completion(ex_id, "c", "t", "", error="HTTP 503"))
            writer.append(Completion(ex_id, "c", "t", wanted))
    with run.predictions_file("c", "t").open("a") as handle:  # as another tool rewrites it: non-ASCII escaped
        handle.write(json.dumps(vars(Completion(wanted, "c", "t", "again"))) + "\n")
        handle.write(json.dumps(vars(Completion(wanted, "c", "t", "torn")))[:-5])
    whole = [c for c in run.read_predictions("c", "t") if c.example_id == wanted]
    mine = run.read_predictions("c", "t", wanted)
    assert mine == whole and [c.text for c in mine] == ["", wanted, "again"]


def test_a_damaged_line_of_the_example_is_named_even_when_reading_one_example(tmp_path):
    run = RunDir(tmp_path)
    with run.prediction_writer("c", "t") as writer:
        writer.append(Completion("e1", "c", "t", "yes"))
        writer.append(Completion("e2", "c", "t", "no"))
    lines = run.predictions_file("c", "t").read_text().splitlines()
    run.predictions_file("c", "t").write_text("\n".join([lines[0][:-4], lines[1]]) + "\n")
    with pytest.raises(HarnessError, match="line 1 is not a Completion"):
        run.read_predictions("c", "t", "e1")
    assert [c.text for c in run.read_predictions("c", "t", "e2")] == ["no"]
    assert run.has_predictions("c", "t") and not run.has_predictions("c", "other")
    run.predictions_file("c", "torn").write_text(lines[1][:-4])  # a kill during the first answer's write
    assert not run.has_predictions("c", "torn") and run.read_predictions("c", "torn") == []


def test_line_separators_inside_answers_and_ids_are_kept_not_split(tmp_path):
    """JSON strings may hold U+2028, U+2029 and U+0085 unescaped (Completion.to_json writes them so); a reader
    splitting lines at them (str.splitlines) turned one answer into two pieces joined by a comma."""
    run = RunDir(tmp_path)
    odd = "first\u2028second\u2029third\x85fourth"
    with run.prediction_writer("c", "t") as writer:
        writer.append(Completion("plain", "c", "t", odd))
        writer.append(Completion(odd, "c", "t", "an id with separators"))
    assert [c.text for c in run.read_predictions("c", "t")] == [odd, "an id with separators"]
    assert [c.text for c in run.read_predictions("c", "t", "plain")] == [odd]
    assert [c.text for c in run.read_predictions("c", "t", odd)] == ["an id with separators"]
    run.write_scores([{"task": "t", "candidate": "c", "example_id": odd, "predicted_label": odd}])
    assert run.read_scores() == [{"task": "t", "candidate": "c", "example_id": odd, "predicted_label": odd}]
