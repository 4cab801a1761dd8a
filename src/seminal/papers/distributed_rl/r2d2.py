"""R2D2: Recurrent experience replay in distributed reinforcement learning — Kapturowski, Ostrovski, Quan, Munos &
Dabney, ICLR 2019 (openreview r1lyTjAqYX).

Ape-X's distributed prioritized replay with an LSTM Q-network. Actors store fixed-length sequences (m steps,
overlapping by m/2, never crossing an episode end) together with the recurrent state the actor had at the start of
each. Replaying a sequence from a zero state, or from the stored state, gives the learner a state that differs from
the one its current network would have: "representational drift and recurrent state staleness" (§3). R2D2's fix is
the stored state plus a burn-in: the first steps of each sequence only unroll the network (no gradient), and the
loss runs on the rest. Targets are n-step double-Q with the invertible value rescaling h of Pohlen et al. (2018),
and sequences are prioritized by a mix of the max and the mean of their absolute TD errors.

Equation map (§2, §3, Table 2):
  §2   h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x, and its closed-form inverse             -> `h`, `h_inv`
  §2   y_t = h(sum_{k<n} gamma^k r_{t+k} + gamma^n h^-1(Q^-(s_{t+n}, argmax_a Q(s_{t+n}, a))))  -> `n_step_targets`
  §2   p = eta max_i |delta_i| + (1 - eta) mean_i |delta_i| (eta = 0.9)                    -> `sequence_priority`
  §2   Ape-X's actor epsilons eps_i = 0.4^(1 + 7 i / (N - 1))                              -> `actor_epsilons`
  §2   P(i) ~ p_i^alpha, w_i = (N P(i))^-beta (alpha 0.9, beta 0.6)                        -> `SequenceReplay`
  §3   stored state, zero state, burn-in                                                  -> `r2d2_loss` (stored, burn)
  §3   Delta Q = ||q(s^_t) - q(s_t)||_2 / |max_j q(s_t)_j|                     -> `q_discrepancy`, `measure_dq`
  §2   sequences of m steps, adjacent ones overlapping by m/2, stored state at each start   -> `R2D2Actor`
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.config import NonNegInt, PosFloat, PosInt, Prob
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.rl import env_state, make_env, require_discrete, set_env_state
from seminal.core.run import Run
from seminal.papers.distributed_rl import ape_x
from seminal.papers.distributed_rl._actors import make_actors, ray_session
from seminal.papers.rl.prioritized_replay import SumTree, importance_weights

# arm -> (recurrent, stored state, burn-in): §3's four replay strategies and a feed-forward DQN on the same inputs
ARMS = {"r2d2": (True, True, True), "stored": (True, True, False), "zero_burnin": (True, False, True),
        "zero": (True, False, False), "ff": (False, False, False)}


@dataclass(frozen=True)
class Config:
    env_id: str = "CartPole-v1"
    """Environment id (discrete actions, flat observations)."""
    hide_obs: tuple[int, ...] = (1, 3)
    """Observation indices removed (CartPole's two velocities: a task that needs memory; empty: none)."""
    mode: Literal["local", "ray"] = "ray"
    """local: actors stepped in lockstep in this process (deterministic); ray: each a Ray actor (asynchronous)."""
    ray_address: str | None = None
    """Ray cluster to join (e.g. auto); none: start a local Ray with n_actors CPUs."""
    n_actors: PosInt = 2
    """Actors (each one process in ray mode)."""
    envs_per_actor: PosInt = 4
    """Environments each actor steps together, each with its own epsilon."""
    unroll_length: PosInt = 25
    """Steps of every env per actor call (one Ray message)."""
    arms: tuple[str, ...] = ("r2d2", "zero", "ff")
    """Arms trained in turn on the same seed: r2d2 (stored state + burn-in), stored, zero_burnin, zero, ff."""
    total_steps: PosInt = 25_000
    """Environment steps of each arm, over all actors."""
    learning_starts: PosInt = 2_000
    """Env steps collected before the first update."""
    update_every: PosInt = 12
    """Env steps per learner update (the replay ratio): updates = (steps - learning_starts) // update_every."""
    burn_in: NonNegInt = 10
    """Burn-in steps at the start of each sequence (the paper's 40 on Atari)."""
    learn_length: PosInt = 20
    """Steps of each sequence after the burn-in that carry the loss (the paper's 40: m = 80)."""
    period: PosInt = 15
    """A new sequence starts every this many steps (the paper's m/2 = 40: adjacent sequences overlap by half)."""
    n_step: PosInt = 5
    """n of the n-step targets (the paper's 5)."""
    gamma: Prob = 0.99
    """Discount gamma (the paper's 0.997)."""
    rescale_eps: PosFloat = 1e-3
    """eps of the value rescaling h (the paper's 1e-3)."""
    eta: Prob = 0.9
    """Priority mix eta max + (1 - eta) mean of |delta| over a sequence (the paper's 0.9)."""
    alpha: Prob = 0.9
    """Priority exponent (the paper's 0.9)."""
    beta: Prob = 0.6
    """Importance-sampling exponent, fixed (the paper's 0.6)."""
    eps_base: Prob = 0.4
    """Ape-X epsilons: eps_i = eps_base^(1 + eps_alpha i / (N - 1)) over the N = n_actors x envs_per_actor envs."""
    eps_alpha: float = 7.0
    """The exponent's range of Ape-X's epsilons (the paper's 7)."""
    capacity: PosInt = 2_000
    """Replay capacity in sequences."""
    batch_size: PosInt = 32
    """Sequences per learner batch (the paper's 64)."""
    lr: PosFloat = 2e-3
    """Adam learning rate (the paper's 1e-4)."""
    adam_eps: PosFloat = 1e-5
    """Adam's epsilon (the paper's 1e-3)."""
    max_grad_norm: float = 40.0
    """Clip the gradient norm to this (0: off)."""
    target_update: PosInt = 250
    """Learner updates between target-network copies (the paper's 2500)."""
    sync_every: PosInt = 10
    """Learner updates between weight broadcasts to the actors."""
    torso: PosInt = 64
    """Width of the ReLU layer before the LSTM."""
    lstm: PosInt = 32
    """LSTM hidden size (the paper's 512); the ff arm has a ReLU layer of this width instead."""
    dueling: bool = True
    """Dueling head (the paper's)."""
    probe_every: PosInt = 16
    """Every this many-th sequence of an actor keeps its episode prefix, to measure Delta Q on (§3)."""
    eval_every: NonNegInt = 5_000
    """Greedy evaluation every this many env steps (0: only at the end)."""
    eval_episodes: PosInt = 10
    """Episodes per evaluation (seeds 10000, 10001, ...)."""
    checkpoint_every: PosInt = 500
    """Checkpoint every this many learner updates (between unrolls), and whenever run.due()."""

    @property
    def seq_len(self) -> int:
        return self.burn_in + self.learn_length

    def validate(self) -> None:
        if not self.arms or any(a not in ARMS for a in self.arms) or len(set(self.arms)) != len(self.arms):
            raise SeminalError(f"arms must be distinct among {', '.join(ARMS)}, not {','.join(self.arms)}")
        if self.period > self.seq_len:
            raise SeminalError(f"period={self.period} must be <= burn_in + learn_length = {self.seq_len}")
        if self.total_steps <= self.learning_starts:
            raise SeminalError("total_steps must exceed learning_starts")


PRESETS = {
    # Velocity-free CartPole, ray mode, 2 actors x 4 envs, sequences of 10 + 20 overlapping by 15, three arms.
    "quick": Config(),
    # The paper's Atari values where they apply (m = 80, burn-in 40, overlap 40, gamma 0.997, lr 1e-4, batch 64,
    # LSTM 512, target every 2500 updates), on LunarLander with its velocities hidden; never run.
    "full": Config(env_id="LunarLander-v3", hide_obs=(2, 3, 5), n_actors=64, envs_per_actor=4, unroll_length=100,
                   arms=("r2d2", "stored", "zero_burnin", "zero", "ff"), total_steps=20_000_000,
                   learning_starts=50_000, update_every=16, burn_in=40, learn_length=40, period=40, gamma=0.997,
                   capacity=100_000, batch_size=64, lr=1e-4, adam_eps=1e-3, target_update=2500,
                   sync_every=100, torso=256,
                   lstm=512, probe_every=64, eval_every=500_000, checkpoint_every=5000),
}

_GYM = "gymnasium CartPole-v1 reward_threshold (475)"
_FIG1 = ("§3, Fig. 1: stored state + burn-in gives the lowest Q-value discrepancy and the best scores; zero state "
         "the worst")
CLAIMS = {
    "quick": [
        Claim("R2D2 solves CartPole without velocities: greedy return >= 475 after 25k env steps", "r2d2/return",
              ">=", 475.0, "475 = solved", _GYM, bar="peer"),
        Claim("a feed-forward DQN on the same observations (same replay, targets, budget) does not: greedy return "
              "< 475 on every seed", "ff/return", "<", 475.0, "the task needs memory", _GYM, aggregate="all",
              bar="sanity"),
        Claim("stored state + burn-in has a lower Q-value discrepancy than zero-state replay (paired)",
              "r2d2_minus_zero/dq", "<", 0.0, "lower Delta Q", _FIG1, bar="sanity", paired=("r2d2/dq", "zero/dq")),
        Claim("stored state + burn-in learns faster than zero-state replay: higher mean greedy return over the run",
              "r2d2_minus_zero/auc", ">", 0.0, "higher return", _FIG1, bar="sanity",
              paired=("r2d2/auc", "zero/auc")),
    ],
    "full": [Claim("R2D2 solves LunarLander without velocities (greedy return >= 200)", "r2d2/return", ">=", 200.0,
                   "200 = solved", "gymnasium LunarLander-v3 reward_threshold", bar="peer")],
}


# ---- the paper's math ----------------------------------------------------------------------------------------
def h(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Value rescaling h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x (§2; Pohlen et al. 2018)."""
    return torch.sign(x) * (torch.sqrt(x.abs() + 1.0) - 1.0) + eps * x


def h_inv(x: torch.Tensor, eps: float) -> torch.Tensor:
    """h^-1(x) = sign(x) (((sqrt(1 + 4 eps (|x| + 1 + eps)) - 1) / (2 eps))^2 - 1), exactly (Pohlen et al. A.2)."""
    return torch.sign(x) * (((torch.sqrt(1.0 + 4.0 * eps * (x.abs() + 1.0 + eps)) - 1.0) / (2.0 * eps)) ** 2 - 1.0)


def n_step_targets(rewards: torch.Tensor, q_online: torch.Tensor, q_target: torch.Tensor, lengths: torch.Tensor,
                   terminated: torch.Tensor, gamma: float, n: int, eps: float) -> torch.Tensor:
    """Rescaled n-step double-Q targets y_t (T, B). rewards (T, B); q_* (T + 1, B, A) on obs 0..T (obs T: the one after
    the last transition); lengths (B,): valid transitions; terminated (B,): the last valid one ends the episode.
    Near a sequence's (or a truncated episode's) end the window shrinks to the K_t = min(n, length - t) steps left
    and bootstraps from obs t + K_t; after a terminal step nothing is bootstrapped."""
    T, B = rewards.shape
    t = torch.arange(T)[:, None]  # (T, 1)
    K = torch.clamp(torch.clamp(lengths[None] - t, max=n), min=0)  # (T, B)
    ret = torch.zeros(T, B, dtype=rewards.dtype)
    for k in range(n):
        idx = torch.clamp(t + k, max=T - 1).expand(T, B)
        ret = ret + torch.where(k < K, gamma**k * rewards.gather(0, idx), 0.0)  # sum_{k < K} gamma^k r_{t+k}
    boot = (t + K).unsqueeze(-1)  # (T, B, 1): s_{t+K}
    a_star = q_online.gather(0, boot.expand(T, B, q_online.shape[-1])).argmax(-1, keepdim=True)  # argmax with theta
    value = q_target.gather(0, boot.expand(T, B, q_target.shape[-1])).gather(-1, a_star).squeeze(-1)  # ... by theta^-
    ends = terminated[None] & (t + K == lengths[None])  # the window reaches a terminal step
    return h(ret + gamma ** K.to(rewards.dtype) * (~ends) * h_inv(value, eps), eps)  # §2


def sequence_priority(abs_td: torch.Tensor, mask: torch.Tensor, eta: float) -> torch.Tensor:
    """p = eta max_t |delta_t| + (1 - eta) mean_t |delta_t| over each sequence's valid steps (§2); (T, B) -> (B,)."""
    count = mask.sum(0)
    mean = (abs_td * mask).sum(0) / count.clamp(min=1)
    mx = (abs_td * mask).max(0).values
    return torch.where(count > 0, eta * mx + (1 - eta) * mean, torch.zeros_like(mean))


def actor_epsilons(index: int, envs: int, n_actors: int, base: float, alpha: float) -> np.ndarray:
    """Ape-X's eps_k = base^(1 + alpha k / (N - 1)) for env k = index x envs + j of N = n_actors x envs (§2)."""
    return ape_x.actor_epsilons(n_actors * envs, base, alpha)[index * envs:(index + 1) * envs]  # paper 17's §4.1


def q_discrepancy(q_hat: torch.Tensor, q_true: torch.Tensor) -> torch.Tensor:
    """Delta Q = ||q(s^_t) - q(s_t)||_2 / |max_j q(s_t)_j| (§3), over the last axis."""
    return (q_hat - q_true).norm(dim=-1) / q_true.max(-1).values.abs()


# ---- network and environment ---------------------------------------------------------------------------------
class R2D2Net(nn.Module):
    """obs (T, B, D), state ((B, H), (B, H)) -> Q (T, B, A), new state: ReLU torso, LSTM, dueling head. With
    recurrent=False the LSTM is a ReLU layer of the same width (a feed-forward DQN; the state passes through)."""

    def __init__(self, obs_dim: int, n_actions: int, cfg: Config, recurrent: bool, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.recurrent, self.dueling, self.hidden = recurrent, cfg.dueling, cfg.lstm
        self.torso = nn.Linear(obs_dim, cfg.torso)
        self.core = nn.LSTM(cfg.torso, cfg.lstm) if recurrent else nn.Linear(cfg.torso, cfg.lstm)
        self.adv = nn.Linear(cfg.lstm, n_actions)
        self.val = nn.Linear(cfg.lstm, 1)
        for p in self.parameters():  # PyTorch's default ranges, from the seed's generator
            bound = 1.0 / math.sqrt(p.shape[-1] if p.dim() > 1 else cfg.lstm)
            nn.init.uniform_(p, -bound, bound, generator=gen)

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(batch, self.hidden), torch.zeros(batch, self.hidden)

    def forward(self, obs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        x = torch.relu(self.torso(obs))  # (T, B, torso)
        if self.recurrent:
            x, (h_n, c_n) = self.core(x, (state[0][None], state[1][None]))  # (T, B, H)
            state = (h_n[0], c_n[0])
        else:
            x = torch.relu(self.core(x))
        a = self.adv(x)  # (T, B, A)
        q = self.val(x) + a - a.mean(-1, keepdim=True) if self.dueling else a
        return q, state


class HideObs:
    """An env whose observations lack the indices `hide` (CartPole without velocities: [x, theta])."""

    def __init__(self, env: Any, hide: tuple[int, ...]):
        self.env, self.action_space = env, env.action_space
        self.keep = [i for i in range(env.observation_space.shape[0]) if i not in hide]

    @property
    def unwrapped(self) -> Any:
        return self.env.unwrapped

    def reset(self, **kw: Any):
        obs, info = self.env.reset(**kw)
        return np.asarray(obs, np.float32)[self.keep], info

    def step(self, action: int):
        obs, r, term, trunc, info = self.env.step(action)
        return np.asarray(obs, np.float32)[self.keep], r, term, trunc, info

    def close(self) -> None:
        self.env.close()


def make_masked_env(cfg: Config) -> HideObs:
    env = make_env(cfg.env_id)
    require_discrete(env, cfg.env_id, "R2D2")
    return HideObs(env, cfg.hide_obs)


def env_dims(cfg: Config) -> tuple[int, int]:
    env = make_masked_env(cfg)
    dims = len(env.keep), int(env.action_space.n)
    env.close()
    return dims


def numpy_weights(net: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


# ---- actors: sequences with their stored state ---------------------------------------------------------------
class R2D2Actor:
    """`envs_per_actor` envs, each with its Ape-X epsilon, acted on with the LSTM's state carried across steps
    (zeroed at each episode start). Every `period` steps of an episode a sequence starts and the state at that
    step is stored with it; a sequence is emitted once its m = burn_in + learn_length steps are in, or when the
    episode ends (shorter, zero-padded). Every `probe_every`-th sequence also keeps its episode prefix (for Delta Q)."""

    def __init__(self, cfg: Config, recurrent: bool, seed: int, index: int):
        torch.set_num_threads(1)
        self.cfg, self.index = cfg, index
        obs_dim, n_actions = env_dims(cfg)
        self.net = R2D2Net(obs_dim, n_actions, cfg, recurrent, seed)
        self.envs = [make_masked_env(cfg) for _ in range(cfg.envs_per_actor)]
        E = cfg.envs_per_actor
        self.eps = actor_epsilons(index, E, cfg.n_actors, cfg.eps_base, cfg.eps_alpha)
        self.obs = np.stack([env.reset(seed=seed * 1000 + index * E + j)[0] for j, env in enumerate(self.envs)])
        self.rng = np.random.default_rng([seed, index, 18])
        self.core_state = self.net.initial_state(E)
        self.episodes = [self._new_episode(j) for j in range(E)]
        self.version, self.count, self.ep_counter = -1, 0, E

    def _new_episode(self, j: int, ep: int | None = None) -> dict[str, Any]:
        return {"obs": [self.obs[j].copy()], "actions": [], "rewards": [], "starts": {}, "id": j if ep is None else ep}

    def set_weights(self, weights: dict[str, np.ndarray], version: int) -> None:
        self.net.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in weights.items()})
        self.version = int(version)

    def _emit(self, ep: dict, s: int, out: list, terminated: bool = False) -> None:
        cfg, D = self.cfg, self.obs.shape[1]
        m, L = cfg.seq_len, len(ep["actions"])
        n = min(m, L - s)
        obs = np.zeros((m + 1, D), np.float32)
        obs[: n + 1] = np.stack(ep["obs"][s : s + n + 1])
        h0, c0 = ep["starts"].pop(s)
        seq = {"obs": obs, "actions": np.zeros(m, np.int64), "rewards": np.zeros(m, np.float32), "length": n,
               "terminated": bool(terminated and s + n == L), "h0": h0, "c0": c0, "start": s, "episode": ep["id"],
               "probe": self.count % cfg.probe_every == 0, "prefix": np.zeros((0, D), np.float32)}
        seq["actions"][:n], seq["rewards"][:n] = ep["actions"][s : s + n], ep["rewards"][s : s + n]
        if seq["probe"] and s:  # the episode before the sequence: to recompute the "true" state (§3)
            seq["prefix"] = np.stack(ep["obs"][:s])
        self.count += 1
        out.append(seq)

    def unroll(self, T: int, weights: dict | None = None, version: int | None = None) -> dict[str, Any]:
        if weights is not None:
            self.set_weights(weights, self.version if version is None else version)
        cfg, seqs, finished = self.cfg, [], []
        for _ in range(T):
            for j, ep in enumerate(self.episodes):  # §2: the state at the start of every sequence is stored
                if len(ep["actions"]) % cfg.period == 0:
                    h0, c0 = self.core_state
                    ep["starts"][len(ep["actions"])] = (h0[j].numpy().copy(), c0[j].numpy().copy())
            with torch.no_grad():
                q, self.core_state = self.net(torch.as_tensor(self.obs)[None], self.core_state)
            greedy = q[0].argmax(-1).numpy()
            explore = self.rng.random(len(self.envs)) < self.eps
            actions = np.where(explore, self.rng.integers(0, q.shape[-1], len(self.envs)), greedy)
            for j, (env, ep) in enumerate(zip(self.envs, self.episodes)):
                o, r, term, trunc, _ = env.step(int(actions[j]))
                ep["actions"].append(int(actions[j]))
                ep["rewards"].append(float(r))
                ep["obs"].append(np.asarray(o, np.float32))
                for s in [s for s in ep["starts"] if s + cfg.seq_len == len(ep["actions"])]:
                    self._emit(ep, s, seqs, term)
                if term or trunc:
                    for s in sorted(ep["starts"]):  # the episode's last sequences, shorter: no step is lost
                        self._emit(ep, s, seqs, term)
                    finished.append(float(sum(ep["rewards"])))
                    o, _ = env.reset()
                    self.core_state[0][j] = 0.0  # a new episode starts from the zero state
                    self.core_state[1][j] = 0.0
                    self.obs[j] = o
                    self.episodes[j] = self._new_episode(j, self.ep_counter)
                    self.ep_counter += 1
                else:
                    self.obs[j] = o
        return {"sequences": seqs, "episodes": finished, "version": self.version, "actor": self.index}

    def state(self) -> dict[str, Any]:
        eps = [{**ep, "obs": np.stack(ep["obs"]), "starts": [[s, h0, c0] for s, (h0, c0) in ep["starts"].items()]}
               for ep in self.episodes]
        return {"envs": [env_state(env) for env in self.envs], "obs": self.obs.copy(), "episodes": eps,
                "rng": json.dumps(self.rng.bit_generator.state), "weights": numpy_weights(self.net),
                "version": self.version, "count": self.count, "ep_counter": self.ep_counter,
                "h": self.core_state[0].numpy().copy(), "c": self.core_state[1].numpy().copy()}

    def load(self, state: dict[str, Any]) -> None:
        if not all(set_env_state(env, s) for env, s in zip(self.envs, state["envs"])):
            raise SeminalError("this env's state cannot be restored; restart the run instead of resuming it")
        self.obs = np.asarray(state["obs"], np.float32).copy()
        self.episodes = [{**ep, "obs": list(np.asarray(ep["obs"], np.float32)), "actions": list(ep["actions"]),
                          "rewards": list(ep["rewards"]), "starts": {int(s): (h0, c0) for s, h0, c0 in ep["starts"]}}
                         for ep in state["episodes"]]
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.set_weights(state["weights"], state["version"])
        self.count, self.ep_counter = int(state["count"]), int(state["ep_counter"])
        self.core_state = (torch.as_tensor(state["h"]).clone(), torch.as_tensor(state["c"]).clone())

    def close(self) -> None:
        for env in self.envs:
            env.close()


# ---- replay of sequences -------------------------------------------------------------------------------------
class SequenceReplay:
    """A ring of `capacity` sequences, sampled in proportion to p^alpha through a sum-tree (stratified); new ones
    enter with the largest priority seen. Keeps the prefixes of probe sequences."""

    KEYS = ("obs", "actions", "rewards", "length", "terminated", "h0", "c0", "start")

    def __init__(self, cfg: Config, obs_dim: int):
        C, m = cfg.capacity, cfg.seq_len
        self.cfg, self.tree, self.next, self.size, self.max_priority = cfg, SumTree(C), 0, 0, 1.0
        self.data = {"obs": np.zeros((C, m + 1, obs_dim), np.float32), "actions": np.zeros((C, m), np.int64),
                     "rewards": np.zeros((C, m), np.float32), "length": np.zeros(C, np.int64),
                     "terminated": np.zeros(C, bool), "h0": np.zeros((C, cfg.lstm), np.float32),
                     "c0": np.zeros((C, cfg.lstm), np.float32), "start": np.zeros(C, np.int64)}
        self.prefix: dict[int, np.ndarray] = {}

    def add(self, seq: dict[str, Any]) -> None:
        i = self.next
        for k in self.KEYS:
            self.data[k][i] = seq[k]
        self.prefix.pop(i, None)
        if seq["probe"]:
            self.prefix[i] = np.array(seq["prefix"], np.float32)
        self.tree.update(np.array([i]), np.array([self.max_priority**self.cfg.alpha]))
        self.next, self.size = (i + 1) % self.cfg.capacity, min(self.size + 1, self.cfg.capacity)

    def sample(self, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices drawn from P(i) = p_i^alpha / sum_k p_k^alpha, and w_i = (N P(i))^-beta / max w (§2)."""
        total = self.tree.total
        mass = (np.arange(batch) + rng.random(batch)) * (total / batch)
        index = np.minimum(self.tree.find(np.minimum(mass, np.nextafter(total, 0))), self.size - 1)
        return index, importance_weights(self.tree.leaves[index] / total, self.size, self.cfg.beta)

    def update(self, index: np.ndarray, priority: np.ndarray) -> None:
        p = np.maximum(priority, 1e-6)
        self.max_priority = max(self.max_priority, float(p.max()))
        self.tree.update(index, p**self.cfg.alpha)

    def batch(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        """Time-major tensors: obs (m + 1, B, D), actions, rewards (m, B), length, terminated (B,), h0, c0 (B, H)."""
        b = {k: torch.as_tensor(self.data[k][index]) for k in self.KEYS}
        for k in ("obs", "actions", "rewards"):
            b[k] = b[k].transpose(0, 1)
        return b

    def state(self) -> dict[str, Any]:
        return {**{k: v.copy() for k, v in self.data.items()}, "leaves": self.tree.leaves.copy(), "next": self.next,
                "size": self.size, "max_priority": self.max_priority,
                "prefix": [[i, p] for i, p in self.prefix.items()]}

    def load(self, s: dict[str, Any]) -> None:
        for k in self.KEYS:
            self.data[k][:] = s[k]
        self.tree.load(s["leaves"])
        self.next, self.size, self.max_priority = int(s["next"]), int(s["size"]), float(s["max_priority"])
        self.prefix = {int(i): p for i, p in s["prefix"]}


# ---- the learner ---------------------------------------------------------------------------------------------
def r2d2_loss(online: R2D2Net, target: R2D2Net, b: dict[str, torch.Tensor], weights: torch.Tensor, cfg: Config,
              stored: bool, burn: bool):
    """§3: start from the stored state (or zeros) and, with burn-in, unroll the first burn_in steps only to set the
    state (no gradient flows through them, no loss on them), except in sequences that start an episode, whose zero
    start state is exact (deviation 2). Loss: the importance-weighted mean over sequences of 0.5 delta^2 averaged over
    each one's learning steps. Returns (loss, |delta| (m, B), mask (m, B))."""
    B = b["obs"].shape[1]
    state = (b["h0"], b["c0"]) if stored else online.initial_state(B)
    k = cfg.burn_in if burn and online.recurrent else 0
    burned = b["start"] > 0 if k else torch.zeros(B, dtype=torch.bool)  # (B,): sequences with a burn-in
    with torch.no_grad():
        q_t, _ = target(b["obs"], state)  # (m + 1, B, A)
    if k:
        q_burn, (h_b, c_b) = online(b["obs"][:k], state)
        keep = burned[:, None]
        state = (torch.where(keep, h_b.detach(), h_b), torch.where(keep, c_b.detach(), c_b))  # §3: burn-in, no grad
        q_rest, _ = online(b["obs"][k:], state)
        q = torch.cat([q_burn, q_rest])  # (m + 1, B, A)
    else:
        q, _ = online(b["obs"], state)
    y = n_step_targets(b["rewards"], q.detach(), q_t, b["length"], b["terminated"], cfg.gamma, cfg.n_step,
                       cfg.rescale_eps)
    q_sa = q[:-1].gather(-1, b["actions"][:, :, None]).squeeze(-1)  # (m, B)
    t = torch.arange(len(q_sa))[:, None]
    mask = ((t >= torch.where(burned, k, 0)[None]) & (t < b["length"][None])).float()
    td = y - q_sa
    per_seq = (0.5 * td.pow(2) * mask).sum(0) / mask.sum(0).clamp(min=1)
    return (weights * per_seq).mean(), td.detach().abs(), mask


def measure_dq(net: R2D2Net, replay: SequenceReplay, stored: bool, burn: bool, cfg: Config) -> tuple[float, float]:
    """§3's Delta Q at the first and last step of the learning part of the probe sequences in replay that do not start
    an episode (where every start state is exact): the Q from the replayed start (stored or zero, then burn-in)
    against the Q from the state of running the net over the whole episode prefix."""
    k = cfg.burn_in if burn else 0  # the learning part's first step
    idx = sorted(i for i in replay.prefix if replay.data["start"][i] > 0 and replay.data["length"][i] > k)
    if not idx or not net.recurrent:
        return math.nan, math.nan
    first, last = [], []
    with torch.no_grad():
        for i in idx:
            obs = torch.as_tensor(replay.data["obs"][i])[:, None]  # (m + 1, 1, D)
            true_state = net.initial_state(1)
            if len(replay.prefix[i]):
                _, true_state = net(torch.as_tensor(replay.prefix[i])[:, None], true_state)
            start = (torch.as_tensor(replay.data["h0"][i])[None], torch.as_tensor(replay.data["c0"][i])[None]) \
                if stored else net.initial_state(1)
            q_true, _ = net(obs, true_state)
            q_hat, _ = net(obs, start)
            n = int(replay.data["length"][i])
            dq = q_discrepancy(q_hat[:, 0], q_true[:, 0])
            first.append(float(dq[k]))
            last.append(float(dq[n - 1]))
    return float(np.mean(first)), float(np.mean(last))


def greedy_return(net: R2D2Net, cfg: Config) -> float:
    """Mean return of argmax_a Q over eval_episodes episodes (seeds 10000, ...), stepped together, state carried."""
    envs = [make_masked_env(cfg) for _ in range(cfg.eval_episodes)]
    obs = np.stack([env.reset(seed=10_000 + k)[0] for k, env in enumerate(envs)])
    state, alive, total = net.initial_state(len(envs)), np.ones(len(envs), bool), np.zeros(len(envs))
    with torch.no_grad():
        while alive.any():
            q, state = net(torch.as_tensor(obs)[None], state)
            for k in np.flatnonzero(alive):
                o, r, term, trunc, _ = envs[k].step(int(q[0, k].argmax()))
                obs[k], total[k], alive[k] = o, total[k] + r, not (term or trunc)
    for env in envs:
        env.close()
    return float(total.mean())


def train_arm(arm: str, cfg: Config, run: Run, state: dict | None, save) -> dict[str, Any]:
    recurrent, stored, burn = ARMS[arm]
    obs_dim, n_actions = env_dims(cfg)
    online = R2D2Net(obs_dim, n_actions, cfg, recurrent, run.seed)
    target = copy.deepcopy(online)
    opt = torch.optim.Adam(online.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    replay = SequenceReplay(cfg, obs_dim)
    rng = np.random.default_rng([run.seed, 18, list(ARMS).index(arm)])
    actors = make_actors(cfg.mode, cfg.n_actors, cfg, recurrent, run.seed, actor_cls=R2D2Actor)
    s: dict[str, Any] = {"steps": 0, "updates": 0, "saved": 0, "evals": [], "episodes": [], "lag": []}
    try:
        if state is None:
            actors.broadcast(numpy_weights(online), 0)
        else:
            online.load_state_dict(state["online"])
            target.load_state_dict(state["target"])
            opt.load_state_dict(state["opt"])
            replay.load(state["replay"])
            rng.bit_generator.state = json.loads(state["rng"])
            actors.load(state["actors"])
            s = {k: int(state[k]) if k in ("steps", "updates", "saved") else [list(x) for x in state[k]] for k in s}
        bar = run.progress(total=cfg.total_steps, initial=s["steps"], desc=f"r2d2 {arm}", unit="step")
        per_unroll = cfg.unroll_length * cfg.envs_per_actor
        while True:
            while s["updates"] < max(0, s["steps"] - cfg.learning_starts) // cfg.update_every:
                index, w = replay.sample(rng, cfg.batch_size)
                loss, abs_td, mask = r2d2_loss(online, target, replay.batch(index),
                                               torch.as_tensor(w, dtype=torch.float32), cfg, stored, burn)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm:
                    nn.utils.clip_grad_norm_(online.parameters(), cfg.max_grad_norm)
                opt.step()
                replay.update(index, sequence_priority(abs_td, mask, cfg.eta).numpy())  # §2: eta max + (1-eta) mean
                s["updates"] += 1
                u = s["updates"]
                if u % cfg.target_update == 0:
                    target.load_state_dict(online.state_dict())
                if u % cfg.sync_every == 0:
                    actors.broadcast(numpy_weights(online), u)
                if u % 100 == 0:
                    run.check_finite(loss.item(), s["steps"], what=f"{arm} loss", hint="lr")
                    recent = [r for _, r in s["episodes"][-20:]]
                    run.log({f"{arm}/loss": loss.item(), f"{arm}/train_return": float(np.mean(recent)) if recent
                             else 0.0, f"{arm}/policy_lag": s["lag"][-1][1]}, step=s["steps"])
            if s["steps"] >= cfg.total_steps:
                break
            if s["updates"] and (s["updates"] // cfg.checkpoint_every > s["saved"] or run.due()):
                s["saved"] = s["updates"] // cfg.checkpoint_every
                save({**s, "online": online.state_dict(), "target": target.state_dict(), "opt": opt.state_dict(),
                      "replay": replay.state(), "rng": json.dumps(rng.bit_generator.state), "actors": actors.state()})
            (out,) = actors.unrolls(1, cfg.unroll_length)
            for seq in out["sequences"]:
                replay.add(seq)
            s["steps"] += per_unroll
            s["episodes"] += [[s["steps"], r] for r in out["episodes"]]
            s["lag"].append([s["steps"], float(s["updates"] - max(out["version"], 0))])
            bar.update(per_unroll)
            if (cfg.eval_every and s["steps"] // cfg.eval_every > (s["steps"] - per_unroll) // cfg.eval_every) \
                    or s["steps"] >= cfg.total_steps:
                s["evals"].append([s["steps"], greedy_return(online, cfg)])
                run.log({f"{arm}/eval_return": s["evals"][-1][1]}, step=s["steps"])
                bar.set_postfix(eval=f"{s['evals'][-1][1]:.0f}", refresh=False)
        bar.close()
    finally:
        actors.close()
    dq_first, dq_last = measure_dq(online, replay, stored, burn, cfg)
    evals = [r for _, r in s["evals"]]
    return {"return": evals[-1], "auc": float(np.mean(evals)), "dq_first": dq_first, "dq_last": dq_last,
            "dq": (dq_first + dq_last) / 2, "evals": s["evals"], "updates": s["updates"],
            "lag": float(np.mean([x for _, x in s["lag"]]))}


def train(cfg: Config, run: Run) -> dict[str, float]:
    cfg.validate()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: intra-op threads only add synchronisation
    try:
        if cfg.mode == "local":
            return _train(cfg, run, {"startup_seconds": 0.0})
        with ray_session(cfg.n_actors, cfg.ray_address) as info:
            return _train(cfg, run, info)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: Config, run: Run, ray_info: dict[str, float]) -> dict[str, float]:
    """The arms in turn, same seed and budget; checkpoints between unrolls and after each arm."""
    state = run.restore() or {"done": {}, "arm": None}
    done = dict(state["done"])
    for arm in cfg.arms:
        if arm in done:
            continue

        def save(arm_state, arm=arm):
            run.checkpoint({"done": done, "arm": {"name": arm, **arm_state}})

        resume = state["arm"] if state["arm"] is not None and state["arm"]["name"] == arm else None
        done[arm] = train_arm(arm, cfg, run, resume, save)
        state["arm"] = None
        run.checkpoint({"done": done, "arm": None})
    metrics = {"train/ray_startup_seconds": ray_info["startup_seconds"], "train/seconds": run.elapsed}
    for arm, d in done.items():
        metrics |= {f"{arm}/return": d["return"], f"{arm}/auc": d["auc"], f"{arm}/policy_lag": d["lag"]}
        if ARMS[arm][0]:
            metrics |= {f"{arm}/dq": d["dq"], f"{arm}/dq_first": d["dq_first"], f"{arm}/dq_last": d["dq_last"]}
    if {"r2d2", "zero"} <= set(done):
        metrics["r2d2_minus_zero/dq"] = metrics["r2d2/dq"] - metrics["zero/dq"]
        metrics["r2d2_minus_zero/auc"] = metrics["r2d2/auc"] - metrics["zero/auc"]
    if {"r2d2", "ff"} <= set(done):
        metrics["r2d2_minus_ff/return"] = metrics["r2d2/return"] - metrics["ff/return"]
    run.log(metrics, step=cfg.total_steps)
    line_plot(run.plots_dir / "learning_curve.png",
              {arm: ([e[0] for e in d["evals"]], [e[1] for e in d["evals"]]) for arm, d in done.items()},
              xlabel="env steps", ylabel="greedy return", title=f"R2D2 on {cfg.env_id} without velocities",
              hline=475.0)
    return metrics
