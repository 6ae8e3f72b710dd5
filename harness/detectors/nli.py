"""The `nli` detector: an entailment classifier (any sequence-classification model with an "entailment"
label, e.g. MoritzLaurer/DeBERTa-v3-base-mnli-fever-anli or cross-encoder/nli-deberta-v3-base) reads the
source as premise and each answer sentence as hypothesis. A sentence whose entailment probability is below
the threshold is unsupported; an answer with any unsupported sentence is hallucinated. A short answer
("Delhi") is not a statement on its own, so it is read together with the question.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import Field

from harness.detectors.base import Detector, DetectorOptions, register
from harness.detectors.grounding import is_abstention
from harness.errors import HarnessError
from harness.models import model_problem
from harness.records import Claim, Finding

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_SHORT_ANSWER_WORDS = 4
_BATCH = 16


def hypotheses(claim: Claim) -> list[str]:
    sentences = [s.strip() for s in _SENTENCE.split(claim.answer.strip()) if s.strip()]
    if len(claim.answer.split()) < _SHORT_ANSWER_WORDS and claim.question:
        return [f"{claim.question.strip()} {claim.answer.strip()}"]
    return sentences


@register
class NLIOptions(DetectorOptions):
    """An entailment classifier: every answer sentence must be entailed by the passage."""

    name: Literal["nli"] = "nli"
    packages = ("torch", "transformers")
    model: str = Field(description="a sequence-classification model with an entailment label (folder or hub id)")
    threshold: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.5, description="an answer sentence needs at least this entailment probability")

    @classmethod
    def detector(cls) -> type[Detector]:
        return NLIDetector

    def open(self, say: Callable[[str], None]) -> Detector:
        return NLIDetector(self.model, self.threshold)

    def problem(self) -> str | None:
        return model_problem(self.model)


class NLIDetector(Detector):
    name = "nli"
    # 2: a hedge beside an assertion is no abstention (grounding.is_abstention, read with the question).
    # 3: nor an answer that picks one of the question's alternatives, or asserts the question's words in a
    # sentence of its own (grounding v4).
    version = "3"

    def __init__(self, model: str, threshold: float = 0.5) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from harness import models

        path = str(models.local_dir(model) or model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        except (OSError, ValueError) as exc:
            raise HarnessError(f"detector model {model!r} cannot be loaded: {str(exc).splitlines()[0]}") from None
        labels = {i: str(name).lower() for i, name in self.model.config.id2label.items()}
        entail = [i for i, name in labels.items() if name.startswith("entail")]
        if not entail:
            raise HarnessError(f"detector model {model!r} has no entailment label (labels: {sorted(labels.values())})")
        self.entail = entail[0]
        self.threshold = threshold
        self.model_name = model
        self._torch = torch

    def entailment(self, pairs: list[tuple[str, str]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(pairs), _BATCH):
            chunk = pairs[start:start + _BATCH]
            batch = self.tokenizer([p for p, _ in chunk], [h for _, h in chunk], truncation="only_first",
                                   max_length=min(self.tokenizer.model_max_length, 512), padding=True,
                                   return_tensors="pt")
            with self._torch.no_grad():
                probs = self.model(**batch).logits.float().softmax(-1)[:, self.entail]
            out.extend(probs.tolist())
        return out

    def detect(self, claims: list[Claim]) -> list[Finding]:
        abstained = [is_abstention(c.answer, c.question) for c in claims]
        todo = [(i, h) for i, c in enumerate(claims) if not abstained[i] for h in hypotheses(c)]
        probs = self.entailment([(" ".join([claims[i].source, *claims[i].references]), h) for i, h in todo])
        per_claim: dict[int, list[tuple[str, float]]] = {}
        for (i, h), p in zip(todo, probs, strict=True):
            per_claim.setdefault(i, []).append((h, p))
        findings = []
        for i, skip in enumerate(abstained):
            if skip:
                findings.append(Finding(hallucinated=False, abstained=True))
                continue
            scored = per_claim.get(i, [])
            if not scored:
                findings.append(Finding(hallucinated=False))
                continue
            weakest = min(p for _, p in scored)
            spans = tuple(h for h, p in scored if p < self.threshold)
            findings.append(Finding(hallucinated=bool(spans), spans=spans, score=1 - weakest))
        return findings

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "model": self.model_name, "threshold": self.threshold}
