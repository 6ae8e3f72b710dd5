"""Every dashboard page through streamlit.testing's AppTest, on a real run of the tiny model (two tasks,
two candidates, a manifest), with ratings saved through the Review page itself."""

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from harness.pipeline import run_suite
from harness.ratings import RatingStore
from tests.conftest import classification_task, kept_unchanged, qa_task, write_yaml
from tests.talking_model import LABELS, LEARNED_LABEL, LEARNED_WITH_SHOTS

pytestmark = pytest.mark.slow
APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
CANDIDATES = ("tiny-zero", "tiny-fewshot")


@pytest.fixture(scope="module")
def results(talking_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("dash")
    suite = write_yaml(root / "suite.yaml", {
        "name": "dash", "seed": 1,
        "tasks": [str(classification_task(root / "kw", n_test=12)), {"task": str(qa_task(root / "qa")), "limit": 10}],
        "candidates": [{"name": CANDIDATES[0], "model": str(talking_model)},
                       {"name": CANDIDATES[1], "model": str(talking_model), "few_shot": 2, "chat": False}],
        "bootstrap": {"resamples": 200, "confidence": 0.9},  # not the default: pages must print the run's
        "manifest": {"criteria": [
            {"task": "keywords", "metric": "accuracy", "candidate": CANDIDATES[1], "at_least": 0.05},
            # Ten rated answers bound a 1-5 mean of 3.75 no tighter than about [2.4, 4.6] without assumptions.
            {"task": "qa", "metric": "human_rating", "candidate": CANDIDATES[1], "at_least": 2}]}})
    run_suite(suite, root / "results", run_id="run-1")
    with kept_unchanged(root / "results", "dashboard results"):
        yield root / "results"


@pytest.fixture
def own_results(results, tmp_path):
    """A copy of the shared results for a test that saves ratings into it."""
    return Path(shutil.copytree(results, tmp_path / "results"))


@pytest.fixture(autouse=True)
def _address_restored():
    """`app` sets the address the page believes it is served on; later tests find it as it was."""
    from streamlit import config

    before = config.get_option("server.address")
    yield
    config.set_option("server.address", before)


# What `.streamlit/secrets.toml` holds where a team signs in through its identity provider (OIDC).
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "a-long-random-secret",
        "client_id": "harness", "client_secret": "s3cret", "server_metadata_url":
        "https://idp.example.org/.well-known/openid-configuration"}


def app(results, monkeypatch, page, token=None, address="127.0.0.1", user=None):
    """The app on `page`, as served on `address` (`harness dashboard --host`), opened through a sign-in link's
    token if one is given; with `user`, the app signs in through an identity provider and the user is this
    (Streamlit's AppTest stands in for the provider's redirect)."""
    from streamlit import config

    monkeypatch.setenv("HARNESS_RESULTS", str(results))
    config.set_option("server.address", address)
    at = AppTest.from_file(str(APP), default_timeout=120)
    if token is not None:
        at.query_params["token"] = token
    if user is not None:
        at.secrets["auth"] = AUTH
        at.user = user
    at.run()
    at.sidebar.radio(key="page").set_value(page).run()
    assert not at.exception, at.exception
    return at


def texts(at) -> str:
    parts = [e.value for kind in ("title", "header", "subheader", "markdown", "caption", "text", "info", "success",
                                  "warning", "error") for e in getattr(at, kind)]
    parts += [str(df.value) for df in at.dataframe]
    return "\n".join(map(str, parts))


def test_runs_page_lists_runs_and_survives_a_damaged_one(results, monkeypatch, tmp_path):
    at = app(results, monkeypatch, "Runs")
    table = at.dataframe[0].value
    assert list(table.run) == ["run-1"] and table.verdict[0] == "not passed"
    assert set(table.candidates[0].split(", ")) == set(CANDIDATES)

    broken = tmp_path / "results"
    (broken / "run-1").mkdir(parents=True)
    (broken / "run-1" / "run.json").write_text("{not json")
    at = app(broken, monkeypatch, "Runs")
    assert "malformed JSON" in texts(at)
    at = app(broken, monkeypatch, "Scorecard")
    assert "No readable runs" in texts(at)


