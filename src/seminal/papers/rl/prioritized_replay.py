"""Prioritized Experience Replay — Schaul, Quan, Antonoglou & Silver, ICLR 2016, arXiv:1511.05952.

DQN replays transitions uniformly. Schaul et al. replay more often the transitions the agent can learn
most from, measured by the magnitude of their TD error |delta|. The proportional variant gives transition
i the priority p_i = |delta_i| + eps and samples it with probability P(i) = p_i^alpha / sum_k p_k^alpha;
the bias this brings into the expected update is corrected with importance-sampling weights
w_i = (N P(i))^-beta, normalised by their maximum, with beta annealed to 1 by the end of training. A
sum-tree makes sampling and priority updates O(log N). New transitions enter with the largest priority
seen so far, so each is replayed at least once.

This module holds the paper's data structure and math; the DQN loop is entry 7's (`seminal.papers.rl.dqn`),
which takes a sampler with `add / sample / update`. `train` runs the paper's ablation at CartPole scale:
the same DQN with uniform replay and with prioritized replay, same seed, same budget, and plots both.

Equation map (numbers as in the paper):
  §3.3     p_i = |delta_i| + eps                              -> `priorities`
  Eq. (1)  P(i) = p_i^alpha / sum_k p_k^alpha                  -> `sampling_probabilities`, `SumTree`
  §3.4     w_i = (N P(i))^-beta / max_j w_j                    -> `importance_weights`
  §3.4     beta annealed linearly from beta_0 to 1             -> `beta_schedule`
  Alg. 1   new transitions get p_t = max_{i<t} p_i             -> `PrioritizedSampler.add`
  Alg. 1   stratified sampling: one draw per 1/k of the mass   -> `PrioritizedSampler.sample`
  Alg. 1   loss weighted by w_j, then p_j <- |delta_j|         -> `dqn.td_loss` weights, `.update`
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from seminal.core.claims import Claim
from seminal.core.config import NonNegFloat, PosFloat, Prob
from seminal.core.plots import line_plot
from seminal.core.run import Run
from seminal.papers.rl import dqn


@dataclass(frozen=True)
class Config(dqn.Config):
    alpha: NonNegFloat = 0.6
    """Prioritization exponent alpha of Eq. (1) (0: uniform); the paper's 0.6 for the proportional variant."""
    beta_start: Prob = 0.4
    """Initial importance-sampling exponent beta_0, annealed linearly to 1 (§3.4; the paper's 0.4)."""
    priority_eps: PosFloat = 1e-6
    """eps in p_i = |delta_i| + eps: keeps zero-error transitions sampleable (§3.3)."""
    per_lr_scale: PosFloat = 1.0
    """Learning rate of the prioritized run relative to the uniform one (the paper used 1/4 on Atari)."""


_DQN_QUICK = {f.name: getattr(dqn.PRESETS["quick"], f.name) for f in fields(dqn.Config)}
_DQN_FULL = {f.name: getattr(dqn.PRESETS["full"], f.name) for f in fields(dqn.Config)}
PRESETS = {
    # Entry 7's quick DQN, shortened to 10k steps an arm (two arms must fit one seed-run's budget; deviation 6):
    # epsilon anneals over the first 4k steps, evaluations every 1k steps trace the learning curve.
    "quick": Config(**{**_DQN_QUICK, "total_steps": 10_000, "exploration_steps": 4_000, "eval_every": 1_000,
                       "checkpoint_every": 5_000}),
    "full": Config(**{**_DQN_FULL, "double": True}, per_lr_scale=0.25),  # the paper's baseline: Double DQN
}

