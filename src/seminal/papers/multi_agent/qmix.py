"""QMIX: Monotonic value function factorisation for deep multi-agent RL — Rashid, Samvelyan, Schroeder de Witt,
Farquhar, Foerster & Whiteson, ICML 2018, arXiv:1803.11485.

Cooperative agents act on their own observations, but are trained together on one team reward. QMIX learns a
utility Q_a(tau^a, u^a) per agent (a recurrent Q-network over the agent's history; all agents share it, with the
agent's id and last action among its inputs) and mixes the chosen utilities into a joint Q_tot(tau, u, s) with a
*monotonic* mixing network: its weights are made non-negative (an absolute value) by hypernetworks that read the
global state s. Monotonicity (dQ_tot/dQ_a >= 0) makes the joint greedy action the tuple of the agents' greedy
actions, so the max in the TD target is cheap and the learned agents can act alone. Two arms of the same code are
the paper's baselines: VDN (Q_tot = sum of Q_a, Sunehag et al. 2017) and IQL (each agent its own Q-learner on the
team reward, no mixer). Double-Q targets (the online agents pick the joint argmax, the target agents and target
mixer value it) are a switch, as in the authors' PyMARL code.

Experiments: the paper's two-step game (§5, Table 1; a matrix game written here, `TwoStepGame`): QMIX learns the
optimal joint policy (return 8), VDN's additive Q_tot cannot represent it and plays for 7; and the cooperative MPE
task simple_spread (3 agents, discrete actions, via `_marl.MultiAgentEnv`), QMIX against IQL at the same budget.

Equation map (arXiv v2):
  Eq. (4)  argmax_u Q_tot = (argmax_u1 Q_1, ..., argmax_un Q_n)              -> `greedy_actions`, `next_values`
  Eq. (5)  dQ_tot/dQ_a >= 0: non-negative mixing weights (abs of hypernets)   -> `QMixer.weights`
  §4, Fig. 2  Q_tot = w2^T elu(w1^T Q + b1) + b2(s), b2 a 2-layer hypernet    -> `monotonic_mix`, `QMixer`
  §4, Fig. 2c agent DRQN: (o^a_t, u^a_{t-1}, a) -> MLP -> GRU -> Q_a          -> `agent_inputs`, `RNNAgent`
  VDN     Q_tot = sum_a Q_a                                                   -> `mix_values`
  Eq. (6)  L = sum_b (y_tot - Q_tot(tau, u, s))^2, y_tot = r + gamma Q_tot^-(tau', u*, s')  -> `td_loss`
  App. B  episode replay (whole episodes, padding masked), target nets copied every C episodes -> `qmix_update`
  Not the paper's, switches of PyMARL/EPyMARL (off by default): standardised rewards -> `standardise`,
  `update_stats`; 2-layer w1/w2 hypernets -> `QMixer`; Polyak targets (`target_tau`) -> `qmix_update`
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seminal.core.claims import Claim
from seminal.core.config import NonNegInt, PosFloat, PosInt, Prob
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.run import Run
from seminal.papers.multi_agent._marl import (
    SCALE_TEXT,
    MultiAgentEnv,
    Scale,
    arms_in_turn,
    one_torch_thread,
    rollout_return,
)
from seminal.papers.rl.ddpg import polyak_update

ARMS = ("qmix", "vdn", "iql")


@dataclass(frozen=True)
class Config:
    task: Literal["twostep", "simple_spread"] = "twostep"
    """The game: the paper's two-step matrix game (§5) or the MPE task simple_spread (3 agents, 25 steps)."""
    arms: tuple[str, ...] = ("qmix", "vdn")
    """Learners trained one after the other on the same seed (paired): qmix, vdn (sum mixer), iql (no mixer)."""
    episodes: PosInt = 1500
    """Training episodes per arm (the two-step game: 2 steps each; simple_spread: 25)."""
    buffer_episodes: PosInt = 500
    """Replay memory of whole episodes (App. B: the last 500 in the two-step game, 5000 on SC2)."""
    batch_size: PosInt = 32
    """Episodes per minibatch (App. B: 32)."""
    train_every: PosInt = 1
    """Episodes collected between gradient steps (PyMARL: 1)."""
    lr: PosFloat = 5e-4
    """Learning rate (App. B: RMSprop, 5e-4)."""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """rmsprop (the paper's; alpha 0.99, eps 1e-5 as in PyMARL) or adam."""
    gamma: Prob = 0.99
    """Discount factor gamma (App. B: 0.99)."""
    target_update: PosInt = 100
    """C: episodes between target copies of agents and mixer (App. B: 100 in the two-step game, 200 on SC2)."""
    eps_start: Prob = 1.0
    """Initial exploration rate epsilon (the two-step game: 1 throughout, "the limit of full exploration")."""
    eps_end: Prob = 1.0
    """Final exploration rate epsilon (SC2: 0.05)."""
    eps_episodes: PosInt = 1
    """Episodes over which epsilon falls linearly from eps_start to eps_end."""
    hidden: PosInt = 64
    """Width of the agent network's MLP layer and GRU (App. B: 64)."""
    embed: PosInt = 8
    """Mixing network's hidden width (App. B: 8 in the two-step game, 32 on SC2)."""
    hypernet_layers: Literal[1, 2] = 1
    """Layers of the w1 and w2 hypernetworks (the paper: 1; PyMARL/EPyMARL option 2: Linear-ReLU-Linear)."""
    hypernet_embed: PosInt = 64
    """Hidden width of the 2-layer w1, w2 hypernetworks (PyMARL/EPyMARL hypernet_embed: 64); unused at 1 layer."""
    standardise_rewards: bool = False
    """Train on (r - mean) / std, a running mean and variance of the collected team rewards (EPyMARL's switch;
    reward_scale is then applied to the standardised reward); returns are reported unstandardised."""
    target_tau: Prob = 0.0
    """0: hard target copies every target_update episodes (App. B); > 0: Polyak averaging theta^- <- tau theta +
    (1 - tau) theta^- of agents and mixer after every gradient step (EPyMARL's target_update_interval_or_tau < 1)."""
    state_scale: PosFloat = 1.0
    """The mixer reads state x this (1: the raw state; simple_spread's 54 numbers reach |s| ~ 10)."""
    double_q: bool = True
    """Double-Q target: the online agents pick u*, the target agents and target mixer value it (PyMARL)."""
    last_action: bool = True
    """Feed the agent's previous action (one-hot) to its network (§4)."""
    agent_id: bool = True
    """Feed the agent's id (one-hot) to the shared network (parameter sharing)."""
    grad_clip: PosFloat = 10.0
    """Max global gradient norm (PyMARL: 10)."""
    reward_scale: PosFloat = 1.0
    """Training reward = team reward (sum over agents) x this; returns are reported unscaled."""
    scale: Scale = "team_sum"
    """Scale of the reported returns (`_marl`): team_sum or per_agent."""
    eval_every: PosInt = 250
    """Training episodes between greedy evaluations."""
    eval_episodes: PosInt = 1
    """Episodes per greedy evaluation (episode indices 10^6, 10^6 + 1, ...: the same for every arm)."""
    checkpoint_every: NonNegInt = 500
    """Training episodes between checkpoints (0: only when `run.due()` and at the end)."""

    def validate(self) -> None:
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms:
            raise SeminalError(f"arms={','.join(self.arms)}: choose from {', '.join(ARMS)}")
        if self.buffer_episodes < self.batch_size:
            raise SeminalError(f"buffer_episodes={self.buffer_episodes} must be >= batch_size={self.batch_size}")