def test_two_picked_runs_show_what_moved(results, monkeypatch, tmp_path):
    import shutil

    two = tmp_path / "two"
    shutil.copytree(results / "run-1", two / "run-1")
    shutil.copytree(results / "run-1", two / "run-2")
    at = app(two, monkeypatch, "Scorecard")
    at.session_state["chosen_runs"] = ["run-2", "run-1"]
    at.run()
    assert not at.exception and "Changes from run-1 to run-2" in texts(at)
    changes = next(df.value for df in at.dataframe if "movement" in df.value.columns)
    assert set(changes.movement) == {"unchanged"} and set(changes.task) == {"keywords", "qa"}


def test_a_picked_run_that_vanished_is_a_message(results, monkeypatch):
    at = app(results, monkeypatch, "Scorecard")
    at.session_state["chosen_runs"] = ["no-such-run"]
    at.run()
    assert not at.exception and "Run no-such-run cannot be shown" in texts(at)


def test_scorecard_shows_verdicts_metrics_forest_and_frontier(results, monkeypatch):
    at = app(results, monkeypatch, "Scorecard")
    verdicts = at.dataframe[0].value
    assert len(verdicts) == 2 and "insufficient" in set(verdicts.status)  # no human ratings yet
    metrics = json.loads((results / "run-1" / "metrics.json").read_text())
    # The run's confidence level, on the page, in report.md and on every metric result.
    assert "Metrics (90% bootstrap intervals)" in texts(at)
    assert "90% confidence" in (results / "run-1" / "report.md").read_text()
    assert {m["confidence"] for m in metrics} == {0.9}
    (acc,) = [m for m in metrics if m["task"] == "keywords" and m["candidate"] == CANDIDATES[0]
              and m["metric"] == "accuracy"]
    assert at.dataframe[1].value.loc[CANDIDATES[0], "keywords"].startswith(f"{acc['value']:.4g} [")
    assert len(at.get("vega_lite_chart")) == 2  # the forest plot and the quality/latency/cost chart
    frontier = at.dataframe[2].value
    assert set(frontier.candidate) == set(CANDIDATES) and frontier.on_frontier.any()
    ttft = json.loads((results / "run-1" / "metrics.json").read_text())
    ttft = {m["metric"]: m["value"] for m in ttft if m["candidate"] == CANDIDATES[0] and m["task"] == "keywords"}
    row = frontier.set_index("candidate").loc[CANDIDATES[0]]
    assert row["TTFT ms p50/p90/p99"] == " / ".join(f"{ttft[f'ttft_ms_p{q}']:.1f}" for q in (50, 90, 99))
    assert row["cost per 1k requests"] == "–", "no cost_per_hour in this suite"


def _keyword_rows(results) -> list[dict]:
    return [json.loads(line) for line in (results.parent / "kw" / "test.jsonl").read_text().splitlines()]


def _word(row) -> str:
    return row["text"].split()[-1]


# What each filter must list on the keyword task, from the test data and what the test model learned
# (tiny-zero answers LEARNED_LABEL, tiny-fewshot LEARNED_WITH_SHOTS), with the widget settings that ask for it.
FILTER_CASES = {
    "all": ({}, lambda r: True),
    "A right and B wrong": ({"ex_a": CANDIDATES[1], "ex_b": CANDIDATES[0], "ex_binary": "accuracy"},
                            lambda r: LEARNED_WITH_SHOTS[_word(r)] == r["label"] != LEARNED_LABEL[_word(r)]),
    "hallucinated": ({}, lambda r: False),  # a classification task has no findings
    "invalid label": ({"ex_icand": CANDIDATES[0]}, lambda r: LEARNED_LABEL[_word(r)] not in LABELS),
    "by label": ({"ex_label": "delivery"}, lambda r: r["label"] == "delivery"),
    "by metric range": ({"ex_rcand": CANDIDATES[0], "ex_rmetric": "accuracy", "ex_range": (0.5, 1.0)},
                        lambda r: LEARNED_LABEL[_word(r)] == r["label"]),
    "confusion cell": ({"ex_ccand": CANDIDATES[0], "ex_true": "delivery", "ex_pred": "billing"},
                       lambda r: r["label"] == "delivery" and LEARNED_LABEL[_word(r)] == "billing"),
}


