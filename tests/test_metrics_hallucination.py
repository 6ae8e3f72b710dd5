import pytest

from harness.metrics import get_metric
from harness.metrics.hallucination import is_abstention, is_hallucinated, unsupported_spans
from tests.helpers import scoring_input

PASSAGE = "Arthur's Magazine (1844-1846) was an American literary periodical published in Philadelphia."


@pytest.mark.parametrize(("answer", "expected"), [
    ("Arthur's Magazine", False),                             # copied from the passage
    ("It was published in Philadelphia.", False),            # content words all supported
    ("It was published in Boston in 1900.", True),           # unsupported number and name
    ("Published in 1901.", True),                            # one unsupported number is enough
    ("The passage does not say.", False),                    # an abstention
    ("periodicals published in Philadelphia", False),        # supported by stem
    ("A French fashion magazine from Paris", True),          # mostly unsupported content
])
def test_grounding_rule(answer, expected):
    assert is_hallucinated(answer, PASSAGE) is expected


def test_unsupported_spans_name_the_words():
    assert unsupported_spans("Published in Boston in 1900", PASSAGE) == ["Boston", "1900"]


def test_abstentions():
    assert is_abstention("")
    assert is_abstention("I don't know.")
    assert not is_abstention("Philadelphia")


def test_rate_counts_reference_and_question_as_support():
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
