"""Agreement statistics against scikit-learn, the krippendorff package and scipy on the same ratings."""

import krippendorff
import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from harness.agreement import metric_correlations, preference_agreement, score_agreement, win_rates
from harness.ratings import Preference, Score

A = [5, 4, 3, 4, 2, 5, 1]
B = [4, 4, 3, 5, 2, 4, 2]
C = [5, 3, 3, 4, 1, 5, 1]


def _scores(*reviewers):
    return [Score("run", "t", f"e{i}", "ft", f"r{k}", v, v, v)
            for k, values in enumerate(reviewers) for i, v in enumerate(values)]


def test_two_reviewers_get_quadratic_cohen_kappa():
    found = {a.what: a for a in score_agreement(_scores(A, B))}
    assert found["accuracy"].statistic == "Cohen's kappa (quadratic)" and found["accuracy"].items == 7
    assert found["accuracy"].value == pytest.approx(cohen_kappa_score(A, B, weights="quadratic"))


def test_three_reviewers_get_krippendorff_alpha():
    found = {a.what: a for a in score_agreement(_scores(A, B, C))}
    expected = krippendorff.alpha(reliability_data=np.array([A, B, C], float), level_of_measurement="ordinal")
    assert found["coherence"].statistic == "Krippendorff's alpha (ordinal)"
    assert found["coherence"].value == pytest.approx(expected)


def test_no_agreement_without_shared_items():
    assert score_agreement(_scores(A)) == []


def test_preference_agreement_is_nominal_kappa():
    picks_1 = ["A", "B", "tie", "A", "B"]
    picks_2 = ["A", "B", "A", "A", "tie"]
    prefs = [Preference("run", "t", f"e{i}", "x", "y", f"r{k}", p)
             for k, picks in enumerate((picks_1, picks_2)) for i, p in enumerate(picks)]
    found = preference_agreement(prefs)
    assert found.value == pytest.approx(cohen_kappa_score(picks_1, picks_2))


def test_win_rates_by_hand():
    prefs = [Preference("run", "t", f"e{i}", "base", "ft", "r0", p) for i, p in enumerate(["B", "B", "tie", "A"])]
    rates = {w.candidate: w for w in win_rates(prefs)}
    assert rates["ft"].value == pytest.approx(2.5 / 4) and rates["base"].value == pytest.approx(1.5 / 4)
    assert rates["ft"].ci_low <= rates["ft"].value <= rates["ft"].ci_high and rates["ft"].items == 4


def test_metric_correlation_is_spearman_on_matching_outputs():
    scores = _scores(A)
    metric = [0.9, 0.7, 0.5, 0.8, 0.1, 1.0, 0.2]
    automatic = {"rouge_l": {("t", f"e{i}", "ft"): v for i, v in enumerate(metric)}}
    (found,) = metric_correlations(scores, automatic)
    rho, p = spearmanr(metric, A)
    assert found.items == 7 and found.spearman == pytest.approx(rho) and found.p_value == pytest.approx(p)


def test_judge_agreement_with_reviewers_on_the_same_answers():
    from harness.agreement import judge_agreement
    from harness.ratings import Score

    human = [5, 4, 1, 2, 3, 5]
    judge = [5.0, 3.0, 1.0, 4.0, 3.0, 4.0]
    scores = [Score("r", "t", f"e{i}", "c", "rev", h, h, h) for i, h in enumerate(human)]
    judged = {("t", f"e{i}", "c"): j for i, j in enumerate(judge)}
    judged[("t", "e9", "c")] = 2.0  # judged but not rated: left out
    found = judge_agreement("q", "1-5", scores, judged)
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    assert found.items == 6
    assert found.spearman == pytest.approx(spearmanr(judge, human)[0])
    assert found.kappa == pytest.approx(cohen_kappa_score([int(j) for j in judge], human, weights="quadratic",
                                                          labels=[1, 2, 3, 4, 5]))
    assert found.agreement == pytest.approx(5 / 6)  # e3: judge 4 against 2 is the one miss
    assert judge_agreement("q", "1-5", scores[:2], judged) is None


def test_the_gate_and_the_agreement_page_pair_a_judge_with_the_ratings_of_the_same_answers(tmp_path):
    from harness.agreement import judge_agreement
    from harness.metrics.rubric_judge import JudgeAgreement
    from harness.ratings import RatingStore

    judge = {"e0": 5.0, "e1": 1.0, "e2": 4.0, "e3": 2.0}
    store = RatingStore(tmp_path / "ratings.db")
    # Saved out of example order, with a second reviewer on e1 and another candidate's rating between them: the
    # judge agrees with the reviewers on every answer of ft, paired by example and candidate.
    for example_id, candidate, reviewer, rating in [("e3", "ft", "ada", 2), ("e0", "base", "ada", 1),
                                                    ("e0", "ft", "ada", 5), ("e2", "ft", "ada", 4),
                                                    ("e1", "ft", "ada", 1), ("e1", "ft", "bo", 2)]:
        store.save_score(Score("run", "t", example_id, candidate, reviewer, rating, rating, rating))
    human = store.of_run("run")
    assert [s.example_id for s in human.scores][:3] == ["e3", "e0", "e0"]

    gate = JudgeAgreement(name="q_agreement", reads="q", scale="1-5", unparsed="q_unparsed")
    values = gate.rated_values(human, "t", "ft", judge)
    assert list(values) == [1.0, 1.0, 1.0, 1.0]
    page = judge_agreement("q", "1-5", human.scores, {("t", e, "ft"): v for e, v in judge.items()})
    assert page.items == len(values) and page.agreement == values.mean()
