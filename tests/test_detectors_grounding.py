import pytest

from harness.detectors import Claim
from harness.detectors.grounding import GroundingDetector, check, is_abstention, unsupported_spans

PASSAGE = "Arthur's Magazine (1844-1846) was an American literary periodical published in Philadelphia."


@pytest.mark.parametrize(("answer", "expected"), [
    ("Arthur's Magazine", False),                             # copied from the passage
    ("It was published in Philadelphia.", False),            # content words all supported
    ("It was published in Boston in 1900.", True),           # unsupported number and name
    ("Published in 1901.", True),                            # one unsupported number is enough
    ("The passage does not say.", False),                    # an abstention
    ("periodicals published in Philadelphia", False),        # supported by stem
    ("A French fashion magazine from Paris", True),          # mostly unsupported content
    ("Philadelphia Magazine", True),                          # both words occur, never together
    ("yes", False),                                           # yes/no answers need no support
])
def test_grounding_rule(answer, expected):
    assert check(answer, PASSAGE).hallucinated is expected


def test_findings_name_the_unsupported_words_and_the_phrase():
    assert unsupported_spans("Published in Boston in 1900", PASSAGE) == ["Boston", "1900"]
    assert check("Published in Boston in 1900", PASSAGE).spans == ("Boston", "1900")
    assert check("Philadelphia Magazine", PASSAGE).spans == ("Philadelphia Magazine",)
    assert check("The passage does not say.", PASSAGE).abstained


def test_tolerance_is_the_share_of_unsupported_content_words():
    answer = "an American literary periodical published in Philadelphia by Quakers"  # 1 of 6 unsupported
    assert check(answer, PASSAGE, tolerance=0.1).hallucinated
    assert not check(answer, PASSAGE, tolerance=0.2).hallucinated
    assert check(answer, PASSAGE, tolerance=0.2).score == pytest.approx(1 / 6)


def test_detector_counts_question_and_references_as_support():
    detector = GroundingDetector()
    found = detector.detect([Claim("Richard Nixon", "Milhouse was named after a president.", "Named after whom?",
                                   ("President Richard Nixon",)),
                             Claim("Richard Nixon", "Milhouse was named after a president.", "Named after whom?")])
    assert [f.hallucinated for f in found] == [False, True]
    assert detector.describe() == {"name": "grounding", "version": "3", "tolerance": 0.1}


def test_abstentions():
    assert is_abstention("", "Where was it published?")
    assert is_abstention("I don't know.", "Where was it published?")
    assert is_abstention("I’m sorry, but the passage doesn’t say.", "Where was it published?")
    # The question's own words assert nothing.
    assert is_abstention("The passage does not mention where Arthur's Magazine was published.",
                         "Where was Arthur's Magazine published?")
    assert not is_abstention("Philadelphia", "Where was it published?")


@pytest.mark.parametrize("answer", [
    "It was sent from Berlin on 3 March 1999 by Lord Black. The cost is unknown.",
    "It was sent from Berlin on 3 March 1999, and the cost is unknown.",
    "I don't know, maybe Boston.",
])
def test_a_hedge_beside_an_assertion_is_no_abstention(answer):
    """An answer is an abstention only when it asserts nothing besides saying it cannot answer: a fabrication
    with a hedge added is checked as any answer (here: hallucinated), not counted as an abstention."""
    question = "When was the magazine sent, and what did it cost?"
    assert not is_abstention(answer, question)
    found = GroundingDetector().detect([Claim(answer, PASSAGE, question)])[0]
    assert found.hallucinated and not found.abstained
    assert check("I don't know.", PASSAGE).abstained and not check("I don't know.", PASSAGE).hallucinated