CLAIMS = {
    # The paper's claim at CartPole scale: the same DQN learns faster with prioritized replay than with
    # uniform replay. Both arms run in the same seed-run (same initial net, env seed, exploration generator
    # and budget); the metric is that seed's difference of the mean greedy return over all evaluations (the
    # area under the learning curve), and PER must win in a majority of seeds, as it won on most games
    # (41 of 49). Fixed before running; tuned on seeds >= 100 only, recorded on seeds 1000+.
    "quick": [
        Claim("Prioritized replay learns faster than uniform replay (same DQN, seed and budget): higher mean greedy"
              " return over the run, in most seeds", "per_minus_uniform/mean_eval_return", ">", 0.0,
              "prioritized beats uniform replay on 41 of 49 Atari games", "Schaul et al. 2016, abstract and Fig. 7",
              aggregate="k_of_n", bar="paper", paired=("per/eval/mean_return", "uniform/eval/mean_return")),
    ],
    "full": [
        Claim("Prioritized DQN on Pong matches or beats uniform DQN", "per/eval/return", ">=", 17.6,
              "Pong: DQN 18.9 +- 1.3 (Mnih 2015); prioritized (prop.) 20.0+", "Nature Ext. Data Table 2;"
              " Schaul et al. 2016 Table 6", aggregate="mean", bar="paper"),
    ],
}


# ---- the paper's math: pure functions -----------------------------------------------------------------
def priorities(td_error: np.ndarray, eps: float) -> np.ndarray:
    """p_i = |delta_i| + eps (§3.3, proportional prioritization)."""
    return np.abs(td_error) + eps  # §3.3


def sampling_probabilities(p: np.ndarray, alpha: float) -> np.ndarray:
    """P(i) = p_i^alpha / sum_k p_k^alpha (Eq. 1)."""
    scaled = p**alpha
    return scaled / scaled.sum()  # Eq. (1)


def importance_weights(prob: np.ndarray, n: int, beta: float) -> np.ndarray:
    """w_i = (N P(i))^-beta, divided by the largest w in the batch (§3.4; Algorithm 1, line 10)."""
    w = (n * prob) ** (-beta)  # §3.4
    return w / w.max()


def beta_schedule(progress: float, beta_start: float) -> float:
    """beta annealed linearly from beta_0 at the start to 1 at the end of training (§3.4)."""
    return beta_start + (1.0 - beta_start) * min(max(progress, 0.0), 1.0)


class SumTree:
    """A complete binary tree whose leaves hold p_i^alpha and whose inner nodes hold their children's sum.

    `nodes[1]` is the root (the total mass); leaf i lives at `nodes[size + i]`. `find(mass)` returns, for
    each mass in [0, total), the leaf whose prefix-sum interval contains it: the same answer as
    `np.searchsorted(np.cumsum(leaves), mass, side="right")`, in O(log N) per draw, vectorised over draws.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.size = 1 << max(0, (capacity - 1).bit_length())  # leaves, rounded up to a power of two
        self.nodes = np.zeros(2 * self.size)

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    @property
    def leaves(self) -> np.ndarray:
        return self.nodes[self.size : self.size + self.capacity]

    def update(self, index: np.ndarray, value: np.ndarray) -> None:
        """Set leaves `index` to `value`, then recompute every ancestor (duplicates: the last one wins)."""
        node = np.asarray(index, dtype=np.int64) + self.size
        self.nodes[node] = value
        while node[0] > 1:  # all leaves are at the same depth, so every entry reaches the root together
            node = np.unique(node // 2)
            self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1]

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Leaf indices i with cumsum[i-1] <= mass < cumsum[i], walking down from the root."""
        mass = np.array(mass, dtype=np.float64)
        node = np.ones(len(mass), dtype=np.int64)
        while node[0] < self.size:
            left = 2 * node
            go_right = mass >= self.nodes[left]
            mass = np.where(go_right, mass - self.nodes[left], mass)
            node = np.where(go_right, left + 1, left)
        return node - self.size

    def load(self, leaves: np.ndarray) -> None:
        """Rebuild the tree from its leaves (for resume)."""
        self.nodes[:] = 0
        self.nodes[self.size : self.size + len(leaves)] = leaves
        level = self.size // 2
        while level >= 1:  # each level of inner nodes, bottom up
            node = np.arange(level, 2 * level)
            self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1]
            level //= 2


