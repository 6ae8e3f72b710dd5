"""The nli detector on a tiny random entailment classifier: the mechanics (premise/hypothesis pairs,
threshold, spans, abstentions), checked against the classifier's own probabilities."""

import pytest

from harness.detectors import Claim
from harness.detectors.nli import NLIDetector, NLIOptions, hypotheses
from harness.errors import HarnessError

pytestmark = pytest.mark.slow
SOURCE = "The parcel left the depot on Monday. It arrived in Leeds on Wednesday."


def test_short_answers_are_read_with_the_question_and_long_ones_by_sentence():
    assert hypotheses(Claim("Monday", SOURCE, "When did it leave?")) == ["When did it leave? Monday"]
    assert hypotheses(Claim("It left on Monday. It arrived on Friday.", SOURCE)) == [
        "It left on Monday.", "It arrived on Friday."]


def test_findings_follow_the_entailment_probabilities(tiny_nli_model):
    claims = [Claim("It left on Monday. It arrived in Leeds on Friday.", SOURCE, "When?"),
              Claim("It left the depot on Monday and went to Leeds.", SOURCE, "When?"),
              Claim("The passage does not say.", SOURCE, "Who sent it?")]
    detector = NLIOptions(model=str(tiny_nli_model), threshold=0.5).open(print)
    probs = detector.entailment([(SOURCE, h) for c in claims[:2] for h in hypotheses(c)])
    assert all(0 < p < 1 for p in probs)
    found = detector.detect(claims)
    assert found[2].abstained and not found[2].hallucinated
    assert found[0].score == pytest.approx(1 - min(probs[:2]), abs=1e-5)
    assert found[0].spans == tuple(h for h, p in zip(hypotheses(claims[0]), probs[:2], strict=True) if p < 0.5)
    assert found[0].hallucinated == bool(found[0].spans)
    # The threshold decides: nothing passes a near-certain bar, everything passes a near-zero one.
    strict = NLIDetector(str(tiny_nli_model), threshold=0.99).detect(claims[:2])
    lenient = NLIDetector(str(tiny_nli_model), threshold=0.01).detect(claims[:2])
    assert all(f.hallucinated for f in strict) and not any(f.hallucinated for f in lenient)
    assert detector.describe()["name"] == "nli" and detector.describe()["model"] == str(tiny_nli_model)


def test_a_model_without_an_entailment_label_is_refused(talking_model):
    with pytest.raises(HarnessError, match="has no entailment label"):
        NLIDetector(str(talking_model))