PRESETS = {
    # The two-step game at 3/10 of App. B's 5000 episodes, batches of 128 episodes (App. B: 32): less minibatch
    # noise in the fitted Q_tot (notes, deviation 2; chosen on seeds 101-105).
    "quick": Config(batch_size=128),
    # App. B: 5000 episodes (10k steps), all three learners.
    "full": Config(episodes=5000, arms=("qmix", "vdn", "iql"), eval_every=500, checkpoint_every=1000),
    # simple_spread on a CPU budget: QMIX against IQL, the SC2 exploration schedule shortened, 32-unit mixer.
    "spread": Config(task="simple_spread", arms=("qmix", "iql"), episodes=2000, buffer_episodes=2000,
                     eps_end=0.05, eps_episodes=1000, embed=32, target_update=200, optimizer="adam",
                     reward_scale=0.1, eval_every=250, eval_episodes=20, checkpoint_every=500),
}

_TABLE1 = "§5, Table 1 (QMIX's learned Q_tot picks B then (B, B): return 8; VDN's picks A: 7)"
_TWOSTEP = [
    Claim("QMIX learns the two-step game's optimal joint policy: greedy return 8 on every seed",
          "twostep/qmix_return", ">=", 8.0, "8 (VDN: 7)", _TABLE1, aggregate="all", bar="paper"),
    Claim("QMIX's greedy return beats VDN's on the two-step game, paired seeds (paper: 8 vs 7)",
          "twostep/qmix_minus_vdn", ">", 0.0, "8 - 7 = 1", _TABLE1, aggregate="all", bar="paper",
          paired=("twostep/qmix_return", "twostep/vdn_return")),
]
CLAIMS = {
    "quick": _TWOSTEP,
    "full": _TWOSTEP,
    "spread": [
        Claim("QMIX beats independent Q-learning on simple_spread at the same budget (mean of paired gaps)",
              "spread/qmix_minus_iql", ">", 0.0, "QMIX above IQL on MPE (no figure at this budget)",
              "sanity: the direction of the paper's SC2 results (§7.1: QMIX above IQL on every map)",
              aggregate="mean", bar="sanity",
              paired=("spread/qmix_return", "spread/iql_return")),
        Claim("QMIX's greedy team return on simple_spread beats the uniform-random policy on every seed",
              "spread/qmix_over_random", ">", 0.0, "learning at all", "sanity", aggregate="all", bar="sanity",
              paired=("spread/qmix_return", "spread/random_return")),
    ],
}


