"""A drift signal: the share of messages that shout (a word of three or more capital letters), against the
reference's share. A team's own worry, watched like the built-in signals."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from harness.drift import DetailTable, DriftInput, DriftSignal, Measurement, register
from harness.stats import percentile_interval

SHOUT = re.compile(r"\b[A-Z]{3,}\b")


@register
class ShoutingRate(DriftSignal):
    name = "shouting_rate"
    description = "extra share of messages with a word in capitals (0: as in the reference)"
    default_rules = ({"at_most": 0.05},)

    def measure(self, inp: DriftInput) -> Measurement:
        new = np.array([bool(SHOUT.search(t)) for t in inp.traffic.texts], float)
        ref = np.array([bool(SHOUT.search(t)) for t in inp.reference.texts], float)
        rng = inp.rng(self.name)
        draws = (new[rng.integers(0, len(new), (inp.resamples, len(new)))].mean(axis=1)
                 - ref[rng.integers(0, len(ref), (inp.resamples, len(ref)))].mean(axis=1))
        low, high = percentile_interval(draws, inp.confidence)
        words = sorted({w for t in inp.traffic.texts for w in SHOUT.findall(t)})
        return Measurement(float(new.mean() - ref.mean()), low, high, evidence=f"{new.mean():.0%} of messages shout",
                           detail={"words": [{"word": w} for w in words[:20]]})

    def rows_behind(self, inp: DriftInput, m: Measurement) -> list[int]:
        return [i for i, text in enumerate(inp.traffic.texts) if SHOUT.search(text)]

    def tables(self, detail: dict[str, Any]) -> list[DetailTable]:
        return [DetailTable("Words in capitals", ("word",), detail.get("words", []))]