class PrioritizedSampler:
    """The proportional prioritized replay of Algorithm 1, as a sampler for `dqn.learn`."""

    def __init__(self, capacity: int, alpha: float, beta_start: float, eps: float):
        self.tree = SumTree(capacity)
        self.alpha, self.beta_start, self.eps = alpha, beta_start, eps
        self.max_priority = 1.0
        self.beta = beta_start  # the exponent of the last draw (read by the tests)

    def add(self, index: int) -> None:
        """A new transition gets the largest priority seen so far (Algorithm 1, line 6)."""
        self.tree.update(np.array([index]), np.array([self.max_priority**self.alpha]))

    def sample(self, rng: np.random.Generator, batch: int, n: int, progress: float) -> tuple[np.ndarray, np.ndarray]:
        """Stratified draw from P(i) (Eq. 1) and the importance weights w_i (§3.4)."""
        total = self.tree.total
        mass = (np.arange(batch) + rng.random(batch)) * (total / batch)  # one draw in each 1/k of the mass
        index = np.minimum(self.tree.find(np.minimum(mass, np.nextafter(total, 0))), n - 1)
        prob = self.tree.leaves[index] / total  # Eq. (1)
        self.beta = beta_schedule(progress, self.beta_start)  # §3.4: annealed over the run
        return index, importance_weights(prob, n, self.beta)

    def update(self, index: np.ndarray, td_error: np.ndarray) -> None:
        """p_i <- |delta_i| + eps for the transitions just replayed (Algorithm 1, line 11)."""
        p = priorities(td_error, self.eps)  # §3.3
        self.max_priority = max(self.max_priority, float(p.max()))
        self.tree.update(index, p**self.alpha)

    def state(self) -> dict:
        return {"leaves": self.tree.leaves.copy(), "max_priority": self.max_priority}

    def load(self, state: dict) -> None:
        self.tree.load(state["leaves"])
        self.max_priority = float(state["max_priority"])


# ---- the experiment: uniform vs prioritized replay, same DQN, same seed --------------------------------
def train(cfg: Config, run: Run) -> dict[str, float]:
    state = run.restore() or {"phase": "uniform", "learner": None, "done": {}}
    done: dict[str, dict] = state["done"]
    for phase in ("uniform", "per"):
        if phase in done:
            continue
        resume = state["learner"] if state["phase"] == phase else None
        if phase == "uniform":
            phase_cfg, sampler = cfg, None
        else:
            phase_cfg = dqn.Config(**{f.name: getattr(cfg, f.name) for f in fields(dqn.Config)})
            phase_cfg = dqn.replace(phase_cfg, lr=cfg.lr * cfg.per_lr_scale)
            sampler = PrioritizedSampler(cfg.buffer_size, cfg.alpha, cfg.beta_start, cfg.priority_eps)

        def save(learner: dict, phase: str = phase) -> None:
            run.checkpoint({"phase": phase, "learner": learner, "done": done})

        done[phase] = dqn.learn(phase_cfg, run, sampler=sampler, prefix=f"{phase}/", state=resume, save=save)
        state = {"phase": "", "learner": None, "done": done}
        run.checkpoint(state)

    curves = {}
    for phase, label in (("uniform", "uniform replay"), ("per", "prioritized replay (proportional)")):
        curves[label] = run.history(f"{phase}/eval/return")
    line_plot(run.plots_dir / "uniform_vs_prioritized.png", curves, xlabel="env steps",
              ylabel=f"greedy return ({cfg.eval_episodes} episodes)", title=f"DQN on {cfg.env_id}",
              hline=dqn.solve_threshold(cfg.env_id))
    metrics = {k: v for phase in ("uniform", "per") for k, v in done[phase].items()}
    # Area under the eval curve (mean eval return over the run): the paper's "learning speed" at our scale.
    metrics["per_minus_uniform/mean_eval_return"] = (metrics["per/eval/mean_return"]
                                                     - metrics["uniform/eval/mean_return"])
    return metrics