@pytest.mark.parametrize("how", list(FILTER_CASES))
def test_examples_page_filters_list_exactly_the_matching_examples(results, monkeypatch, how):
    settings, keeps = FILTER_CASES[how]
    at = app(results, monkeypatch, "Examples")
    at.selectbox(key="ex_filter").set_value(how).run()
    for key, value in settings.items():
        widget = at.slider(key=key) if key == "ex_range" else at.selectbox(key=key)
        widget.set_value(value).run()
    assert not at.exception, at.exception
    rows = _keyword_rows(results)
    expected = sorted(r["text"] for r in rows if keeps(r))
    if how not in ("all", "hallucinated"):
        assert 0 < len(expected) < len(rows), "the data must make this filter non-trivial"
    assert f"{len(expected)} of {len(rows)} examples" in texts(at)
    listed = sorted(at.selectbox(key="ex_id").options) if expected else []
    assert listed == expected
    if how == "all":
        assert set(CANDIDATES) <= {h.value for h in at.subheader}
        assert at.get("vega_lite_chart"), "the confusion matrix"


def test_examples_are_picked_by_their_text_and_shown_as_text(results, monkeypatch):
    at = app(results, monkeypatch, "Examples")
    rows = [json.loads(line) for line in (results.parent / "kw" / "test.jsonl").read_text().splitlines()]
    picker = at.selectbox(key="ex_id")
    assert sorted(picker.options) == sorted(r["text"] for r in rows)  # the message, not a hash id
    shown = next(r for r in rows if r["id"] == picker.value)
    plain = [t.value for t in at.text]
    assert shown["text"] in plain and shown["label"] in plain  # input and reference as plain text
    assert not any(shown["text"] in m.value for m in at.markdown)
    tables = [df.value for df in at.dataframe if list(df.value.columns) == ["metric", "value"]]
    assert len(tables) == len(CANDIDATES) and "accuracy" in set(tables[0].metric)


def test_one_examples_answers_read_alone_equal_those_of_the_whole_task(results):
    """The Examples page's first view reads only the example's lines; a page that has read the whole task finds
    the same rows, every candidate's, and the candidates are known without reading any."""
    from dashboard.data import load_run

    view = load_run(results / "run-1")
    example_id = view.examples["keywords"].example_id.iloc[3]
    alone = view.predictions_of("keywords", example_id)
    assert view.candidates_of("keywords") == list(CANDIDATES) and ("read", "keywords") not in view._loaded
    assert len(view.answers) > 0 and ("read", "keywords") in view._loaded
    whole = view.predictions_of("keywords", example_id)
    assert alone.equals(whole) and list(whole.candidate) == list(CANDIDATES)
    assert set(whole.example_id) == {example_id}


def test_examples_page_shows_the_answer_the_gate_scores(own_results, monkeypatch):
    """A successful answer followed by a failed attempt at the same example (a resumed run not yet compacted):
    the page shows the success, as the gate scores it and reviewers rate it, not the last line."""
    path = own_results / "run-1" / "predictions" / CANDIDATES[0] / "keywords.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    with path.open("a") as f:
        f.writelines(json.dumps({**row, "text": "", "error": "HTTP 503 upstream gone"}) + "\n" for row in rows)
    at = app(own_results, monkeypatch, "Examples")
    shown = next(r for r in rows if r["example_id"] == at.selectbox(key="ex_id").value)
    assert shown["text"] in [t.value for t in at.text] and not at.error
    assert "HTTP 503 upstream gone" not in texts(at)


def test_a_damaged_answer_line_is_a_message_naming_the_file_not_a_traceback(own_results, monkeypatch):
    path = own_results / "run-1" / "predictions" / CANDIDATES[0] / "keywords.jsonl"
    lines = path.read_text().splitlines()
    damaged = json.loads(lines[0])["example_id"]
    path.write_text("\n".join([lines[0][:-3], *lines[1:]]) + "\n")
    at = app(own_results, monkeypatch, "Examples")
    at.selectbox(key="ex_id").set_value(damaged).run()
    assert not at.exception, at.exception
    assert "This example's answers cannot be read:" in [e.value for e in at.error]
    assert f"{path}: line 1 is not a Completion" in [t.value for t in at.text]


