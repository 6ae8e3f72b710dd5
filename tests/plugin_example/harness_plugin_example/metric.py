"""A metric: answer length in words (a team that wants short answers), registered like a built-in one."""

from __future__ import annotations

import numpy as np

from harness.metrics import MeanOf, ScoringInput, register


def answer_words(data: ScoringInput) -> np.ndarray:
    return np.array([len(text.split()) for text in data.texts], float)


register(MeanOf(name="answer_words", family="length", fn=answer_words, higher_is_better=False,
                value_range=(0.0, float("inf")), decimals=1))