# ---- the two-step game (§5) --------------------------------------------------------------------------------
class TwoStepGame:
    """The paper's two-step cooperative matrix game, with `MultiAgentEnv`'s interface (2 agents, 2 actions A=0,
    B=1; observations and state are the one-hot state, fully observable). In state 1 agent 1's action picks the
    next state, 2A (A) or 2B (B), agent 2's is ignored, reward 0. In 2A every joint action pays 7; in 2B the
    payoff is [[0, 1], [1, 8]]. The shared payoff is split evenly over the agents, so the team sum is the payoff.
    """

    PAYOFF = {1: np.array([[7.0, 7.0], [7.0, 7.0]]), 2: np.array([[0.0, 1.0], [1.0, 8.0]])}

    def __init__(self, seed: int = 0):
        self.n, self.obs_dims, self.act_dims, self.state_dim, self.max_cycles = 2, [3, 3], [2, 2], 3, 2
        self.reset(0)

    def reset(self, episode: int | None = None) -> list[np.ndarray]:
        self.s, self.t = 0, 0  # deterministic: no randomness to seed
        return [self.state(), self.state()]

    def state(self) -> np.ndarray:
        return np.eye(3, dtype=np.float32)[self.s] if self.s < 3 else np.zeros(3, np.float32)

    def step(self, actions) -> tuple[list[np.ndarray], np.ndarray, bool, bool]:
        u1, u2 = int(actions[0]), int(actions[1])
        r = 0.0 if self.s == 0 else float(self.PAYOFF[self.s][u1, u2])
        self.s, self.t = (1 + u1 if self.s == 0 else 3), self.t + 1  # 3: terminal
        return [self.state(), self.state()], np.full(2, r / 2), self.s == 3, self.s == 3


def make_env(cfg: Config, seed: int) -> TwoStepGame | MultiAgentEnv:
    return TwoStepGame(seed) if cfg.task == "twostep" else MultiAgentEnv(cfg.task, seed=seed)


