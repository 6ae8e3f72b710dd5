"""The detection stage inside a real run: findings on disk with their evidence, the detector in run.json,
rates computed from those findings, reuse when re-scoring, and detector problems found before generation."""

import json

import pytest

from harness.detectors.base import Finding
from harness.evaluation import gate
from harness.pipeline import run_suite
from tests.conftest import classification_task, qa_task, write_yaml
from tests.test_cli import run_cli

pytestmark = pytest.mark.slow


def _suite(tmp_path, talking_model, detector):
    qa = qa_task(tmp_path / "qa", n=12)
    return write_yaml(tmp_path / "suite.yaml", {
        "name": "det", "tasks": [{"task": str(qa), "detector": detector}],
        "candidates": [{"name": "tiny", "model": str(talking_model), "batch_size": 6}],
        "bootstrap": {"resamples": 100},
        "manifest": {"criteria": [{"task": "qa", "metric": "hallucination_rate", "candidate": "tiny",
                                   "at_most": 0.99}]}})


def test_nli_findings_are_written_recorded_and_reused(tmp_path, talking_model, tiny_nli_model):
    suite = _suite(tmp_path, talking_model, {"name": "nli", "model": str(tiny_nli_model), "threshold": 0.4})
    result = run_suite(suite, tmp_path / "r", run_id="x")
    run = json.loads((result.run_dir / "run.json").read_text())
    # each detector records only its own settings
    assert run["tasks"]["qa"]["detector"] == {"name": "nli", "version": "3", "model": str(tiny_nli_model),
                                              "threshold": 0.4}
    path = result.run_dir / "detections" / "tiny" / "qa.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    preds = {json.loads(line)["example_id"]: json.loads(line)["text"]
             for line in (result.run_dir / "predictions" / "tiny" / "qa.jsonl").read_text().splitlines()}
    assert sorted(r["example_id"] for r in records) == sorted(preds)
    assert all(r["answer"] == preds[r["example_id"]] for r in records)
    findings = [Finding.from_dict(r["finding"]) for r in records]
    (rate,) = [m for m in json.loads((result.run_dir / "metrics.json").read_text())
               if m["metric"] == "hallucination_rate"]
    assert rate["value"] == pytest.approx(sum(f.hallucinated for f in findings) / len(findings))
    assert all(f.hallucinated == bool(f.spans) for f in findings if not f.abstained)
    assert not any(f.abstained for f in findings), "every answer was judged by the NLI model"
    assert {r["answer"] for r in records} >= {"on Sunday", "on Monday"}

    # Gating re-scores from disk: the findings are reused, not recomputed (the file is left untouched).
    stamp = path.stat().st_mtime_ns
    verdicts, _ = gate(result.run_dir)
    assert verdicts[0].observed == pytest.approx(rate["value"]) and path.stat().st_mtime_ns == stamp


def test_grounding_is_the_default_and_records_its_version(tmp_path, talking_model):
    qa = qa_task(tmp_path / "qa", n=8)
    suite = write_yaml(tmp_path / "suite.yaml", {"name": "g", "tasks": [str(qa)],
                                                 "candidates": [{"name": "tiny", "model": str(talking_model)}],
                                                 "bootstrap": {"resamples": 100}})
    result = run_suite(suite, tmp_path / "r", run_id="x")
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["tasks"]["qa"]["detector"] == {"name": "grounding", "version": "4", "tolerance": 0.1}
    found = result.run_dir / "detections" / "tiny" / "qa.jsonl"
    records = [json.loads(line) for line in found.read_text().splitlines()]
    # The test model answers Friday's question with "on Sunday", a day the passage never names.
    flagged = {r["answer"]: Finding.from_dict(r["finding"]).hallucinated for r in records}
    assert flagged["on Sunday"] is True and flagged["on Monday"] is False and len(flagged) >= 3
    (rate,) = [m for m in json.loads((result.run_dir / "metrics.json").read_text())
               if m["metric"] == "hallucination_rate"]
    assert 0 < rate["value"] < 1


@pytest.mark.parametrize(("detector", "message"), [
    ({"name": "nli", "model": "./no/such/nli"}, "model path does not exist: ./no/such/nli"),
    ({"name": "nli", "model": "some-org/not-downloaded-nli"}, "neither a local directory nor in the Hugging Face"),
    ({"name": "judge", "model": "m", "url": "http://127.0.0.1:9/v1"}, "cannot reach http://127.0.0.1:9/v1"),
    ({"name": "nli"}, "detector `nli` needs `model`"),
])
def test_detector_problems_stop_the_run_before_generation(tmp_path, talking_model, monkeypatch, capsys, detector,
                                                          message):
    suite = _suite(tmp_path, talking_model, detector)
    code, err = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(tmp_path / "r"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_a_model_detector_on_a_task_without_source_is_refused(tmp_path, talking_model, tiny_nli_model, monkeypatch,
                                                              capsys):
    task = classification_task(tmp_path / "task")
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "s", "tasks": [{"task": str(task), "detector": {"name": "nli", "model": str(tiny_nli_model)}}],
        "candidates": [{"name": "tiny", "model": str(talking_model)}]})
    code, err = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(tmp_path / "r"))
    assert code == 2 and "suite.yaml: tasks.0.detector: detector 'nli' needs the task to define `source`" in err


