"""The `judge` detector: an LLM (an embedded or local model run in process, or any OpenAI-compatible
server, e.g. the 70B baseline behind vLLM) reads the passage, the question and the answer with a fixed,
versioned prompt and returns a verdict and the unsupported span. Its raw outputs are kept with the
findings; an output without its one verdict line (or an echo of the prompt: of its instructions, or of the user
turn with the answer, which may hold a verdict line of its own) is recorded as unparsed, not guessed, and a failed
request is no finding to keep. An abstention (`grounding.is_abstention`) is not sent to the judge.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import Field

from harness.backends.judge_model import JudgeModel, OpenJudge, verdict_line
from harness.detectors.base import Detector, DetectorOptions, register
from harness.detectors.grounding import is_abstention
from harness.records import Claim, Finding, Request

PROMPT_VERSION = "judge-v1"
SYSTEM = (
    "You check answers against a source passage. An answer is HALLUCINATED when it states anything the "
    "passage does not support: a wrong or invented name, number, date, place or fact. An answer that only "
    "says the passage does not tell is SUPPORTED. Reply in exactly this form:\n"
    "VERDICT: SUPPORTED\n"
    "or\n"
    "VERDICT: HALLUCINATED\n"
    "SPAN: <the unsupported words of the answer>"
)
USER = "Passage: {source}\n\nQuestion: {question}\n\nAnswer: {answer}"
# A reply line that begins as a line of USER does is an echo of the user turn.
HEADINGS = re.compile(r"(passage|question|answer):(\s.*)?", re.IGNORECASE)
_VERDICT = re.compile(r"VERDICT:\s*(SUPPORTED|HALLUCINATED)", re.IGNORECASE)
_SPAN = re.compile(r"SPAN:\s*(.+)", re.IGNORECASE)
# What only an echo of the prompt holds: its sentences and the SPAN placeholder (of four words or more; the two
# verdict lines an echo repeats are two verdicts, unparsed anyway).
INSTRUCTIONS = tuple(part for part in re.split(r"(?<=[.:])\s+|\n", SYSTEM) if len(part.split()) >= 4)


def parse(raw: str, answer: str) -> tuple[bool | None, str | None]:
    """(hallucinated, span) from the judge's reply to the prompt showing `answer`; hallucinated is None when there
    is no verdict (none, two, or an echo of the prompt or of the answer)."""
    verdict = verdict_line(raw, _VERDICT, system=SYSTEM, instructions=INSTRUCTIONS, headings=HEADINGS,
                           shown=(answer,))
    if not verdict:
        return None, None
    spans = [m.group(1).strip() for line in raw.splitlines() if (m := _SPAN.fullmatch(line.strip()))]
    return verdict.group(1).upper() == "HALLUCINATED", spans[0] if spans else None


@register
class JudgeOptions(DetectorOptions):
    """An LLM judge: in process (embedded name or local folder), or any OpenAI-compatible server with `url`."""

    name: Literal["judge"] = "judge"
    model: str = Field(description="the judging model (embedded name or local directory, or the served model's "
                       "name with `url`)")
    url: str | None = Field(None, description="base URL of an OpenAI-compatible server")
    api_key_env: str | None = None

    @property
    def judge_model(self) -> JudgeModel:
        return JudgeModel(model=self.model, url=self.url, api_key_env=self.api_key_env)

    @classmethod
    def detector(cls) -> type[Detector]:
        return JudgeDetector

    def open(self, say: Callable[[str], None]) -> Detector:
        return JudgeDetector(self.judge_model.open(say), self.model)

    def problem(self) -> str | None:
        return self.judge_model.problem()


class JudgeDetector(Detector):
    name = "judge"
    # The prompt (PROMPT_VERSION) and how its reply is read. 2: a verdict only from its own line, never from an
    # echo of the prompt, so that findings kept under the looser reading of version judge-v1 are judged again.
    # 3: nor from an echo of the user turn (its headings, or a verdict line the answer holds), and an answer that
    # hedges besides asserting is judged, not taken for an abstention. 4: so is one that picks one of the question's
    # alternatives, or asserts the question's words in a sentence of its own (grounding v4).
    version = "4"

    def __init__(self, judge: OpenJudge, model: str) -> None:
        self.judge = judge
        self.model_name = model

    def detect(self, claims: list[Claim]) -> list[Finding]:
        requests = []
        for i, c in enumerate(claims):
            user = USER.format(source=" ".join([c.source, *c.references]), question=c.question, answer=c.answer)
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
            requests.append(Request(str(i), messages, f"{SYSTEM}\n\n{user}\n\n", max_new_tokens=64))
        abstained = [is_abstention(c.answer, c.question) for c in claims]
        todo = [r for r, skip in zip(requests, abstained, strict=True) if not skip]
        replies = {done.example_id: done for done in self.judge.generate(todo, "detector")}
        findings = []
        for i, claim in enumerate(claims):
            if abstained[i]:
                findings.append(Finding(hallucinated=False, abstained=True))
                continue
            reply = replies[str(i)]
            if not reply.ok:
                findings.append(Finding(hallucinated=False, error=f"the judge's request failed: {reply.error}",
                                        failed=True))
                continue
            hallucinated, span = parse(reply.text, claim.answer)
            findings.append(Finding(hallucinated=bool(hallucinated), spans=(span,) if span else (), raw=reply.text,
                                    error=None if hallucinated is not None else "no verdict in the judge's reply"))
        return findings

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "model": self.model_name}

    def close(self) -> None:
        self.judge.close()