def test_pages_see_answers_written_after_they_read_the_run(own_results, monkeypatch):
    """The page caches a run; answers a resumed run writes later (run.json untouched) still show."""
    path = own_results / "run-1" / "predictions" / CANDIDATES[0] / "keywords.jsonl"
    first = app(own_results, monkeypatch, "Examples").selectbox(key="ex_id").value
    _plant(path, first, lambda r: {**r, "text": "a rewritten answer"})
    assert "a rewritten answer" in [t.value for t in app(own_results, monkeypatch, "Examples").text]


def test_examples_page_shows_hallucination_evidence(results, monkeypatch):
    at = app(results, monkeypatch, "Examples")
    at.selectbox(key="ex_task").set_value("qa").run()
    at.selectbox(key="ex_filter").set_value("hallucinated").run()
    rows = [json.loads(line) for line in
            (results / "run-1" / "detections" / CANDIDATES[0] / "qa.jsonl").read_text().splitlines()]
    flagged = [r for r in rows if r["finding"]["hallucinated"]]
    # The model's words the passage never says: "Sunday" for Friday, "morning" for Thursday.
    assert flagged and all(r["answer"] in ("on Sunday", "on Thursday morning") for r in flagged)
    assert len(flagged) < len(rows)
    assert f"{len(flagged)} of 10 examples" in texts(at)
    shown = next(r for r in flagged if r["example_id"] == at.selectbox(key="ex_id").value)
    assert {w.value for w in at.warning} == {"hallucinated: the source does not support"}
    assert "\n".join(shown["finding"]["spans"]) in [c.value for c in at.code]  # the spans, as plain text


PAYLOAD = "**bold** [link](http://evil) <img src=x>"
MARKDOWN_KINDS = ("title", "header", "subheader", "markdown", "caption", "info", "success", "warning", "error")


def _plant(path, example_id, change) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(change(r) if r["example_id"] == example_id else r) + "\n" for r in rows))


def test_data_is_never_rendered_as_markdown(own_results, monkeypatch):
    """An answer, a server's error body, a detector's span, a reviewer's name and comment, all holding Markdown
    and HTML: every one is on the page as plain text, none inside an element that renders Markdown."""
    import os

    from harness.ratings import Score, answer_sha256

    at = app(own_results, monkeypatch, "Examples")
    at.selectbox(key="ex_task").set_value("qa").run()
    example_id = at.selectbox(key="ex_id").value
    run = own_results / "run-1"
    _plant(run / "predictions" / CANDIDATES[0] / "qa.jsonl", example_id,
           lambda r: {**r, "text": PAYLOAD, "error": "HTTP 500: " + PAYLOAD})
    _plant(run / "detections" / CANDIDATES[0] / "qa.jsonl", example_id,
           lambda r: {**r, "finding": {**r["finding"], "hallucinated": True, "spans": [PAYLOAD]}})
    os.utime(run / "run.json")
    RatingStore.beside(own_results).save_score(Score("run-1", "qa", example_id, CANDIDATES[0], PAYLOAD, 3, 3, 3,
                                                     comment=PAYLOAD, answer_sha256=answer_sha256(PAYLOAD)))

    at = app(own_results, monkeypatch, "Examples")
    at.selectbox(key="ex_task").set_value("qa").run()
    assert at.selectbox(key="ex_id").value == example_id
    rendered = [str(e.value) for kind in MARKDOWN_KINDS for e in getattr(at, kind)]
    assert not [r for r in rendered if "evil" in r], "data rendered as Markdown"
    plain = [t.value for t in at.text] + [c.value for c in at.code]
    assert PAYLOAD in plain and "HTTP 500: " + PAYLOAD in plain and plain.count(PAYLOAD) == 2  # answer, span

    at = app(own_results, monkeypatch, "Agreement")
    rendered = [str(e.value) for kind in MARKDOWN_KINDS for e in getattr(at, kind)]
    assert not [r for r in rendered if "evil" in r], "data rendered as Markdown"
    ratings = next(df.value for df in at.dataframe if "comment" in df.value.columns)
    assert list(ratings.reviewer) == [PAYLOAD] and list(ratings.comment) == [PAYLOAD]


def test_latency_page_plots_each_kind(results, monkeypatch):
    at = app(results, monkeypatch, "Latency")
    shown = texts(at)
    assert "TTFT" in shown and "end-to-end" in shown and "No `harness bench` results" in shown
    assert len(at.get("vega_lite_chart")) >= 2


