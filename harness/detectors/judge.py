"""The `judge` detector: an LLM (an embedded or local model run in process, or any OpenAI-compatible
server, e.g. the 70B baseline behind vLLM) reads the passage, the question and the answer with a fixed,
versioned prompt and returns a verdict and the unsupported span. Its raw outputs are kept with the
findings; an output that follows neither verdict form is recorded as such, not guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import Field

from harness.backends import Backend, BackendEnv, Deployment
from harness.backends.hf_local import HFOptions
from harness.backends.openai_compat import OpenAIOptions, unreachable
from harness.detectors.base import Detector, DetectorOptions, model_problem, register
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
_VERDICT = re.compile(r"VERDICT:\s*(SUPPORTED|HALLUCINATED)", re.IGNORECASE)
_SPAN = re.compile(r"SPAN:\s*(.+)", re.IGNORECASE)


def parse(raw: str) -> tuple[bool | None, str | None]:
    """(hallucinated, span) from the judge's reply; hallucinated is None when there is no verdict."""
    verdict = _VERDICT.search(raw)
    if not verdict:
        return None, None
    span = _SPAN.search(raw)
    return verdict.group(1).upper() == "HALLUCINATED", span.group(1).strip() if span else None


@register
class JudgeOptions(DetectorOptions):
    """An LLM judge: in process (embedded name or local folder), or any OpenAI-compatible server with `url`."""

    name: Literal["judge"] = "judge"
    model: str = Field(description="the judging model (embedded name or local directory, or the served model's "
                       "name with `url`)")
    url: str | None = Field(None, description="base URL of an OpenAI-compatible server")
    api_key_env: str | None = None

    @classmethod
    def detector(cls) -> type[Detector]:
        return JudgeDetector

    def open(self, say: Callable[[str], None]) -> Detector:
        # The judge runs on a backend like any candidate, with its default settings: in process, or served.
        options = (OpenAIOptions(url=self.url, api_key_env=self.api_key_env) if self.url else HFOptions())
        target = Deployment("judge", self.model, None, options)
        return JudgeDetector(options.open(target, BackendEnv([target], say)), self.model)

    def problem(self) -> str | None:
        return unreachable(self.url) if self.url else model_problem(self.model)


class JudgeDetector(Detector):
    name = "judge"
    version = PROMPT_VERSION

    def __init__(self, backend: Backend, model: str) -> None:
        self.backend = backend
        self.model_name = model

    def detect(self, claims: list[Claim]) -> list[Finding]:
        requests = []
        for i, c in enumerate(claims):
            user = USER.format(source=" ".join([c.source, *c.references]), question=c.question, answer=c.answer)
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
            requests.append(Request(str(i), messages, f"{SYSTEM}\n\n{user}\n\n", max_new_tokens=64))
        todo = [r for r, c in zip(requests, claims, strict=True) if not is_abstention(c.answer)]
        replies = {done.example_id: done for done in self.backend.generate(todo, "judge", "detector")}
        findings = []
        for i, claim in enumerate(claims):
            if is_abstention(claim.answer):
                findings.append(Finding(hallucinated=False, abstained=True))
                continue
            reply = replies[str(i)]
            raw = reply.text if reply.ok else f"ERROR: {reply.error}"
            hallucinated, span = parse(raw)
            findings.append(Finding(hallucinated=bool(hallucinated), spans=(span,) if span else (), raw=raw,
                                    error=None if hallucinated is not None else "no verdict in the judge's reply"))
        return findings

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "model": self.model_name}

    def close(self) -> None:
        self.backend.close()