# ---- the paper's math: pure functions ------------------------------------------------------------------------
def agent_inputs(obs: torch.Tensor, prev_actions: torch.Tensor, n_actions: int, last_action: bool,
                 agent_id: bool) -> torch.Tensor:
    """The agent network's input (§4): observation, one-hot previous action (zeros where prev_actions < 0, i.e.
    at t = 0) and one-hot agent id. obs (..., n, D), prev_actions (..., n) int -> (..., n, D [+ A] [+ n])."""
    parts = [obs]
    if last_action:
        parts.append(F.one_hot(prev_actions.clamp(min=0), n_actions).float() * (prev_actions >= 0).unsqueeze(-1))
    if agent_id:
        n = obs.shape[-2]
        parts.append(torch.eye(n).expand(*obs.shape[:-1], n))
    return torch.cat(parts, dim=-1)


def monotonic_mix(q: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                  b2: torch.Tensor) -> torch.Tensor:
    """The mixing network (§4, Fig. 2b): Q_tot = w2^T elu(w1^T q + b1) + b2, per sample.
    q (B, n), w1 (B, n, E), b1 (B, E), w2 (B, E), b2 (B,) -> (B,). Monotone in q when w1, w2 >= 0 (Eq. 5)."""
    hidden = F.elu(torch.einsum("bn,bne->be", q, w1) + b1)  # (B, E)
    return (hidden * w2).sum(-1) + b2


def mix_values(kind: str, q: torch.Tensor, state: torch.Tensor, mixer: nn.Module | None) -> torch.Tensor:
    """Joint values of the agents' utilities q (B, T, n): QMIX's mixer -> (B, T), VDN's sum -> (B, T), IQL's none:
    the utilities themselves (B, T, n), each agent its own Q-learner."""
    if kind == "qmix":
        b, t, n = q.shape
        return mixer(q.reshape(b * t, n), state.reshape(b * t, -1)).view(b, t)
    return q.sum(-1) if kind == "vdn" else q


def greedy_actions(q: torch.Tensor) -> torch.Tensor:
    """Eq. (4): under a monotonic mixer the joint argmax is each agent's argmax. q (..., n, A) -> (..., n)."""
    return q.argmax(-1)


def next_values(q_next_target: torch.Tensor, q_next_online: torch.Tensor, double_q: bool) -> torch.Tensor:
    """Each agent's utility of u* at t+1: u* picked by the online agents (double Q) or the target agents' own max.
    (B, T, n, A) -> (B, T, n); the target mixer then values the joint u* (Eq. 4 makes this its argmax)."""
    u_star = greedy_actions(q_next_online if double_q else q_next_target)
    return q_next_target.gather(-1, u_star.unsqueeze(-1)).squeeze(-1)


def standardise(reward: torch.Tensor, stats: tuple[float, float, float] | None) -> torch.Tensor:
    """(r - mean) / std with the running (count, mean, M2) of `update_stats` (EPyMARL's standardise_rewards);
    None: r unchanged."""
    if stats is None:
        return reward
    count, mean, m2 = stats
    return (reward - mean) / max(m2 / max(count, 1.0), 1e-8) ** 0.5


def update_stats(stats: tuple[float, float, float], x: np.ndarray) -> tuple[float, float, float]:
    """Merge the values x into a running (count, mean, M2 = sum of squared deviations) (Chan et al.'s update)."""
    count, mean, m2 = stats
    n, m = float(x.size), float(x.mean())
    total = count + n
    delta = m - mean
    return total, mean + delta * n / total, m2 + float(((x - m) ** 2).sum()) + delta**2 * count * n / total


