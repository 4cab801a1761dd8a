"""A paper's central result, stated as data and checked against measured metrics.

Each paper module has `CLAIMS = {"quick": [Claim(...)], "full": [...]}`. The threshold comes from the
paper or a peer's published figure, fixed before running: never from what our code happened to get.
A claim also says what its pass over seeds rests on (`aggregate`, `k`), where its threshold comes from
(`bar`) and, for "A beats B", which two arms of the same seed it compares (`paired`).
"""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass
from typing import Literal

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
AGGREGATES = ("mean", "all", "k_of_n")
BARS = ("paper", "peer", "sanity")


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
    aggregate: Literal["mean", "all", "k_of_n"] = "mean"
    """What the pass over seeds rests on: the mean passes (`mean`), every seed passes (`all`), or at least
    `k` seeds pass (`k_of_n`). Every record also shows how many seeds passed."""
    k: int | None = None
    """For `k_of_n`: how many seeds must pass (default: a majority, n // 2 + 1)."""
    bar: Literal["paper", "peer", "sanity"] | None = None
    """Where the threshold comes from: the paper's own figure (`paper`), a peer's published figure (`peer`,
    e.g. the SB3 zoo), or a sanity bar (`sanity`: a direction such as `> 0`, or a floor no paper states)."""
    paired: tuple[str, str] | None = None
    """For "A beats B": the metric keys of arm A and arm B, both measured in the same run (same seed, same data).
    `metric` is then that seed's comparison of A with B; when `train` does not return it, it is A - B."""

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"claim '{self.name}': op must be one of {', '.join(_OPS)}, not {self.op!r}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"claim '{self.name}': aggregate must be one of {', '.join(AGGREGATES)}")
        if self.k is not None and (self.aggregate != "k_of_n" or self.k < 1):
            raise ValueError(f"claim '{self.name}': k (>= 1) goes with aggregate='k_of_n' only")
        if self.bar is not None and self.bar not in BARS:
            raise ValueError(f"claim '{self.name}': bar must be one of {', '.join(BARS)}")
        if self.paired is not None:
            if len(self.paired) != 2 or not all(isinstance(a, str) for a in self.paired):
                raise ValueError(f"claim '{self.name}': paired names two metric keys, (arm A, arm B)")
            object.__setattr__(self, "paired", tuple(self.paired))

    def as_record(self) -> dict:
        """The claim's fields as JSON would give them back (`paired` as a list)."""
        return asdict(self) | {"paired": list(self.paired) if self.paired else None}

    def check(self, value: float | None) -> bool:
        return value is not None and math.isfinite(value) and bool(_OPS[self.op](value, self.threshold))

    def value_of(self, metrics: dict[str, float]) -> float | None:
        """This claim's value in one run's metrics (A - B of the paired arms when the metric itself is absent)."""
        value = metrics.get(self.metric)
        if value is None and self.paired and all(isinstance(metrics.get(a), (int, float)) for a in self.paired):
            value = metrics[self.paired[0]] - metrics[self.paired[1]]
        return None if value is None or isinstance(value, str) else float(value)

    def evaluate(self, metrics: dict[str, float]) -> dict:
        """The summary.json record of this claim for one run."""
        value = self.value_of(metrics)
        record = self.as_record()
        record.update(value=value, passed=self.check(value))
        if self.paired:
            record["arms"] = {a: _num(metrics.get(a)) for a in self.paired}
        return record

    def needed(self, n: int) -> int | None:
        """Seeds that must pass: n for `all`, k (or a majority) for `k_of_n`, None when the mean decides."""
        if self.aggregate == "all":
            return n
        if self.aggregate == "k_of_n":
            return self.k if self.k is not None else n // 2 + 1
        return None

    def evaluate_seeds(self, values: list[float | None], seeds: list[int] | None = None,
                       arms: dict[str, list] | None = None) -> dict:
        """The results/<slug>.json record of this claim over seeds (`seeds[i]` gave `values[i]`)."""
        finite = [v for v in values if v is not None and math.isfinite(v)]
        mean = sum(finite) / len(finite) if finite else float("nan")
        std = (sum((v - mean) ** 2 for v in finite) / len(finite)) ** 0.5 if finite else float("nan")
        n, k_passed = len(values), sum(self.check(v) for v in values)
        need = self.needed(n)
        if self.aggregate == "mean":
            passed = len(finite) == n and self.check(mean)  # a diverged seed fails a claim on the mean
        else:
            passed = k_passed >= need
        record = self.as_record()
        record.update(values=values, mean=mean, std=std, n=n, seeds_passed=k_passed, seeds_needed=need,
                      mean_passes=self.check(mean), rests_on=rests_on(record | {"n": n}), passed=bool(passed))
        if seeds is not None:
            record["seeds"] = list(seeds)
        if arms:
            record["arms"] = arms
        return record


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) else None


def rests_on(c: dict) -> str:
    """What a claim record's pass rests on, in words: `mean`, `all 3 seeds`, `2 of 3 seeds`."""
    n = c.get("n", len(c.get("values", [])))
    seeds = "seed" if n == 1 else "seeds"
    agg = c.get("aggregate", "mean")
    if agg == "all":
        return f"all {n} {seeds}"
    if agg == "k_of_n":
        k = c.get("k") or n // 2 + 1
        return f"{k} of {n} {seeds}"
    return f"mean of {n} {seeds}"


def on_seeds(rule: str) -> str:
    """`rests_on`'s words after "need X >= t": "on the mean of 3 seeds", "on all 3 seeds", "on 2 of 3 seeds"."""
    return f"on the {rule}" if rule.startswith("mean") else f"on {rule}"


def seeds_passed(c: dict) -> int:
    """How many seeds passed (computed from the values for records written before it was stored)."""
    if "seeds_passed" in c:
        return int(c["seeds_passed"])
    op, t = _OPS[c["op"]], c["threshold"]
    return sum(v is not None and math.isfinite(v) and bool(op(v, t)) for v in c.get("values", []))
