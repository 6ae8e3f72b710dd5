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
    assert detector.describe() == {"name": "grounding", "version": "4", "tolerance": 0.1}


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


PARCEL = "The parcel was sent from Paris on Monday."
EITHER_OR = "Was the parcel sent from Paris or from Berlin?"


@pytest.mark.parametrize(("source", "question", "answer"), [
    (PARCEL, EITHER_OR, "The parcel was sent from Berlin, not Paris; anything further is unknown."),
    (PARCEL, EITHER_OR, "Berlin. The exact details are not mentioned."),
    (PARCEL, EITHER_OR, "Berlin, the exact details are not mentioned."),
    ("The treaty was signed in 2001 after long talks.", "Was the treaty signed in 1999 or 2001?",
     "It was signed in 1999; the exact day is unknown."),
    ("Alice joined the firm in 2010 and Bob in 2015.", "Who joined the firm first, Alice or Bob?",
     "Bob joined the firm first; Alice unknown."),
    ("The box is red.", "Is the box red, green, or blue?", "Blue, the details are unknown."),
    (PARCEL, "Was the parcel sent by Alice?", "Alice sent the parcel. The details are not mentioned."),
])
def test_picking_an_alternative_or_asserting_the_question_is_no_abstention(source, question, answer):
    """An answer that names one of the alternatives an either/or question offers, or asserts the question's
    words in a sentence of its own, answers it: checked as any answer (each here contradicts the source), and
    shown to a judge detector, which skips only abstentions."""
    from harness.detectors.hallucination_judge import JudgeDetector
    from harness.records import Completion

    assert not is_abstention(answer, question)
    found = GroundingDetector().detect([Claim(answer, source, question)])[0]
    assert found.hallucinated and not found.abstained

    class AlwaysHallucinated:
        def generate(self, requests, task):
            for r in requests:
                yield Completion(r.example_id, "judge", task, "VERDICT: HALLUCINATED\nSPAN: x")

    judged = JudgeDetector(AlwaysHallucinated(), "m").detect([Claim(answer, source, question)])[0]
    assert judged.hallucinated and not judged.abstained


@pytest.mark.parametrize(("question", "answer"), [
    ("Who sent the parcel?", "The passage does not mention who sent the parcel"),
    ("Who sent the parcel?", "I don't know. The passage does not mention who sent the parcel."),
    ("Who sent the parcel?", "Sorry. The passage does not say."),
    (EITHER_OR, "The passage does not say whether the parcel was sent from Paris or Berlin."),
    (EITHER_OR, "The passage does not say where the parcel was sent from."),
    ("Is the box red, green, or blue?", "The passage does not say whether it is red, green, or blue."),
])
def test_abstentions_may_repeat_the_question_and_its_choice(question, answer):
    assert is_abstention(answer, question)
    assert check(answer, PARCEL, question=question).abstained