def test_validate_detector_command(monkeypatch, capsys, tmp_path):
    from harness.detectors.validation import DEFAULT_DATA

    code, _ = run_cli(monkeypatch, capsys, "validate-detector", "--no-general", "--resamples", "200",
                      "--tune", "tolerance=0.1,0.3", "--folds", "3", "--json", str(tmp_path / "v.json"))
    assert code in (0, None)
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["detector"]["name"] == "grounding" and {s["subset"] for s in report["scores"]} == {
        "qa", "qa length-matched"}
    tuned = report["cross_validation"]
    assert tuned["field"] == "tolerance" and len(tuned["folds"]) == 3
    assert {f["value"] for f in tuned["folds"]} <= {0.1, 0.3}
    assert {s["subset"] for s in tuned["scores"]} == {"qa length-matched"}
    code, err = run_cli(monkeypatch, capsys, "validate-detector", str(tmp_path), "--no-general")
    assert code == 2 and "qa_one-turn_data.jsonl: file not found" in err
    code, err = run_cli(monkeypatch, capsys, "validate-detector", str(DEFAULT_DATA), "--detector", "nli")
    assert code == 2 and "detector `nli` needs `model`" in err


def test_validate_detector_refuses_bad_options_and_data_in_one_line(monkeypatch, capsys, tmp_path):
    from harness.detectors.validation import QA_FILES

    cases = [(["--limit", "-1"], "--limit"), (["--resamples", "0"], "--resamples"),
             (["--set", "tolerance=lots"], "detector.tolerance"), (["--set", "threshold=0.5"], "detector.threshold"),
             (["--set", "tolerance"], "expected FIELD=VALUE")]
    for options, message in cases:
        code, err = run_cli(monkeypatch, capsys, "validate-detector", "--no-general", *options)
        assert code == 2 and message in err and "Traceback" not in err, (options, err)
    # Every pair differs in length by more than a word: nothing tests the detector past answer length.
    row = {"knowledge": "k", "question": "q", "right_answer": "yes", "hallucinated_answer": "no, it was built in 1850"}
    for name in QA_FILES:
        (tmp_path / name).write_text(json.dumps(row) + "\n")
    code, err = run_cli(monkeypatch, capsys, "validate-detector", str(tmp_path), "--no-general")
    assert code == 2 and "no qa length-matched answers" in err and "Traceback" not in err, err
    # A setting of the chosen detector given with --set is the one it runs with.
    code, _ = run_cli(monkeypatch, capsys, "validate-detector", "--no-general", "--limit", "40", "--resamples", "200",
                      "--set", "tolerance=0.35", "--json", str(tmp_path / "v.json"))
    assert code in (0, None)
    assert json.loads((tmp_path / "v.json").read_text())["detector"]["tolerance"] == 0.35
    for tune, message in [("threshold=0.1,0.2", "'threshold' is not a numeric setting of detector 'grounding'"),
                          ("tolerance=0.1,x", "is not a comma-separated list of numbers"),
                          ("tolerance=0.1", "at least two values"),
                          ("tolerance=0.1,2", "tolerance")]:
        code, err = run_cli(monkeypatch, capsys, "validate-detector", "--no-general", "--tune", tune)
        assert code == 2 and message in err and "Traceback" not in err, (tune, err)


def test_a_command_lines_detector_settings_and_tuning_grid_are_checked_against_the_detector():
    from harness.detection import detector_settings, open_detector, tuning_grid
    from harness.errors import ConfigError, HarnessError

    # model and url as given; each --set read as YAML reads a value.
    assert detector_settings("grounding", None, None, ["tolerance=0.2"]) == {"name": "grounding", "tolerance": 0.2}
    assert detector_settings("judge", "m", None, ["candidate=true", "url=http://h:1/v1"]) == {
        "name": "judge", "model": "m", "candidate": True, "url": "http://h:1/v1"}
    for bad in ["tolerance", "=0.2", "name=nli"]:
        with pytest.raises(HarnessError, match="--set"):
            detector_settings("grounding", None, None, [bad])
    assert tuning_grid("tolerance=0.1,0.2,0.1", "grounding") == ("tolerance", (0.1, 0.2))
    for tune, message in [("threshold=0.1,0.2", "not a numeric setting of detector 'grounding'"),
                          ("tolerance=0.1", "at least two values"), ("tolerance=a,b", "comma-separated")]:
        with pytest.raises(HarnessError, match=message):
            tuning_grid(tune, "grounding")
    assert open_detector({"name": "grounding", "tolerance": 0.3}, "here", print).name == "grounding"
    with pytest.raises(ConfigError, match=r"here: detector\.model"):
        open_detector({"name": "grounding", "model": "x"}, "here", print)