def td_loss(q_taken: torch.Tensor, target_next: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
            mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. (6) averaged over the real (unpadded) steps: y = r + gamma (1 - terminated) Q^-(next), no gradient
    through y. q_taken, target_next (B, T) for a joint value, or (B, T, n) for IQL; reward, terminated, mask
    (B, T). Padding (mask 0) contributes nothing; a time-limit end (terminated 0) still bootstraps."""
    if q_taken.dim() == 3:
        reward, terminated, mask = (x.unsqueeze(-1).expand_as(q_taken) for x in (reward, terminated, mask))
    y = reward + gamma * (1.0 - terminated) * target_next  # Eq. (6)
    err = (q_taken - y.detach()) * mask
    return (err**2).sum() / mask.sum()


# ---- networks ----------------------------------------------------------------------------------------------
class RNNAgent(nn.Module):
    """The shared agent DRQN (Fig. 2c): inputs (R, D) and hidden (R, H) -> Q-values (R, A), new hidden (R, H)."""

    def __init__(self, in_dim: int, hidden: int, n_actions: int):
        super().__init__()
        self.fc1, self.rnn = nn.Linear(in_dim, hidden), nn.GRUCell(hidden, hidden)
        self.fc2 = nn.Linear(hidden, n_actions)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.rnn(F.relu(self.fc1(x)), h)
        return self.fc2(h), h

    def unroll(self, inputs: torch.Tensor) -> torch.Tensor:
        """Whole episodes from a zero hidden state: inputs (B, T, n, D) -> Q-values (B, T, n, A)."""
        b, t, n, _ = inputs.shape
        h = inputs.new_zeros(b * n, self.rnn.hidden_size)
        out = []
        for k in range(t):
            q, h = self(inputs[:, k].reshape(b * n, -1), h)
            out.append(q.view(b, n, -1))
        return torch.stack(out, dim=1)


class QMixer(nn.Module):
    """Hypernetworks s -> mixing weights and biases (§4): w1, w2 one linear layer each (or two, `hypernet_layers`)
    followed by abs (Eq. 5), b1 one linear layer, b2 (the state value) two layers with a ReLU.
    q (B, n), s (B, S) -> Q_tot (B,)."""

    def __init__(self, n_agents: int, state_dim: int, embed: int, hypernet_layers: int = 1, hypernet_embed: int = 64):
        super().__init__()
        self.n, self.embed = n_agents, embed

        def hyper(out: int) -> nn.Module:  # PyMARL's hypernet_layers option: 1 (the paper) or 2 (Linear-ReLU-Linear)
            if hypernet_layers == 1:
                return nn.Linear(state_dim, out)
            return nn.Sequential(nn.Linear(state_dim, hypernet_embed), nn.ReLU(), nn.Linear(hypernet_embed, out))

        self.hyper_w1, self.hyper_b1 = hyper(n_agents * embed), nn.Linear(state_dim, embed)
        self.hyper_w2 = hyper(embed)
        self.hyper_b2 = nn.Sequential(nn.Linear(state_dim, embed), nn.ReLU(), nn.Linear(embed, 1))

    def weights(self, s: torch.Tensor) -> tuple[torch.Tensor, ...]:
        w1 = self.hyper_w1(s).abs().view(-1, self.n, self.embed)  # Eq. (5): non-negative, (B, n, E)
        w2 = self.hyper_w2(s).abs()  # Eq. (5), (B, E)
        return w1, self.hyper_b1(s), w2, self.hyper_b2(s).squeeze(-1)  # biases unconstrained

    def forward(self, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return monotonic_mix(q, *self.weights(s))


# ---- episode replay and one update -------------------------------------------------------------------------
class EpisodeReplay:
    """The last `capacity` episodes, each padded to T steps: obs (T+1, n, D), state (T+1, S), actions (T, n),
    team reward, terminated and mask (T,): mask 1 on the episode's real steps, 0 on the padding."""

    KEYS = ("obs", "state", "actions", "reward", "terminated", "mask")

    def __init__(self, capacity: int, steps: int, n: int, obs_dim: int, state_dim: int):
        self.capacity, self.pos, self.n = capacity, 0, 0
        shapes = {"obs": (steps + 1, n, obs_dim), "state": (steps + 1, state_dim), "actions": (steps, n),
                  "reward": (steps,), "terminated": (steps,), "mask": (steps,)}
        self.data = {k: np.zeros((capacity, *s), np.int64 if k == "actions" else np.float32) for k, s in shapes.items()}

    def add(self, episode: dict) -> None:
        for k in self.KEYS:
            self.data[k][self.pos] = 0
            self.data[k][self.pos, : len(episode[k])] = episode[k]
        self.pos, self.n = (self.pos + 1) % self.capacity, min(self.n + 1, self.capacity)

    def batch(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v[index]) for k, v in self.data.items()}

    def state(self) -> dict:
        return {"pos": self.pos, "n": self.n, **{k: v[: self.n] for k, v in self.data.items()}}

    def load(self, state: dict) -> None:
        self.pos, self.n = int(state["pos"]), int(state["n"])
        for k in self.KEYS:
            self.data[k][: self.n] = state[k]