def test_review_scores_are_saved_per_reviewer(own_results, monkeypatch):
    at = app(own_results, monkeypatch, "Review")
    at.text_input(key="reviewer").set_value("ada").run()
    at.selectbox(key="rev_task").set_value("qa").run()
    assert "0 of 20 outputs rated by you" in at.get("progress")[0].proto.text
    at.slider(key="rate_accuracy").set_value(5)
    at.slider(key="rate_coherence").set_value(4)
    at.slider(key="rate_conciseness").set_value(2)
    at.text_area(key="rate_comment").set_value("fine")
    at.button[0].click().run()  # the form's submit button
    assert not at.exception, at.exception
    assert "1 of 20 outputs rated by you" in at.get("progress")[0].proto.text
    saved = RatingStore.beside(own_results).scores("run-1", "qa")
    assert [(s.reviewer, s.accuracy, s.coherence, s.conciseness, s.comment) for s in saved] == [
        ("ada", 5, 4, 2, "fine")]
    at.button(key="score_skip").click().run()
    assert not at.exception


def test_scores_mode_hides_the_name_until_saved(own_results, monkeypatch):
    at = app(own_results, monkeypatch, "Review")
    at.text_input(key="reviewer").set_value("ada").run()
    assert not any(name in texts(at) for name in CANDIDATES), "candidate name shown before the rating is saved"
    at.button[0].click().run()
    (saved,) = RatingStore.beside(own_results).scores("run-1")
    confirmation = [t.value for t in at.text if t.value.startswith("That was the output of")]
    assert confirmation == [f"That was the output of {saved.candidate} (example {saved.example_id})."]
    assert not any(name in texts(at).replace(confirmation[0], "") for name in CANDIDATES)


def _queue(own_results, monkeypatch, reviewer, mode="Scores", n=4) -> list[tuple[str, ...]]:
    """The first n items a reviewer meets (each as the texts the page shows), skipping along."""
    at = app(own_results, monkeypatch, "Review")
    at.text_input(key="reviewer").set_value(reviewer).run()
    at.radio(key="rev_mode").set_value(mode).run()
    seen = []
    for _ in range(n):
        seen.append(tuple(t.value for t in at.text))
        at.button(key="score_skip" if mode == "Scores" else "blind_skip").click().run()
    return seen


@pytest.mark.parametrize("mode", ["Scores", "Blind side by side"])
def test_each_reviewer_meets_the_items_in_an_order_of_their_own(own_results, monkeypatch, mode):
    ada = _queue(own_results, monkeypatch, "ada", mode)
    assert len(set(ada)) == len(ada), "skip moves on"
    assert _queue(own_results, monkeypatch, "bob", mode) != ada
    assert _queue(own_results, monkeypatch, "ada", mode) == ada, "the same reviewer, the same order"


def test_blind_mode_hides_names_until_saved(own_results, monkeypatch):
    at = app(own_results, monkeypatch, "Review")
    at.text_input(key="reviewer").set_value("bob").run()
    at.radio(key="rev_mode").set_value("Blind side by side").run()
    before = texts(at)
    assert "Output 1" in before and "Output 2" in before
    assert not any(name in before for name in CANDIDATES), "candidate names shown before the rating is saved"
    at.radio(key="blind_choice").set_value("Output 1")
    at.button[0].click().run()
    after = texts(at)
    assert any(name in after for name in CANDIDATES), "names revealed once saved"
    (pref,) = RatingStore.beside(own_results).preferences("run-1")
    assert pref.reviewer == "bob" and pref.preferred in ("A", "B")
    revealed = next(t.value for t in at.text if "Output 1 was" in t.value)
    left = revealed.split("Output 1 was ")[1].split(" and")[0]
    assert (pref.candidate_a if pref.preferred == "A" else pref.candidate_b) == left


def _answer_sha(results, candidate, example_id) -> str:
    from harness.ratings import answer_sha256
    from harness.store import ResultsDir

    return answer_sha256(ResultsDir(results).run("run-1").answers(candidate, "qa")[example_id].text)


