"""Asynchronous methods for deep reinforcement learning — Mnih, Badia, Mirza, Graves, Lillicrap, Harley,
Silver & Kavukcuoglu, ICML 2016 (arXiv:1602.01783); the synchronous variant, A2C.

Many actors run copies of the environment in parallel; their experience, decorrelated because each actor
is somewhere else in its episode, replaces DQN's replay memory. Each actor rolls its policy forward
t_max = 5 steps, then the advantage actor-critic gradient is taken: the policy's log-probability times
the n-step advantage R_t - V(s_t), plus a value regression, plus an entropy bonus that keeps the policy
from collapsing early. A3C applies the actors' gradients asynchronously (Hogwild); A2C, the variant most
codebases ship, waits for all N actors and takes one batched step: same estimator, deterministic, and on
one machine faster (one batched forward for all envs instead of N small ones).

Equation map (Mnih et al. 2016, §4 and Algorithm S3):
  R_t = sum_{i<k} gamma^i r_{t+i} + gamma^k V(s_{t+k})                 -> `gae.nstep_returns`
  A(s_t, a_t) = R_t - V(s_t)                                             -> `train`, `advantages`
  policy gradient  grad log pi(a_t|s_t) A_t  + beta grad H(pi(s_t))      -> `a2c_loss` (beta: ent_coef)
  value loss  (R_t - V(s_t))^2                                           -> `a2c_loss`
  RMSProp with shared statistics g = alpha g + (1 - alpha) dtheta^2       -> torch RMSprop (alpha=0.99)
  learning rate annealed linearly to 0 (§8, Optimization details)       -> `train`

The on-policy plumbing that A2C introduces and TRPO/PPO reuse lives here too: `make_vec_env` (N synchronous
envs, same-step autoreset so that truncated episodes keep their final observation), `ActorCritic` (64x64
tanh MLPs, separate or shared), `NumpyActor` (the same network in NumPy, for cheap per-step acting) and
`collect` (a (T, N) rollout with the true next-state values that GAE needs).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.rl import evaluate, gym, make_env, require_discrete
from seminal.core.run import Run
from seminal.papers.rl.gae import nstep_returns

EnvSource = str | Callable[[], Any]
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class Config:
    env_id: str = "CartPole-v1"
    """Environment id (discrete actions, flat observations), e.g. CartPole-v1, LunarLander-v3, Acrobot-v1."""
    total_steps: int = 200_000
    """Environment steps in total, over all actors."""
    n_envs: int = 8
    """Parallel actors N (the paper used 16 actor-learner threads)."""
    n_steps: int = 5
    """t_max: steps each actor takes between updates (n of the n-step return)."""
    gamma: float = 0.99
    """Discount gamma."""
    lr: float = 7e-4
    """Learning rate (RMSProp), annealed linearly to 0 when anneal_lr."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over training, as the paper did."""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """RMSProp (the paper's, alpha=0.99, eps=1e-5) or Adam (deviation)."""
    ent_coef: float = 0.01
    """beta: weight of the entropy bonus (the paper's 0.01)."""
    vf_coef: float = 0.5
    """Weight of the value loss in the shared loss."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm to this (0: no clipping)."""
    shared: bool = False
    """Share the hidden layers of actor and critic (the paper's Atari net did) or keep two MLPs."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden sizes of each tanh MLP."""
    eval_every: int = 20_000
    """Evaluate the deterministic (greedy) policy every this many env steps (0: only at the end)."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    checkpoint_every: int = 1000
    """Checkpoint every this many updates."""


PRESETS = {
    "quick": Config(),
    "full": Config(env_id="LunarLander-v3", total_steps=2_000_000, n_envs=16, gamma=0.995, ent_coef=0.01,
                   lr=7e-4, eval_every=100_000),
}

CLAIMS = {
    "quick": [Claim("A2C solves CartPole-v1 (greedy return >= 475) within 200k env steps", "eval/return", ">=",
                    475.0, "475 = CartPole-v1 reward_threshold; SB3 zoo A2C 500 at 500k steps",
                    "gymnasium CartPole-v1; rl-baselines3-zoo benchmark")],
    "full": [Claim("A2C solves LunarLander-v3 (return >= 200)", "eval/return", ">=", 200.0,
                   "200 = solved; SB3 zoo A2C ~150 (LunarLander-v2, 5M steps)", "rl-baselines3-zoo benchmark")],
}


# ---- on-policy plumbing shared with TRPO and PPO ------------------------------------------------------
def make_vec_env(env: EnvSource, n_envs: int, seed: int, algorithm: str, discrete_only: bool = False,
                 mode: Literal["sync", "async"] = "sync") -> Any:
    """N copies of `env` (an id or a factory) stepped together, autoresetting in the same step.

    SeminalError (one line) for an unknown id, a missing extra, non-vector observations, or an action
    space `algorithm` cannot handle.
    """
    gymnasium = gym()
    make = (lambda: make_env(env)) if isinstance(env, str) else env
    name = env if isinstance(env, str) else getattr(env, "__name__", "the env")
    probe = make()
    obs_space, act_space = probe.observation_space, probe.action_space
    probe.close()
    if type(obs_space).__name__ != "Box" or len(obs_space.shape) != 1:
        raise SeminalError(f"{algorithm} here needs flat vector (Box) observations; {name} has {obs_space}; "
                           "try CartPole-v1 or LunarLander-v3")
    if discrete_only:
        require_discrete(probe, name, algorithm)
    elif type(act_space).__name__ not in ("Discrete", "Box"):
        raise SeminalError(f"{algorithm} needs Discrete or Box actions; {name} has {act_space}")
    cls = gymnasium.vector.SyncVectorEnv if mode == "sync" else gymnasium.vector.AsyncVectorEnv
    envs = cls([make] * n_envs, autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
    envs.reset(seed=seed)
    return envs


def _layer(n_in: int, n_out: int, gain: float, gen: torch.Generator) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain, generator=gen)  # orthogonal init (baselines; Saxe et al.)
    nn.init.zeros_(layer.bias)
    return layer


def _body(sizes: list[int], gen: torch.Generator) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [_layer(n_in, n_out, math.sqrt(2), gen), nn.Tanh()]
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """pi(a|s) (categorical logits, or a Gaussian mean with a state-independent log std) and V(s)."""

    def __init__(self, obs_dim: int, action_space: Any, hidden: tuple[int, ...] = (64, 64), shared: bool = False,
                 seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.discrete = type(action_space).__name__ == "Discrete"
        n_out = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        self.pi_body = _body([obs_dim, *hidden], gen)
        self.v_body = self.pi_body if shared else _body([obs_dim, *hidden], gen)
        self.pi_head = _layer(hidden[-1], n_out, 0.01, gen)  # small last layer: near-uniform start
        self.v_head = _layer(hidden[-1], 1, 1.0, gen)
        self.log_std = None if self.discrete else nn.Parameter(torch.zeros(n_out))

    def dist(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        out = self.pi_head(self.pi_body(obs))  # (B, A)
        if self.discrete:
            return torch.distributions.Categorical(logits=out)
        return torch.distributions.Normal(out, self.log_std.exp())

    def log_prob_entropy(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) (B,) and entropy H(pi(.|s)) (B,); written out (the training hot path), equal to `dist`'s."""
        out = self.pi_head(self.pi_body(obs))  # (B, A)
        if self.discrete:
            logp_all = torch.log_softmax(out, dim=-1)
            logp = logp_all.gather(1, actions.long().unsqueeze(1)).squeeze(1)
            return logp, -(logp_all.exp() * logp_all).sum(-1)
        z = (actions - out) / self.log_std.exp()
        logp = (-0.5 * z.pow(2) - self.log_std - _HALF_LOG_2PI).sum(-1)
        return logp, (0.5 + _HALF_LOG_2PI + self.log_std).sum().expand(len(obs))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.v_head(self.v_body(obs)).squeeze(-1)  # (B,)

    def policy_parameters(self) -> list[nn.Parameter]:
        extra = [] if self.log_std is None else [self.log_std]
        return [*self.pi_body.parameters(), *self.pi_head.parameters(), *extra]


