"""Hallucination and abstention rates: from the detector's findings when the run has them, else grounding."""

from dataclasses import replace

import pytest

from harness.detectors import Finding
from harness.metrics import get_metric
from tests.helpers import scoring_input

PASSAGE = "Arthur's Magazine (1844-1846) was an American literary periodical published in Philadelphia."


def test_rates_use_the_default_detector_without_findings():
    data = scoring_input(
        ["Philadelphia", "Boston, 1900", "Richard Nixon", "The passage does not say."],
        ["Philadelphia", "Philadelphia", "President Richard Nixon", "x"],
        inputs=[{"knowledge": PASSAGE, "question": "Where?"}] * 2
        + [{"knowledge": "Milhouse was named after a president.", "question": "Named after whom?"}]
        + [{"knowledge": PASSAGE, "question": "Who?"}],
    )
    rate = get_metric("hallucination_rate")
    assert rate.value(rate.stats(data), 4) == pytest.approx(1 / 4)
    abst = get_metric("abstention_rate")
    assert abst.value(abst.stats(data), 4) == pytest.approx(1 / 4)


def test_rates_follow_the_findings_they_are_given():
    data = scoring_input(["a", "b", "c"], ["a", "b", "c"], inputs=[{"knowledge": PASSAGE, "question": "?"}] * 3)
    data = replace(data, findings=[Finding(True, spans=("a",)), Finding(False, abstained=True), Finding(True)])
    rate, abst = get_metric("hallucination_rate"), get_metric("abstention_rate")
    assert rate.value(rate.stats(data), 3) == pytest.approx(2 / 3)
    assert abst.value(abst.stats(data), 3) == pytest.approx(1 / 3)


def test_a_finding_without_a_verdict_is_left_out_of_the_rates_and_counted_as_unparsed():
    texts = ["a", "b", "c", "d"]
    data = scoring_input(texts, texts, inputs=[{"knowledge": PASSAGE, "question": "?"}] * 4)
    data = replace(data, findings=[Finding(True), Finding(False, raw="VERDICT: SUPPORTED or VERDICT: HALLUCINATED",
                                                          error="no verdict in the judge's reply"),
                                   Finding(False), Finding(False, abstained=True)])
    rate, abst, unparsed = (get_metric(m) for m in ("hallucination_rate", "abstention_rate", "detector_unparsed"))
    # Of the three answers with a verdict, one is hallucinated and one an abstention: the unparsed one is neither.
    assert rate.value(rate.stats(data), 4) == pytest.approx(1 / 3)
    assert abst.value(abst.stats(data), 4) == pytest.approx(1 / 3)
    assert rate.count(rate.stats(data)) == 3
    assert list(unparsed.per_example(unparsed.stats(data))) == [0.0, 1.0, 0.0, 0.0]