def qmix_update(kind: str, agent: RNNAgent, mixer: nn.Module | None, target_agent: RNNAgent,
                target_mixer: nn.Module | None, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
                cfg: Config, n_actions: int, reward_stats: tuple[float, float, float] | None = None) -> torch.Tensor:
    """One gradient step of Eq. (6) on a batch of whole episodes; returns the loss before the step. With
    `reward_stats` the rewards are standardised first; with cfg.target_tau > 0 the targets then move by Polyak."""
    prev = torch.cat([torch.full_like(batch["actions"][:, :1], -1), batch["actions"]], dim=1)  # (B, T+1, n)
    inputs = agent_inputs(batch["obs"], prev, n_actions, cfg.last_action, cfg.agent_id)  # (B, T+1, n, D)
    q_all = agent.unroll(inputs)  # (B, T+1, n, A)
    q_taken = q_all[:, :-1].gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)  # Q_a(tau_t, u_t), (B, T, n)
    with torch.no_grad():
        q_next = next_values(target_agent.unroll(inputs)[:, 1:], q_all[:, 1:], cfg.double_q)  # (B, T, n)
        state = batch["state"] * cfg.state_scale
        target_next = mix_values(kind, q_next, state[:, 1:], target_mixer)  # Q_tot^-(tau', u*, s')
    q_tot = mix_values(kind, q_taken, state[:, :-1], mixer)  # Q_tot(tau, u, s)
    reward = standardise(batch["reward"], reward_stats) * cfg.reward_scale
    loss = td_loss(q_tot, target_next, reward, batch["terminated"], batch["mask"], cfg.gamma)  # Eq. (6)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for g in opt.param_groups for p in g["params"]]
    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt.step()
    if cfg.target_tau > 0:
        online = list(agent.parameters()) + ([] if mixer is None else list(mixer.parameters()))
        target = list(target_agent.parameters()) + ([] if target_mixer is None else list(target_mixer.parameters()))
        polyak_update(target, online, cfg.target_tau)
    return loss.detach()


# ---- the loop ----------------------------------------------------------------------------------------------
def epsilon(episode: int, cfg: Config) -> float:
    frac = min(episode / cfg.eps_episodes, 1.0)
    return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)


class Actor:
    """Decentralised acting: each agent's GRU steps on its own observation and last action (Eq. 4 at test)."""

    def __init__(self, agent: RNNAgent, n: int, n_actions: int, cfg: Config):
        self.agent, self.n, self.n_actions, self.cfg = agent, n, n_actions, cfg
        self.reset()

    def reset(self) -> None:
        self.h, self.prev = torch.zeros(self.n, self.agent.rnn.hidden_size), torch.full((self.n,), -1)

    @torch.no_grad()
    def act(self, obs: list[np.ndarray], eps: float = 0.0, rng: np.random.Generator | None = None) -> list[int]:
        x = agent_inputs(torch.as_tensor(np.stack(obs)), self.prev, self.n_actions, self.cfg.last_action,
                         self.cfg.agent_id)
        q, self.h = self.agent(x, self.h)
        u = greedy_actions(q)
        if rng is not None:
            explore = rng.random(self.n) < eps
            u = torch.where(torch.as_tensor(explore), torch.as_tensor(rng.integers(self.n_actions, size=self.n)), u)
        self.prev = u
        return [int(a) for a in u]


def evaluate(env, actor: Actor, cfg: Config) -> float:
    """Greedy team return over `eval_episodes` fixed episodes, on `cfg.scale`."""
    def act(obs, state):
        if env.t == 0:
            actor.reset()
        return actor.act(obs)
    return rollout_return(env, act, cfg.eval_episodes, 10**6, cfg.scale)


