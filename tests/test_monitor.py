"""`harness monitor` end to end on real data: Banking77 messages raise no alert across windows, CLINC150's
banking queries are flagged with the words that are new; rules from the manifest; feedback rows scored;
bad input one line and exit 2; labelled rows exported as task data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.errors import ConfigError
from harness.monitor import monitor
from harness.store import ResultsDir
from tests.conftest import write_yaml
from tests.helpers import traffic_log
from tests.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
TEST = pd.read_csv(ROOT / "tasks" / "banking77" / "test.csv").sample(frac=1.0, random_state=0)
CLINC = pd.read_csv(ROOT / "examples" / "traffic" / "clinc150_banking.csv").sample(frac=1.0, random_state=0)
DRIFT_RULES = [{"signal": "domain_auc", "at_most": 0.7}, {"signal": "new_term_rate", "at_most": 0.1},
               {"signal": "input_length_change", "at_least": -0.33}, {"signal": "input_length_change", "at_most": 0.5}]


def suite(tmp_path, rules=DRIFT_RULES, **monitor_spec):
    manifest = {"criteria": [{"task": "banking77", "metric": "accuracy", "candidate": "deployed", "at_least": 0.5}],
                "monitor": {"window": "day", "min_rows": 50, "resamples": 300, "rules": rules, **monitor_spec}}
    return write_yaml(tmp_path / "suite.yaml", {
        "name": "watch", "tasks": ["banking77"], "manifest": manifest,
        "candidates": [{"name": "deployed", "model": "smollm2-135m-instruct"}]})


def test_banking77_traffic_raises_no_alert_across_windows(tmp_path):
    rows = TEST.iloc[:400]
    log = traffic_log(tmp_path / "t.jsonl", rows.text.tolist(), rows.category.tolist(), per_day=100)
    report = monitor(log, suite(tmp_path), say=lambda _: None)
    assert [w.window for w in report.windows] == ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05", "all"]
    ruled = [r for r in report.readings if r.rule is not None]
    assert {r.signal for r in ruled} == {"domain_auc", "new_term_rate", "input_length_change"}
    assert all(r.status == "ok" for r in ruled), [(r.window, r.signal, r.value) for r in ruled if r.status != "ok"]
    assert not report.alerting


def test_clinc_traffic_is_flagged_with_its_new_words_and_the_rows_behind(tmp_path, monkeypatch, capsys):
    rows = CLINC.iloc[:300]
    log = traffic_log(tmp_path / "t.jsonl", rows.text.tolist(), ["card_arrival"] * 300, per_day=100)
    code, _ = run_cli(monkeypatch, capsys, "monitor", str(log), "--against", str(suite(tmp_path)),
                      "--results", str(tmp_path / "results"))
    assert code == 1
    [folder] = ResultsDir(tmp_path / "results").monitors()
    record = folder.read()
    for window in record["windows"]:
        status = {r["signal"]: r["status"] for r in window["readings"]}
        assert status["domain_auc"] == status["new_term_rate"] == "alert"
        terms = [t["term"] for t in window["details"]["new_term_rate"]["new_terms"]]
        assert "routing" in terms[:10]
        behind = window["examples"]["new_term_rate"]
        texts = [rows.text.iloc[line - 1] for line in behind]
        assert behind and all(set(t.lower().split()) & set(terms) for t in texts)
        # domain_auc's rows: the traffic messages its classifier found least like the reference, distinct lines.
        unlike = window["examples"]["domain_auc"]
        assert 0 < len(unlike) == len(set(unlike)) <= 50 and all(1 <= line <= 300 for line in unlike)
    markdown = folder.report_md.read_text()
    assert "New words (never in the reference), by messages using them:" in markdown
    assert "| routing |" in markdown and "Predicted labels that moved most" in markdown


def test_feedback_rows_are_scored_by_the_tasks_metrics_under_the_manifests_rules(tmp_path):
    rows = TEST.iloc[:120]
    right = rows.category.tolist()
    # The model answers right on even rows only; every third row carries a reviewer's true label.
    outputs = [label if i % 2 == 0 else "card_arrival" if label != "card_arrival" else "atm_support"
               for i, label in enumerate(right)]
    references = [label if i % 3 == 0 else None for i, label in enumerate(right)]
    log = traffic_log(tmp_path / "t.jsonl", rows.text.tolist(), outputs, per_day=200, references=references)
    rules = [{"signal": "accuracy", "at_least": 0.9}, {"signal": "invalid_label_rate", "at_most": 0.05}]
    report = monitor(log, suite(tmp_path, rules=rules, min_rows=30), say=lambda _: None)
    [window] = report.windows
    by = {r.signal: r for r in window.readings}
    labelled = [i for i in range(120) if i % 3 == 0]
    assert by["accuracy"].n == len(labelled)
    assert by["accuracy"].value == pytest.approx(sum(i % 2 == 0 for i in labelled) / len(labelled))
    assert by["accuracy"].status == "alert" and by["invalid_label_rate"].status == "ok"
    assert by["domain_auc"].status == "info"  # no rule names it
    assert report.alerting


def test_a_small_window_is_insufficient(tmp_path):
    rows = TEST.iloc[:140]
    log = traffic_log(tmp_path / "t.jsonl", rows.text.tolist(), rows.category.tolist(), per_day=100)
    report = monitor(log, suite(tmp_path), say=lambda _: None)
    last_day = report.windows[1]
    assert last_day.n == 40
    assert {r.status for r in last_day.readings if r.rule} == {"insufficient"}
    assert report.alerting


@pytest.mark.parametrize(("rule", "field", "message"), [
    ({"signal": "bleu", "at_least": 1}, "monitor.rules.0.signal", "no signal 'bleu' for task banking77"),
    ({"signal": "accuracy", "p_below": 0.01}, "monitor.rules.0", "accuracy takes at_most or at_least"),
    ({"signal": "domain_auc", "p_below": 0.01}, "monitor.rules.0", "domain_auc takes at_most or at_least"),
])
def test_a_rule_the_task_cannot_have_is_refused_naming_the_field(tmp_path, rule, field, message):
    log = traffic_log(tmp_path / "t.jsonl", ["hi"], ["card_arrival"])
    with pytest.raises(ConfigError) as caught:
        monitor(log, suite(tmp_path, rules=[rule]), say=lambda _: None)
    assert caught.value.field == field and message in caught.value.message


def test_bad_input_is_one_line_and_exit_2_and_skipping_counts(tmp_path, monkeypatch, capsys):
    rows = TEST.iloc[:60]
    log = traffic_log(tmp_path / "t.jsonl", rows.text.tolist(), rows.category.tolist())
    with log.open("a") as handle:
        handle.write('{"time": "not a time", "inputs": {"text": "x"}, "output": "card_arrival"}\n')
    the_suite = suite(tmp_path, min_rows=10)
    code, err = run_cli(monkeypatch, capsys, "monitor", str(log), "--against", str(the_suite),
                        "--results", str(tmp_path / "results"))
    assert code == 2
    assert err.strip().splitlines() == [f"error: {log}: line 61: time: Input should be a valid datetime or date, "
                                        "invalid character in year"]
    assert not (tmp_path / "results").exists()
    code, err = run_cli(monkeypatch, capsys, "monitor", str(log), "--against", str(the_suite), "--skip-bad-lines",
                        "--results", str(tmp_path / "results"))
    assert code == 1 and "1 broken lines skipped" in err
    assert ResultsDir(tmp_path / "results").monitors()[0].read()["broken_lines"][0].startswith("line 61: time")
    code, err = run_cli(monkeypatch, capsys, "monitor", str(log), "--against", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: file not found" in err


def test_labelled_rows_are_exported_once_each_in_the_tasks_columns(tmp_path, monkeypatch, capsys):
    texts = ["what is my routing number", "freeze my card please", "what is my routing number", "hello"]
    log = traffic_log(tmp_path / "t.jsonl", texts, ["card_arrival"] * 4,
                      references=["transfer_into_account", "lost_or_stolen_card", "transfer_into_account", None])
    out = tmp_path / "new_rows.csv"
    code, _ = run_cli(monkeypatch, capsys, "monitor", str(log), "--against", str(suite(tmp_path, min_rows=1)),
                      "--export-labelled", str(out), "--results", str(tmp_path / "results"))
    assert code in (0, 1)
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["text", "category"]
    assert frame.values.tolist() == [["what is my routing number", "transfer_into_account"],
                                     ["freeze my card please", "lost_or_stolen_card"]]
    assert json.loads((ResultsDir(tmp_path / "results").monitors()[0].monitor_json).read_text())["task"] == "banking77"


@pytest.mark.slow
def test_against_a_run_the_reference_is_the_candidates_gated_answers(small_suite, tmp_path):
    from harness.errors import HarnessError
    from harness.monitor import reference_of
    from harness.pipeline import run_suite
    from harness.store import RunDir

    run_dir = run_suite(small_suite, tmp_path / "results", run_id="r1").run_dir
    with pytest.raises(HarnessError, match="has 2 candidates \\(tiny-zero, tiny-fewshot\\); choose one"):
        reference_of(run_dir, "keywords", None, None)
    ref = reference_of(run_dir, "keywords", "tiny-fewshot", None)
    answers = RunDir(run_dir).finished("tiny-fewshot", "keywords")
    assert ref.side.outputs == [answers[ex.id].text for ex in ref.task.data.test]
    assert ref.side.texts == [ex.inputs["text"] for ex in ref.task.data.train]
    texts = [ex.inputs["text"] for ex in ref.task.data.test] * 3
    same = traffic_log(tmp_path / "same.jsonl", texts, ref.side.outputs * 3)
    other = traffic_log(tmp_path / "other.jsonl", texts, ["password"] * 36)
    quiet = monitor(same, run_dir, "keywords", "tiny-fewshot", say=lambda _: None)
    loud = monitor(other, run_dir, "keywords", "tiny-fewshot", say=lambda _: None)
    shift = {r.window: r for r in quiet.readings if r.signal == "label_shift"}
    assert [r.value for r in shift.values()] == [0.0]
    [moved] = [r for r in loud.readings if r.signal == "label_shift"]
    assert moved.value > 0.5 and moved.p_value < 0.01
    assert quiet.candidate == "tiny-fewshot" and quiet.against == str(run_dir)


def test_errored_traffic_counts_against_the_latency_it_hides(tmp_path):
    """A sixth of the rows are timeouts with no latency: left out, the p95 of the rest would look fine."""
    rows = TEST.iloc[:100]
    log = tmp_path / "t.jsonl"
    with log.open("w") as handle:
        for i, (text, label) in enumerate(zip(rows.text, rows.category, strict=True)):
            row = {"time": f"2026-11-02T00:{i // 60:02d}:{i % 60:02d}+00:00", "inputs": {"text": text}}
            if i % 6 == 0:
                row |= {"output": None, "error": "timeout"}
            else:
                row |= {"output": label, "latency": {"ttft_ms": 20, "e2e_ms": 200 + i, "output_tokens": 3}}
            handle.write(json.dumps(row) + "\n")
    rules = [{"signal": "e2e_ms_p95", "at_most": 1000}, {"signal": "ttft_ms_p50", "at_least": 5}]
    report = monitor(log, suite(tmp_path, rules=rules, min_rows=30), say=lambda _: None)
    [window] = report.windows
    by = {r.signal: r for r in window.readings}
    assert by["e2e_ms_p95"].status == "alert" and by["error_rate"].value == pytest.approx(0.17)
    # A rule wanting a latency high is helped by a timeout counted as infinite: it cannot say "ok" on these rows.
    assert by["ttft_ms_p50"].status == "insufficient"


def test_a_task_with_a_judge_metric_is_monitored_without_it(tmp_path):
    """The monitor runs no judging stage: a task's LLM-judge metric (and its unparsed share) is no signal, so
    monitoring such a task reads the other metrics instead of failing for want of judgements, and a rule naming
    the judge metric is refused like any signal the task cannot have."""
    from tests.fake_openai_server import FakeServer

    (tmp_path / "t").mkdir()
    rows = [{"id": f"e{i}", "q": f"question {i}", "r": "yes"} for i in range(40)]
    (tmp_path / "t" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"time": f"2026-11-20T09:{i:02d}:00Z", "inputs": {"q": f"question {i}"},
                                       "output": "yes", "reference": "yes"}) + "\n" for i in range(40)))
    with FakeServer(reply=lambda body: "SCORE: 4") as server:
        write_yaml(tmp_path / "t" / "task.yaml", {
            "name": "t", "kind": "generation", "prompt": {"template": "{q}"},
            "metrics": ["exact_match", {"name": "helpful", "judge": "m", "url": server.url,
                                        "rubric": "Is it helpful?"}],
            "data": {"test": "test.jsonl", "id": "id", "inputs": {"q": "q"}, "reference": "r"}})

        def watch(rules):
            manifest = {"criteria": [{"task": "t", "metric": "exact_match", "candidate": "c", "at_least": 0.5}],
                        "monitor": {"min_rows": 30, "resamples": 200, "rules": rules}}
            return write_yaml(tmp_path / "suite.yaml", {
                "name": "s", "tasks": ["t/task.yaml"], "manifest": manifest,
                "candidates": [{"name": "c", "model": "m", "backend": "openai", "url": server.url}]})

        report = monitor(log, watch([{"signal": "new_term_rate", "at_most": 0.5}]), say=lambda _: None)
        signals = {r.signal for w in report.windows for r in w.readings}
        assert "exact_match" in signals and not signals & {"helpful", "helpful_unparsed", "helpful_agreement"}
        with pytest.raises(ConfigError) as caught:
            monitor(log, watch([{"signal": "helpful", "at_least": 3}]), say=lambda _: None)
        assert caught.value.field == "monitor.rules.0.signal" and "no signal 'helpful'" in caught.value.message
        assert server.requests == []  # the judge is never asked


def half_banking_suite(tmp_path, **monitor_spec):
    """Banking77 whose data is half of its training split: the other half is traffic from the same distribution."""
    train = pd.read_csv(ROOT / "tasks" / "banking77" / "train.csv").sample(frac=1.0, random_state=1)
    folder = tmp_path / "half"
    folder.mkdir()
    train.iloc[:5000].to_csv(folder / "train.csv", index=False)
    train.iloc[5000:5100].to_csv(folder / "test.csv", index=False)
    for shipped in ("categories.json", "products.json"):  # the label list and the product slicing beside it
        shutil.copy(ROOT / "tasks" / "banking77" / shipped, folder)
    task = yaml.safe_load((ROOT / "tasks" / "banking77" / "task.yaml").read_text()) | {"name": "half"}
    write_yaml(folder / "task.yaml", task)
    manifest = {"criteria": [{"task": "half", "metric": "accuracy", "candidate": "deployed", "at_least": 0.5}],
                "monitor": {"window": "day", "resamples": 300, **monitor_spec}}
    suite_file = write_yaml(tmp_path / "suite.yaml", {
        "name": "watch", "tasks": ["half/task.yaml"], "manifest": manifest,
        "candidates": [{"name": "deployed", "model": "smollm2-135m-instruct"}]})
    return suite_file, train.iloc[5000:]


def test_default_rules_stay_quiet_on_traffic_like_the_reference_and_alert_on_a_moved_label_mix(tmp_path):
    """The default rules are effect sizes with intervals: on held-out rows of the reference's own distribution no
    window alerts (noise alone gives a label TVD near 0.2 on 300 rows over 77 labels), while answers of which half
    moved to one label alert on label_shift in every window, and on nothing that did not move."""
    the_suite, held_out = half_banking_suite(tmp_path)
    quiet_rows = held_out.iloc[:1800]
    quiet = monitor(traffic_log(tmp_path / "quiet.jsonl", quiet_rows.text.tolist(), quiet_rows.category.tolist(),
                                per_day=300), the_suite, say=lambda _: None)
    ruled = [r for r in quiet.readings if r.rule is not None]
    assert {r.signal for r in ruled} == {"domain_auc", "new_term_rate", "input_length_change", "label_shift"}
    assert len(quiet.windows) == 7 and not [r for r in ruled if r.status == "alert"]
    assert min(r.value for r in ruled if r.signal == "label_shift" and r.window != "all") > 0.15
    moved_rows = held_out.iloc[1800:2700]
    outputs = ["card_arrival" if i % 2 else label for i, label in enumerate(moved_rows.category)]
    moved = monitor(traffic_log(tmp_path / "moved.jsonl", moved_rows.text.tolist(), outputs, per_day=300), the_suite,
                    say=lambda _: None)
    status = {(r.window, r.signal): r.status for r in moved.readings if r.rule is not None}
    assert {w.window for w in moved.windows} == {"2026-11-02", "2026-11-03", "2026-11-04", "all"}
    assert all(status[(w.window, "label_shift")] == "alert" for w in moved.windows)
    assert not [k for k, s in status.items() if s == "alert" and k[1] != "label_shift"]


def test_a_window_larger_than_its_sample_streams_its_signals_and_samples_its_metrics(tmp_path):
    rows = TEST.iloc[:300]
    log = traffic_log(tmp_path / "t.jsonl", rows.text.tolist(), rows.category.tolist(), per_day=300,
                      references=rows.category.tolist())
    rules = [{"signal": "accuracy", "at_least": 0.5}, {"signal": "label_shift", "at_most": 0.5}]
    report = monitor(log, suite(tmp_path, rules=rules, sample_rows=100, min_rows=30), say=lambda _: None)
    [window] = report.windows
    by = {r.signal: r for r in window.readings}
    assert by["accuracy"].n == 100 and by["accuracy"].value == 1.0
    assert by["accuracy"].evidence == "a uniform sample of 100 of 300 rows with a reference"
    assert "a sample of 100 of 300 traffic" in by["domain_auc"].evidence
    # Streamed signals read every row: the label mix of all 300, not of the sample.
    train = pd.read_csv(ROOT / "tasks" / "banking77" / "train.csv")
    reference, traffic = train.category.value_counts(normalize=True), rows.category.value_counts(normalize=True)
    assert by["label_shift"].n == 300
    assert by["label_shift"].value == pytest.approx(0.5 * reference.sub(traffic, fill_value=0).abs().sum())