def _rewrite_answer(results, candidate, example_id, text) -> None:
    """What `--resume` does to an answer it regenerates: a new text in the predictions file (and run.json touched)."""
    import os

    path = results / "run-1" / "predictions" / candidate / "qa.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "text": text} if r["example_id"] == example_id else r) + "\n"
                            for r in rows))
    os.utime(results / "run-1" / "run.json")


def test_failed_requests_are_not_offered_for_rating(own_results, monkeypatch):
    """A failed request has no answer to rate: neither mode offers it (any failure makes a rating criterion
    insufficient, so such a rating would be wasted), and a task with nothing left says so."""
    import os

    path = own_results / "run-1" / "predictions" / CANDIDATES[0] / "qa.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    kept = rows[0]["example_id"]
    path.write_text("".join(json.dumps(r if r["example_id"] == kept else {**r, "text": "", "error": "HTTP 503"}) + "\n"
                            for r in rows))
    os.utime(own_results / "run-1" / "run.json")
    at = app(own_results, monkeypatch, "Review")
    at.text_input(key="reviewer").set_value("ada").run()
    at.selectbox(key="rev_task").set_value("qa").run()
    assert "0 of 11 outputs rated by you" in at.get("progress")[0].proto.text
    at.radio(key="rev_mode").set_value("Blind side by side").run()
    assert "0 of 1 comparisons done by you" in at.get("progress")[0].proto.text
    assert rows[0]["text"] in texts(at)

    path.write_text("".join(json.dumps({**r, "text": "", "error": "HTTP 503"}) + "\n" for r in rows))
    os.utime(own_results / "run-1" / "run.json")
    at = app(own_results, monkeypatch, "Review")
    at.text_input(key="reviewer").set_value("ada").run()
    at.selectbox(key="rev_task").set_value("qa").run()
    at.radio(key="rev_mode").set_value("Blind side by side").run()
    assert not at.exception, at.exception
    assert [i.value for i in at.info] == ["No example of this task where two candidates both answered."]


def test_a_rewritten_answer_loses_its_ratings_in_the_gate_and_on_the_page(own_results, monkeypatch):
    from harness.evaluation import gate
    from harness.ratings import Score

    store = RatingStore.beside(own_results)
    ids = [json.loads(line)["example_id"] for line in
           (own_results / "run-1" / "predictions" / CANDIDATES[1] / "qa.jsonl").read_text().splitlines()]
    for ex in ids:
        store.save_score(Score("run-1", "qa", ex, CANDIDATES[1], "r1", 4, 4, 4,
                               answer_sha256=_answer_sha(own_results, CANDIDATES[1], ex)))
    human = next(v for v in gate(own_results / "run-1")[0] if v.metric == "human_rating")
    assert human.n == 10
    _rewrite_answer(own_results, CANDIDATES[1], ids[0], "a regenerated answer")
    human = next(v for v in gate(own_results / "run-1")[0] if v.metric == "human_rating")
    assert human.n == 9, "the rating of the old answer still counts"

    at = app(own_results, monkeypatch, "Review")
    at.text_input(key="reviewer").set_value("r1").run()
    at.selectbox(key="rev_task").set_value("qa").run()
    assert "9 of 20 outputs rated by you" in at.get("progress")[0].proto.text
    assert len(at.selectbox(key="score_revisit").options) == 1 + 9
    for _ in range(11):  # the rewritten answer is back in r1's queue (11 outputs left)
        if "a regenerated answer" in [t.value for t in at.text]:
            break
        at.button(key="score_skip").click().run()
    else:
        pytest.fail("the rewritten answer never came back to the reviewer")


def test_a_reviewer_changes_their_own_rating(own_results, monkeypatch):
    at = app(own_results, monkeypatch, "Review")
    at.text_input(key="reviewer").set_value("ada").run()
    at.slider(key="rate_accuracy").set_value(5)
    at.button[0].click().run()
    (first,) = RatingStore.beside(own_results).scores("run-1")
    assert at.slider(key="rate_accuracy").value == 3, "the next item starts from the defaults"
    at.selectbox(key="score_revisit").select_index(1).run()
    assert at.slider(key="rate_accuracy").value == 5, "the earlier rating, to change"
    at.slider(key="rate_accuracy").set_value(2)
    at.text_area(key="rate_comment").set_value("on second thought")
    at.button[0].click().run()
    assert not at.exception, at.exception
    (changed,) = RatingStore.beside(own_results).scores("run-1")
    assert (changed.example_id, changed.candidate) == (first.example_id, first.candidate)
    assert (changed.accuracy, changed.comment) == (2, "on second thought")
    assert at.selectbox(key="score_revisit").value is None, "back to the queue"