def uniform_return(env, cfg: Config, episodes: int = 100) -> float:
    """A uniform-random policy's return, measured as the learners' (same episodes' seeds, same scale)."""
    rng = np.random.default_rng(0)
    return rollout_return(env, lambda obs, state: [int(rng.integers(d)) for d in env.act_dims], episodes, 10**6,
                          cfg.scale)


def train_arm(kind: str, cfg: Config, run: Run, prefix: str, state: dict | None, save) -> dict:
    """Train one learner; resume from `state` (its part of a checkpoint); `save(arm_state)` checkpoints."""
    env = make_env(cfg, run.seed)
    n, n_actions, steps = env.n, env.act_dims[0], env.max_cycles
    in_dim = env.obs_dims[0] + n_actions * cfg.last_action + n * cfg.agent_id
    with torch.random.fork_rng(devices=[]):  # every arm starts from the same agent network (paired)
        torch.manual_seed(run.seed)
        agent = RNNAgent(in_dim, cfg.hidden, n_actions)
        mixer = (QMixer(n, env.state_dim, cfg.embed, cfg.hypernet_layers, cfg.hypernet_embed) if kind == "qmix"
                 else None)
    target_agent, target_mixer = copy.deepcopy(agent), copy.deepcopy(mixer)
    params = list(agent.parameters()) + ([] if mixer is None else list(mixer.parameters()))
    opt = (torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.99, eps=1e-5) if cfg.optimizer == "rmsprop"
           else torch.optim.Adam(params, lr=cfg.lr))
    memory = EpisodeReplay(cfg.buffer_episodes, steps, n, env.obs_dims[0], env.state_dim)
    rng = np.random.default_rng([run.seed, 7])  # exploration and minibatch draws: the same stream for every arm
    nets = {"agent": agent, "target_agent": target_agent, "mixer": mixer, "target_mixer": target_mixer, "opt": opt}
    s = {"episode": 0, "steps": 0, "evals": [], "reward_stats": [0.0, 0.0, 0.0]}
    if state is not None:
        for k, net in nets.items():
            if net is not None:
                net.load_state_dict(state[k])
        memory.load(state["memory"])
        rng.bit_generator.state = json.loads(state["rng"])
        s = {"episode": int(state["episode"]), "steps": int(state["steps"]), "evals": [list(e) for e in state["evals"]],
             "reward_stats": [float(x) for x in state["reward_stats"]]}
    actor = Actor(agent, n, n_actions, cfg)
    for ep in run.progress(range(s["episode"], cfg.episodes), total=cfg.episodes, initial=s["episode"],
                           desc=f"qmix {prefix}{kind}", unit="episode"):
        eps = epsilon(ep, cfg)
        obs, done, t = env.reset(ep), False, 0
        actor.reset()
        rec = {"obs": [np.stack(obs)], "state": [env.state()], "actions": [], "reward": [], "terminated": []}
        while not done:
            u = actor.act(obs, eps, rng)
            obs, rew, done, terminal = env.step(u)  # the team reward: the sum over agents
            for k, v in zip(rec, (np.stack(obs), env.state(), u, float(rew.sum()), float(terminal))):
                rec[k].append(v)
            t += 1
        rec["mask"] = np.ones(t, np.float32)
        memory.add({k: np.asarray(v) for k, v in rec.items()})
        s["steps"] += t
        if cfg.standardise_rewards:
            s["reward_stats"] = list(update_stats(tuple(s["reward_stats"]), np.asarray(rec["reward"], np.float64)))
        if memory.n >= cfg.batch_size and (ep + 1) % cfg.train_every == 0:
            batch = memory.batch(rng.integers(0, memory.n, size=cfg.batch_size))
            loss = qmix_update(kind, agent, mixer, target_agent, target_mixer, opt, batch, cfg, n_actions,
                               tuple(s["reward_stats"]) if cfg.standardise_rewards else None)
            if (ep + 1) % 50 == 0:
                run.check_finite(loss.item(), ep + 1, hint="lr")
                run.log({f"{prefix}{kind}/loss": loss.item(), f"{prefix}{kind}/epsilon": eps}, step=ep + 1)
        if cfg.target_tau == 0 and (ep + 1) % cfg.target_update == 0:
            target_agent.load_state_dict(agent.state_dict())  # App. B: target nets copied every C episodes
            if mixer is not None:
                target_mixer.load_state_dict(mixer.state_dict())
        if (ep + 1) % cfg.eval_every == 0 or ep + 1 == cfg.episodes:
            ret = evaluate(env, actor, cfg)
            s["evals"].append([ep + 1, s["steps"], ret])
            run.log({f"{prefix}{kind}/return": ret, f"{prefix}{kind}/env_steps": s["steps"]}, step=ep + 1)
        s["episode"] = ep + 1
        if (cfg.checkpoint_every and (ep + 1) % cfg.checkpoint_every == 0) or run.due() or ep + 1 == cfg.episodes:
            save({**s, **{k: None if net is None else net.state_dict() for k, net in nets.items()},
                  "memory": memory.state(), "rng": json.dumps(rng.bit_generator.state)})
    out = {"return": float(s["evals"][-1][2]), "evals": s["evals"]}
    if cfg.task == "twostep":
        out["q_table"] = twostep_q_table(kind, agent, mixer, cfg)
    return out