class NumpyActor:
    """The network's forward pass in NumPy, for acting: one (N, obs) batch per env step costs a few matmuls
    instead of torch's per-op overhead. `refresh()` after every update (copies only off the CPU)."""

    def __init__(self, model: ActorCritic, action_space: Any):
        self.model, self.discrete = model, model.discrete
        if not self.discrete:
            self.low, self.high = action_space.low, action_space.high
        self.refresh()

    def refresh(self) -> None:
        def layers(seq: nn.Module, head: nn.Linear) -> list[tuple[np.ndarray, np.ndarray]]:
            mods = [m for m in seq if isinstance(m, nn.Linear)] + [head]
            return [(m.weight.detach().cpu().numpy().T, m.bias.detach().cpu().numpy()) for m in mods]

        self.pi = layers(self.model.pi_body, self.model.pi_head)
        self.v = layers(self.model.v_body, self.model.v_head)
        self.log_std = None if self.discrete else self.model.log_std.detach().cpu().numpy()

    @staticmethod
    def _mlp(x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        for W, b in layers[:-1]:
            x = np.tanh(x @ W + b)
        W, b = layers[-1]
        return x @ W + b

    def value(self, obs: np.ndarray) -> np.ndarray:
        return self._mlp(obs, self.v)[:, 0]  # (N,)

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sampled actions (N,) or (N, A), their log-probabilities (N,), and V(obs) (N,)."""
        out = self._mlp(obs, self.pi)
        if self.discrete:
            z = out - out.max(axis=1, keepdims=True)
            logp_all = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            cdf = np.cumsum(np.exp(logp_all), axis=1)
            a = np.minimum((rng.random((len(obs), 1)) > cdf).sum(axis=1), out.shape[1] - 1)  # inverse CDF
            logp = logp_all[np.arange(len(obs)), a]
        else:
            eps = rng.standard_normal(out.shape).astype(np.float32)
            a = out + np.exp(self.log_std) * eps
            logp = (-0.5 * eps**2 - self.log_std - 0.5 * np.log(2 * np.pi)).sum(axis=1)
        return a, logp, self.value(obs)

    def env_action(self, a: np.ndarray) -> np.ndarray:
        return a if self.discrete else np.clip(a, self.low, self.high)

    def greedy(self, obs: np.ndarray) -> Any:
        """Deterministic action for one observation (argmax, or the Gaussian mean): for `evaluate`."""
        out = self._mlp(np.asarray(obs, dtype=np.float32)[None], self.pi)[0]
        return int(out.argmax()) if self.discrete else np.clip(out, self.low, self.high)


class Episodes:
    """Undiscounted returns of the training episodes as they finish, with the env step at which they did."""

    def __init__(self, n_envs: int):
        self.ret, self.steps, self.returns = np.zeros(n_envs), [], []

    def add(self, rewards: np.ndarray, dones: np.ndarray, step: int) -> None:
        self.ret += rewards
        for i in np.flatnonzero(dones):
            self.steps.append(step)
            self.returns.append(float(self.ret[i]))
            self.ret[i] = 0.0


def collect(envs: Any, actor: NumpyActor, obs: np.ndarray, n_steps: int, rng: np.random.Generator,
            episodes: Episodes, step: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Roll all envs forward n_steps. Returns (T, N) arrays and the next observation.

    next_values[t] is V of the true next state: V(s_{t+1}) inside an episode, V(final observation) where
    the episode was truncated, 0 where it terminated. GAE and n-step returns take it from here.
    """
    T, N = n_steps, len(obs)
    buf = {"obs": np.zeros((T, *obs.shape), np.float32), "logp": np.zeros((T, N), np.float32),
           "values": np.zeros((T, N), np.float32), "rewards": np.zeros((T, N), np.float32),
           "terminated": np.zeros((T, N), bool), "dones": np.zeros((T, N), bool)}
    actions, boot = [], []
    for t in range(T):
        a, logp, v = actor.act(obs, rng)
        buf["obs"][t], buf["logp"][t], buf["values"][t] = obs, logp, v
        actions.append(a)
        obs, r, term, trunc, info = envs.step(actor.env_action(a))
        obs = np.asarray(obs, dtype=np.float32)
        done = term | trunc
        buf["rewards"][t], buf["terminated"][t], buf["dones"][t] = r, term, done
        idx = np.flatnonzero(trunc & ~term)  # truncated and not terminated: bootstrap from the final observation
        if idx.size:
            final = np.stack([info["final_obs"][i] for i in idx]).astype(np.float32)
            boot.append((t, idx, actor.value(final)))
        episodes.add(r, done, step + (t + 1) * N)
    buf["actions"] = np.stack(actions)
    next_values = np.empty((T, N), np.float32)
    next_values[:-1] = buf["values"][1:]
    next_values[-1] = actor.value(obs)
    next_values[buf["terminated"]] = 0.0
    for t, idx, v in boot:
        next_values[t, idx] = v
    buf["next_values"] = next_values
    return buf, obs


@contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """Run tiny-MLP training on one CPU thread: intra-op threads only add sync overhead at these sizes."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def rng_state(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)  # a string: PCG64's 128-bit ints survive the checkpoint


def set_rng_state(rng: np.random.Generator, state: str) -> None:
    rng.bit_generator.state = json.loads(state)


# ---- A2C: the paper's loss -----------------------------------------------------------------------------
def a2c_loss(logp: torch.Tensor, entropy: torch.Tensor, values: torch.Tensor, returns: torch.Tensor,
             ent_coef: float, vf_coef: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-(log pi * A) - beta H + c (R - V)^2, with A = R - V held fixed in the policy term. (B,) inputs."""
    advantages = (returns - values).detach()  # A(s_t, a_t) = R_t - V(s_t)
    pg = -(logp * advantages).mean()  # policy gradient term
    v_loss = 0.5 * (returns - values).pow(2).mean()  # value regression
    ent = entropy.mean()
    return pg + vf_coef * v_loss - ent_coef * ent, {"pg_loss": pg, "v_loss": v_loss, "entropy": ent}


def train(cfg: Config, run: Run) -> dict[str, float]:
    with one_thread(run.device):
        return _train(cfg, run)


def _train(cfg: Config, run: Run) -> dict[str, float]:
    envs = make_vec_env(cfg.env_id, cfg.n_envs, run.seed, "A2C", discrete_only=True)
    obs_dim = envs.single_observation_space.shape[0]
    model = ActorCritic(obs_dim, envs.single_action_space, cfg.hidden, cfg.shared, seed=run.seed).to(run.device)
    if cfg.optimizer == "rmsprop":
        opt = torch.optim.RMSprop(model.parameters(), lr=cfg.lr, alpha=0.99, eps=1e-5)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5)
    rng = np.random.default_rng(run.seed)
    per_update = cfg.n_envs * cfg.n_steps
    n_updates = cfg.total_steps // per_update
    update, evals = 0, []
    state = run.restore()
    if state is not None:  # envs restart from a reset on resume: not bit-identical (see notes)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        set_rng_state(rng, state["rng"])
        update, evals = state["update"], state["evals"]
        envs.reset(seed=run.seed + 7919 * update)
    actor = NumpyActor(model, envs.single_action_space)
    obs = np.asarray(envs.reset(seed=run.seed + 7919 * update)[0], dtype=np.float32)
    episodes = Episodes(cfg.n_envs)
    t0 = time.perf_counter()
    next_eval = (update * per_update // cfg.eval_every + 1) * cfg.eval_every if cfg.eval_every else None
    while update < n_updates:
        step = update * per_update
        if cfg.anneal_lr:
            for g in opt.param_groups:
                g["lr"] = cfg.lr * (1.0 - update / n_updates)
        buf, obs = collect(envs, actor, obs, cfg.n_steps, rng, episodes, step)
        returns = nstep_returns(buf["rewards"], buf["next_values"], buf["terminated"], buf["dones"], cfg.gamma)
        b_obs = torch.as_tensor(buf["obs"].reshape(per_update, obs_dim), device=run.device)
        b_act = torch.as_tensor(buf["actions"].reshape(per_update), device=run.device)
        b_ret = torch.as_tensor(returns.reshape(per_update), dtype=torch.float32, device=run.device)
        logp, entropy = model.log_prob_entropy(b_obs, b_act)
        loss, parts = a2c_loss(logp, entropy, model.value(b_obs), b_ret, cfg.ent_coef, cfg.vf_coef)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        actor.refresh()
        update += 1
        step = update * per_update
        if update % 50 == 0 or update == n_updates:
            run.check_finite(loss.item(), step, hint="lr")
            recent = episodes.returns[-20:]
            run.log({"train/return": float(np.mean(recent)) if recent else 0.0, "train/loss": loss.item(),
                     **{f"train/{k}": v.item() for k, v in parts.items()},
                     "train/steps_per_s": step / max(time.perf_counter() - t0, 1e-9)}, step=step)
        if next_eval is not None and step >= next_eval and update < n_updates:
            evals.append((step, float(np.mean(evaluate(actor.greedy, cfg.env_id, cfg.eval_episodes)))))
            run.log({"eval/return": evals[-1][1]}, step=step)
            next_eval += cfg.eval_every
        if update % cfg.checkpoint_every == 0 and update < n_updates:
            run.checkpoint({"update": update, "model": model.state_dict(), "opt": opt.state_dict(),
                            "rng": rng_state(rng), "evals": evals})
    seconds = time.perf_counter() - t0
    envs.close()
    final = float(np.mean(evaluate(actor.greedy, cfg.env_id, cfg.eval_episodes)))
    evals.append((n_updates * per_update, final))
    run.log({"eval/return": final}, step=n_updates * per_update)
    line_plot(run.plots_dir / "learning_curve.png",
              {"training episodes": (episodes.steps, episodes.returns),
               "greedy evaluation": ([s for s, _ in evals], [r for _, r in evals])},
              xlabel="env steps", ylabel="return", title=f"A2C on {cfg.env_id}", hline=CLAIMS["quick"][0].threshold
              if cfg.env_id == "CartPole-v1" else None)
    return {"eval/return": final, "train/steps_per_s": n_updates * per_update / seconds,
            "train/seconds": seconds}