def test_with_accounts_only_a_signed_in_reviewer_rates(own_results, monkeypatch):
    store = RatingStore.beside(own_results)
    ada, root = store.add_reviewer("ada"), store.add_reviewer("root", role="admin")
    for token in (None, "not-a-token", ada[:-1]):
        at = app(own_results, monkeypatch, "Review", token=token)
        assert not at.text_input, "a typed name is no sign-in where accounts exist"
        assert not at.slider, "no rating form without a sign-in"
        assert any("harness reviewers add NAME" in w.value for w in at.warning)
    assert store.scores() == [] and store.preferences() == []

    at = app(own_results, monkeypatch, "Review", token=ada)
    assert "Signed in as ada (reviewer)" in [t.value for t in at.text]
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert [s.reviewer for s in store.scores("run-1")] == ["ada"]
    assert "Everyone's progress on this task" not in texts(at), "a reviewer sees their own progress only"

    at = app(own_results, monkeypatch, "Review", token=root)
    progress = next(df.value for df in at.dataframe if "outputs rated" in df.value.columns).set_index("reviewer")
    assert progress.loc["ada", "outputs rated"] == 1 and progress.loc["root", "outputs rated"] == 0


def test_an_identity_providers_sign_in_names_the_account(own_results, monkeypatch):
    store = RatingStore.beside(own_results)
    link = store.add_reviewer("ada@example.org")
    store.add_reviewer("root@example.org", role="admin")
    at = app(own_results, monkeypatch, "Review", token=link, user={"is_logged_in": False})
    assert not at.slider, "with an identity provider, a link's token alone signs nobody in"
    assert [b.label for b in at.button] == ["Sign in"]
    at = app(own_results, monkeypatch, "Review", user={"is_logged_in": True, "email": "[eve](http://x)@example.org"})
    assert not at.slider and "[eve](http://x)@example.org" in [t.value for t in at.text], "shown as text"
    assert any("No reviewer account" in w.value for w in at.warning)
    at = app(own_results, monkeypatch, "Review", user={"is_logged_in": True, "email": "ada@example.org",
                                                       "email_verified": False})
    assert not at.slider and any("not verified" in w.value for w in at.warning)
    at = app(own_results, monkeypatch, "Review", user={"is_logged_in": True, "email": "ada@example.org"})
    assert "Signed in as ada@example.org (reviewer)" in [t.value for t in at.text]
    at.button[0].click().run()
    assert [s.reviewer for s in store.scores("run-1")] == ["ada@example.org"]
    for email, admin in (("ada@example.org", False), ("root@example.org", True)):
        at = app(own_results, monkeypatch, "Agreement", user={"is_logged_in": True, "email": email})
        assert any("admins only" in w.value for w in at.warning) != admin


def test_with_accounts_only_an_admin_sees_everyones_ratings(own_results, monkeypatch):
    store = RatingStore.beside(own_results)
    ada, root = store.add_reviewer("ada"), store.add_reviewer("root", role="admin")
    for token in (None, ada):
        at = app(own_results, monkeypatch, "Agreement", token=token)
        assert not at.dataframe and any("admins only" in w.value for w in at.warning)
    at = app(own_results, monkeypatch, "Agreement", token=root)
    assert not any("admins only" in w.value for w in at.warning)
    assert any("No ratings for this run yet" in i.value for i in at.info), "the admin gets the page itself"


def test_beyond_loopback_without_accounts_nobody_rates(own_results, monkeypatch):
    at = app(own_results, monkeypatch, "Review", address="0.0.0.0")
    assert not at.text_input and not at.slider
    assert any("harness reviewers add NAME" in w.value for w in at.warning)
    assert app(own_results, monkeypatch, "Review").text_input(key="reviewer"), "on loopback a typed name will do"


