"""A team's own `evaluate` metric: word-set overlap (Jaccard) of answer and reference, per answer."""

import datasets
import evaluate


class WordOverlap(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Jaccard overlap of the answer's and the reference's lower-cased word sets.",
            citation="", inputs_description="predictions and references: lists of strings",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references, lowercase=True):
        scores = []
        for p, r in zip(predictions, references, strict=True):
            a, b = (set((p.lower() if lowercase else p).split()), set((r.lower() if lowercase else r).split()))
            scores.append(len(a & b) / len(a | b) if a | b else 1.0)
        return {"overlap": sum(scores) / len(scores)}
