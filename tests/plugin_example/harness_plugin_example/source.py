"""A data source: sums to answer, made from a seed (`data: {sums: {n: 20, seed: 1}}`), as a team's own store would
hand rows over. The settings chosen and a digest of the rows identify the content in run.json."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from harness.schema import Settings
from harness.sources import DataSource, Table, register


class SumsSpec(Settings):
    n: int = Field(20, gt=0)
    seed: int = 0


@register
class Sums(DataSource):
    kind = "sums"
    summary = "`sums`"

    sums: SumsSpec

    def tables(self, task_file: Path) -> list[Table]:
        rng = np.random.default_rng(self.sums.seed)
        a, b = rng.integers(1, 50, self.sums.n), rng.integers(1, 50, self.sums.n)
        frame = pd.DataFrame({"question": [f"What is {x} plus {y}?" for x, y in zip(a, b, strict=True)],
                              "answer": [str(x + y) for x, y in zip(a, b, strict=True)]})
        digest = hashlib.sha256(frame.to_json().encode()).hexdigest()
        return [Table("test", frame, "data.sums", f"sums:n={self.sums.n},seed={self.sums.seed}", digest)]
