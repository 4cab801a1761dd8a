"""Plumbing shared by the on-policy papers (A2C, TRPO, PPO, GAE's experiment). No algorithm math here.

  * `make_vec_env`: N synchronous envs, same-step autoreset (a truncated episode keeps its final observation).
  * `ActorCritic`: pi(a|s) (categorical, or Gaussian with a state-independent log std) and V(s), 64x64 tanh.
  * `NumpyActor`: the same forward pass in NumPy, for cheap per-step acting.
  * `collect`: a (T, N) rollout with the true next-state values that returns and GAE need.
  * `onpolicy_loop`: collect, call the paper's `update(rollout, progress, rng)`, log, evaluate,
    checkpoint (with the envs' own state, so a resumed run continues exactly), repeat. A2C, TRPO and PPO
    differ only in the update they pass in, as the papers do.

Advantages, returns, losses and policy steps stay in the paper modules.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from seminal.core.errors import SeminalError
from seminal.core.rl import env_state, evaluate, gym, make_env, require_discrete, set_env_state
from seminal.core.run import Run

EnvSource = str | Callable[[], Any]
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


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

    def state(self) -> dict[str, Any]:
        return {"ret": self.ret.copy(), "steps": list(self.steps), "returns": list(self.returns)}

    def load(self, state: dict[str, Any]) -> None:
        self.ret = np.asarray(state["ret"], float)
        self.steps, self.returns = list(state["steps"]), list(state["returns"])

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


def flat(x: np.ndarray, device: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(T, N, ...) rollout array -> (T*N, ...) tensor on `device`."""
    return torch.as_tensor(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), dtype=dtype, device=device)


class Policy:
    """A trained policy: callable obs -> greedy action, plus what training recorded.

    `.model` (the torch ActorCritic), `.curve` (env steps, training-episode returns), `.evals` [(step, greedy
    return)], `.eval_return` (final greedy mean; nan without evaluation), `.seconds`, `.steps`, `.solved_at`
    (first evaluation step with return >= `solved_return`, or None).
    """

    def __init__(self, model: ActorCritic, actor: NumpyActor):
        self.model, self.actor = model, actor
        self.curve: tuple[list[int], list[float]] = ([], [])
        self.evals: list[tuple[int, float]] = []
        self.eval_return, self.seconds, self.steps, self.solved_at = math.nan, 0.0, 0, None

    def __call__(self, obs: np.ndarray) -> Any:
        return self.actor.greedy(obs)


Update = Callable[[dict[str, np.ndarray], float, np.random.Generator], dict[str, float]]
"""The paper's algorithm: `update(rollout, progress, rng) -> metrics`. `rollout` is `collect`'s dict of (T, N)
arrays; `progress` = updates done / updates in all (for annealing); `rng` is the loop's generator (minibatch
order); it returns floats to log (a non-finite one stops the run with a one-line error)."""


def onpolicy_loop(envs: Any, env: EnvSource, model: ActorCritic, update: Update, stateful: dict[str, Any],
                  cfg: Any, *, seed: int, run: Run | None = None, prefix: str = "train", resume: dict | None = None,
                  outer: dict | None = None, log_every: int = 1, hint: str = "lr",
                  solved_return: float = math.inf, evaluator: Callable[..., list[float]] = evaluate) -> Policy:
    """The on-policy training loop around a paper's `update`; returns the trained `Policy`.

    envs: the vector env (from `make_vec_env`), closed at the end; env: its id or factory (for evaluation).
    cfg: any config with total_steps, n_envs, n_steps, eval_every, eval_episodes, checkpoint_every.
    stateful: objects with state_dict/load_state_dict (optimizers) saved with the model in checkpoints.
    evaluator: the greedy evaluation, with `seminal.core.rl.evaluate`'s signature (benchmarks pass a timed one).
    With a `run`, metrics go to `<prefix>/...`; with `outer` (a dict) too, a checkpoint `{**outer, "loop": ...}`
    is written every `checkpoint_every` updates and whenever `run.due()` (Ctrl-C, or `checkpoint_seconds`
    since the last one), so Ctrl-C stops within one update; pass the restored `state["loop"]` back as `resume`.
    """
    rng = np.random.default_rng(seed)
    batch = cfg.n_envs * cfg.n_steps
    n_updates = max(1, cfg.total_steps // batch)
    policy = Policy(model, NumpyActor(model, envs.single_action_space))
    episodes = Episodes(cfg.n_envs)
    done = 0
    obs = np.asarray(envs.reset(seed=seed)[0], dtype=np.float32)
    if resume is not None:
        model.load_state_dict(resume["model"])
        for key, obj in stateful.items():
            obj.load_state_dict(resume[key])
        set_rng_state(rng, resume["rng"])
        done, policy.evals = resume["update"], [tuple(e) for e in resume["evals"]]
        episodes.load(resume["episodes"])
        policy.actor.refresh()
        if resume.get("envs") is not None and set_env_state(envs, resume["envs"]):
            obs = np.asarray(resume["obs"], dtype=np.float32)  # the envs continue exactly where they were
        else:  # envs whose state cannot be saved (Box2D, MuJoCo) restart: close to, not equal to, a straight run
            obs = np.asarray(envs.reset(seed=seed + 7919 * done)[0], dtype=np.float32)

    def greedy_return() -> float:
        eval_env = None if isinstance(env, str) else env()
        return float(np.mean(evaluator(policy, env if isinstance(env, str) else "", cfg.eval_episodes, env=eval_env)))

    t0 = time.perf_counter()
    while done < n_updates:
        rollout, obs = collect(envs, policy.actor, obs, cfg.n_steps, rng, episodes, done * batch)
        info = update(rollout, done / n_updates, rng)  # the paper's algorithm
        policy.actor.refresh()
        done += 1
        step = done * batch
        if run is not None and (done % log_every == 0 or done == n_updates):
            for key, value in info.items():
                run.check_finite(value, step, what=key, hint=hint)
            recent = episodes.returns[-20:]
            run.log({f"{prefix}/return": float(np.mean(recent)) if recent else 0.0,
                     **{f"{prefix}/{k}": v for k, v in info.items()},
                     f"{prefix}/steps_per_s": step / max(time.perf_counter() - t0, 1e-9)}, step=step)
        if cfg.eval_every and step // cfg.eval_every > (step - batch) // cfg.eval_every and done < n_updates:
            policy.evals.append((step, greedy_return()))
            if run is not None:
                run.log({f"{prefix}/eval_return": policy.evals[-1][1]}, step=step)
        if (run is not None and outer is not None and done < n_updates
                and (done % cfg.checkpoint_every == 0 or run.due())):  # every N updates, or on Ctrl-C / time
            loop = {"update": done, "model": model.state_dict(), "rng": rng_state(rng), "evals": policy.evals,
                    "episodes": episodes.state(), "envs": env_state(envs), "obs": obs,
                    **{key: obj.state_dict() for key, obj in stateful.items()}}
            run.checkpoint({**outer, "loop": loop})
    policy.seconds, policy.steps = time.perf_counter() - t0, n_updates * batch
    envs.close()
    if cfg.eval_episodes:
        policy.evals.append((policy.steps, greedy_return()))
        policy.eval_return = policy.evals[-1][1]
        if run is not None:
            run.log({f"{prefix}/eval_return": policy.eval_return}, step=policy.steps)
    policy.solved_at = next((s for s, r in policy.evals if r >= solved_return), None)
    policy.curve = (episodes.steps, episodes.returns)
    return policy