@torch.no_grad()
def twostep_q_table(kind: str, agent: RNNAgent, mixer: nn.Module | None, cfg: Config) -> dict[str, float]:
    """The learned joint values of Table 1: Q_tot(state, u1, u2) for the three states (state 1 at t = 0;
    2A and 2B at t = 1, after agent 1 chose A or B and agent 2 chose A). IQL: the sum of the utilities."""
    out = {}
    for name, first in (("1", None), ("2A", 0), ("2B", 1)):
        obs = torch.eye(3)[[0] if first is None else [0, 1 + first]].unsqueeze(1).expand(-1, 2, 3).unsqueeze(0)
        prev = torch.tensor([[[-1, -1]] + ([] if first is None else [[first, 0]])])
        q = agent.unroll(agent_inputs(obs, prev, 2, cfg.last_action, cfg.agent_id))[0, -1]  # (n, A)
        for u1 in range(2):
            for u2 in range(2):
                qa = torch.stack([q[0, u1], q[1, u2]]).view(1, 1, 2)
                v = mix_values(kind, qa, obs[:, -1:, 0] * cfg.state_scale, mixer)
                out[f"{name}_{'AB'[u1]}{'AB'[u2]}"] = float(v.sum())
    return out


def train(cfg: Config, run: Run) -> dict[str, float]:
    cfg.validate()
    with one_torch_thread():
        return _train(cfg, run)


def _train(cfg: Config, run: Run) -> dict[str, float]:
    """The arms one after the other (a checkpoint holds the finished arms' results), then metrics and plot."""
    prefix = "twostep/" if cfg.task == "twostep" else "spread/"
    done = arms_in_turn(cfg.arms, run, lambda kind, resume, save: train_arm(kind, cfg, run, prefix, resume, save))
    env = make_env(cfg, run.seed)
    baseline = uniform_return(env, cfg)
    metrics = {f"{prefix}random_return": baseline}
    for kind in cfg.arms:
        metrics[f"{prefix}{kind}_return"] = done[kind]["return"]
        if "q_table" in done[kind]:
            metrics.update({f"{prefix}{kind}_q/{k}": v for k, v in done[kind]["q_table"].items()})
    for a, b in (("qmix", "vdn"), ("qmix", "iql"), ("vdn", "iql")):
        if a in done and b in done:
            metrics[f"{prefix}{a}_minus_{b}"] = done[a]["return"] - done[b]["return"]
    if "qmix" in done:
        metrics[f"{prefix}qmix_over_random"] = done["qmix"]["return"] - baseline
    line_plot(run.plots_dir / "greedy_return.png",
              {kind.upper(): ([e[0] for e in done[kind]["evals"]], [e[2] for e in done[kind]["evals"]])
               for kind in cfg.arms}, xlabel="training episodes", ylabel=f"greedy return ({SCALE_TEXT[cfg.scale]})",
              title=f"QMIX vs baselines on {cfg.task}", hline=baseline, hline_label="uniform-random policy")
    return metrics