def test_agreement_page_and_ratings_feed_the_gate(own_results, monkeypatch):
    from sklearn.metrics import cohen_kappa_score

    from harness.evaluation import gate
    from harness.ratings import Preference, Score

    store = RatingStore.beside(own_results)
    ids = [json.loads(line)["example_id"] for line in
           (own_results / "run-1" / "predictions" / CANDIDATES[1] / "qa.jsonl").read_text().splitlines()]
    a = [4, 5, 3, 4, 5, 4, 2, 3, 5, 4]
    b = [4, 4, 3, 5, 5, 3, 2, 2, 4, 4]
    for i, ex in enumerate(ids):
        sha0, sha1 = _answer_sha(own_results, CANDIDATES[0], ex), _answer_sha(own_results, CANDIDATES[1], ex)
        store.save_score(Score("run-1", "qa", ex, CANDIDATES[1], "r1", a[i], a[i], a[i], answer_sha256=sha1))
        store.save_score(Score("run-1", "qa", ex, CANDIDATES[1], "r2", b[i], b[i], b[i], answer_sha256=sha1))
        store.save_preference(Preference("run-1", "qa", ex, CANDIDATES[0], CANDIDATES[1], "r1", "B",
                                         answer_a_sha256=sha0, answer_b_sha256=sha1))
    at = app(own_results, monkeypatch, "Agreement")
    frames = [df.value for df in at.dataframe]
    agreement = next(f for f in frames if "statistic" in f.columns)
    row = agreement[agreement.what == "accuracy"].iloc[0]
    assert row.statistic == "Cohen's kappa (quadratic)"
    assert row.value == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"))
    wins = next(f for f in frames if "ci_low" in f.columns).set_index("candidate")
    assert wins.loc[CANDIDATES[1], "value"] > 0.5
    assert "ties count half; 90% bootstrap intervals" in texts(at)

    verdicts, _ = gate(own_results / "run-1")
    human = next(v for v in verdicts if v.metric == "human_rating")
    assert human.n == len(ids) == 10 and human.observed == pytest.approx((sum(a) + sum(b)) / 20)
    assert human.status == "pass"


def test_monitoring_page_shows_alerts_new_words_and_the_rows_behind(tmp_path, monkeypatch):
    """A real `harness monitor` report of CLINC150 banking queries against Banking77, with no run at all."""
    import pandas as pd

    from harness import report
    from harness.monitor import monitor
    from harness.store import ResultsDir
    from tests.helpers import traffic_log

    clinc = pd.read_csv(APP.parents[1] / "examples" / "traffic" / "clinc150_banking.csv").sample(160, random_state=1)
    log = traffic_log(tmp_path / "t.jsonl", clinc.text.tolist(), ["card_arrival"] * 160, per_day=80)
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "watch", "tasks": ["banking77"], "candidates": [{"name": "c", "model": "smollm2-135m-instruct"}],
        "manifest": {"criteria": [{"task": "banking77", "metric": "accuracy", "candidate": "c", "at_least": 0.5}],
                     "monitor": {"resamples": 200}}})
    result = monitor(log, suite, say=lambda _: None)
    ResultsDir(tmp_path / "results").new_monitor("banking77").write(result.to_dict(), report.monitor_markdown(result))

    at = app(tmp_path / "results", monkeypatch, "Monitoring")
    shown = texts(at)
    alerts = [e.value for e in at.error]
    assert len(alerts) == result.counts["alert"] > 0
    assert any("domain_auc" in a and "breaks <= 0.7" in a for a in alerts)
    windows = at.dataframe[0].value
    assert list(windows.index) == ["2026-11-02", "2026-11-03", "all"] and list(windows["rows"]) == [80, 80, 160]
    assert windows.loc["all", "domain_auc"].startswith("🔴")
    frames = {tuple(f.value.columns): f.value for f in at.dataframe[1:]}
    assert "routing" in set(frames["term", "rows"].term)  # new words, as the new-term signal says to show them
    assert "card_arrival" in set(frames["label", "reference", "traffic"].label)  # every answer was card_arrival
    # Rows behind an alert: domain_auc's are the messages its classifier was surest came from elsewhere.
    behind = at.dataframe[-1].value
    assert len(behind) > 0 and set(behind.input) <= set(clinc.text)
    assert {e.label for e in at.selectbox if e.key == "mon_behind"} and "domain_auc" in at.selectbox(
        key="mon_behind").options
    assert len(at.get("vega_lite_chart")) == 1
    assert "Monitoring" in shown
