"""A corpus-level `evaluate` metric for the tests: total answer words over total reference words."""

import datasets
import evaluate


class LengthRatio(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Words in all answers over words in all references (not a mean of per-answer ratios).",
            citation="", inputs_description="predictions and references: lists of strings",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        words = sum(len(p.split()) for p in predictions)
        return {"ratio": words / max(1, sum(len(r.split()) for r in references)), "answers": len(predictions)}
