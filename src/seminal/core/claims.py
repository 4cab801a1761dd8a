"""A paper's central result, stated as data and checked against measured metrics.

Each paper module has `CLAIMS = {"quick": [Claim(...)], "full": [...]}`. The threshold comes from the
paper or a peer's published figure, fixed before running: never from what our code happened to get.
"""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass
from typing import Literal

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Claim:
    name: str
    """What is claimed, in words."""
    metric: str
    """The key in the dict `train` returns, e.g. `test/error`."""
    op: Literal[">=", "<=", ">", "<"]
    threshold: float
    paper_value: str
    """The paper's (or peer's) figure, as text: `0.95% test error`."""
    source: str
    """Where that figure comes from: `Table 2`, `Fig. 5`, `SB3 zoo`."""
    aggregate: Literal["mean", "all"] = "mean"
    """Over seeds: the mean must pass (`mean`), or every seed must (`all`)."""

    def check(self, value: float) -> bool:
        return value is not None and math.isfinite(value) and bool(_OPS[self.op](value, self.threshold))

    def evaluate(self, metrics: dict[str, float]) -> dict:
        """The summary.json record of this claim for one run."""
        value = metrics.get(self.metric)
        value = None if value is None else float(value)
        record = asdict(self)
        record.update(value=value, passed=self.check(value) if value is not None else False)
        return record

    def evaluate_seeds(self, values: list[float]) -> dict:
        """The results/<slug>.json record of this claim over seeds."""
        finite = [v for v in values if v is not None and math.isfinite(v)]
        mean = sum(finite) / len(finite) if finite else float("nan")
        std = (sum((v - mean) ** 2 for v in finite) / len(finite)) ** 0.5 if finite else float("nan")
        if self.aggregate == "all":
            passed = len(finite) == len(values) and all(self.check(v) for v in values)
        else:
            passed = len(finite) == len(values) and self.check(mean)
        record = asdict(self)
        record.update(values=values, mean=mean, std=std, seeds_passed=sum(self.check(v) for v in finite),
                      passed=passed)
        return record
