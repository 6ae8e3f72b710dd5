"""The judge detector: the versioned prompt's verdict format, and a real in-process judge (the tiny
model, whose replies are noise) whose raw replies are kept and never guessed into verdicts."""

import pytest

from harness.detectors import Claim
from harness.detectors.judge import PROMPT_VERSION, JudgeOptions, parse


@pytest.mark.parametrize(("raw", "expected"), [
    ("VERDICT: SUPPORTED", (False, None)),
    ("verdict: hallucinated\nSPAN: on Friday", (True, "on Friday")),
    ("Sure! VERDICT: HALLUCINATED", (True, None)),
    ("The answer looks fine to me.", (None, None)),
])
def test_verdicts_are_parsed(raw, expected):
    assert parse(raw) == expected


@pytest.mark.slow
def test_in_process_judge_keeps_raw_replies(talking_model):
    detector = JudgeOptions(model=str(talking_model)).open(print)
    try:
        claims = [Claim("Friday", "It arrived on Wednesday.", "When did it arrive?"),
                  Claim("I don't know.", "It arrived on Wednesday.", "Who sent it?")]
        found = detector.detect(claims)
    finally:
        detector.close()
    assert found[1].abstained and found[1].raw is None
    assert isinstance(found[0].raw, str)
    verdict, _ = parse(found[0].raw)
    assert found[0].hallucinated == bool(verdict)
    assert (found[0].error is None) == (verdict is not None)
    assert detector.describe() == {"name": "judge", "version": PROMPT_VERSION, "model": str(talking_model)}
