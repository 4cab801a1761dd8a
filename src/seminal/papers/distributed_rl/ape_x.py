"""Ape-X: Distributed prioritized experience replay — Horgan, Quan, Budden, Barth-Maron, Hessel, van Hasselt & Silver,
ICLR 2018 (arXiv:1803.00933).

Prioritized replay (paper 15) with acting and learning split across processes. Many actors, each with its own
exploration rate, play with a copy of the network and write n-step transitions into one shared replay memory. They
compute each transition's initial priority themselves, from the TD error under their copy of the network, so new
data enters the memory with a real priority instead of the maximum seen so far. One learner samples prioritized
batches, takes n-step double-Q steps, writes the new priorities back and now and then sends its parameters to the
actors. Nothing waits for anything: the actors never wait for the learner, the learner never waits for fresh data.
§4's result is that this scales: more actors generate more (and more diverse) data, and the same learner does better
in the same wall time.

Equation map (§3, Appendix):
  §3       G_t = R_{t+1} + gamma R_{t+2} + ... + gamma^{n-1} R_{t+n} + gamma^n q(S_{t+n}, argmax_a q(S_{t+n}, a, theta),
           theta^-), loss 1/2 (G_t - q(S_t, A_t, theta))^2                        -> `n_step_target`, `learner_step`
  §3       n-step transitions assembled by the actor, cut at episode ends        -> `NStep`
  Alg. 1   the actor computes initial priorities from its own TD errors           -> `ApeXActor.unroll`
  §3, Alg. 2  proportional prioritized sampling, importance weights (beta), priorities written back, old data
           removed (FIFO)                                                           -> `ReplayServer` (paper 15's
           `PrioritizedSampler` and sum-tree)
  §4.1     eps_i = eps^(1 + alpha i / (N - 1)), eps 0.4, alpha 7                    -> `actor_epsilons`
  §4.1     dueling network (Wang et al. 2016, Eq. 9: Q = V + A - mean_a A)         -> `DuelingQ`
  §4       more actors, same learner: performance in wall time                      -> `train` (arms of 1, 2, 4 actors)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.config import PosFloat, PosInt, Prob, Sizes
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.rl import env_state, evaluate, make_env, set_env_state
from seminal.core.run import Run
from seminal.papers.distributed_rl._actors import env_spaces, import_ray, make_actors, ray_session
from seminal.papers.rl.dqn import td_loss
from seminal.papers.rl.prioritized_replay import PrioritizedSampler


@dataclass(frozen=True)
class Config:
    env_id: str = "CartPole-v1"
    """Environment id (discrete actions, flat observations)."""
    mode: Literal["local", "ray"] = "ray"
    """local: actors and the replay server are objects in this process, stepped in lockstep (deterministic); ray:
    each a Ray actor, all asynchronous (the paper's setting)."""
    ray_address: str | None = None
    """Ray cluster to join (e.g. auto); none: start a local Ray."""
    actors: Sizes = (1, 2, 4)
    """One arm per entry: the number of actors it runs with (§4's scaling experiment); the same learner in each."""
    main_actors: PosInt = 2
    """The arm whose result the CartPole claim reads (must be one of `actors`)."""
    envs_per_actor: PosInt = 4
    """Environments each actor steps together; each has its own epsilon (N = actors x envs_per_actor in §4.1)."""
    unroll_length: PosInt = 25
    """Steps of every env per unroll: one message of transitions to the replay server (the paper: 50 per actor)."""
    eps_base: Prob = 0.4
    """eps of eps_i = eps^(1 + alpha i/(N - 1)) (§4.1: 0.4)."""
    eps_alpha: PosFloat = 7.0
    """alpha of eps_i = eps^(1 + alpha i/(N - 1)) (§4.1: 7)."""
    n_step: PosInt = 3
    """n of the n-step return (§3: 3)."""
    gamma: Prob = 0.99
    """Discount gamma (the paper's 0.99)."""
    buffer_size: PosInt = 50_000
    """Replay capacity in transitions; the oldest are removed first (the paper's 2M)."""
    priority_alpha: Prob = 0.6
    """Priority exponent alpha (the paper's 0.6)."""
    priority_beta: Prob = 0.4
    """Importance-sampling exponent beta, fixed (the paper's 0.4, not annealed)."""
    priority_eps: PosFloat = 1e-6
    """eps in p_i = |delta_i| + eps."""
    batch_size: PosInt = 64
    """Learner batch (the paper's 512)."""
    learning_starts: PosInt = 1_000
    """Env steps in replay before the learner starts (the paper's 50k)."""
    lr: PosFloat = 2e-3
    """Adam's learning rate (the paper: centred RMSProp, 0.00025 / 4)."""
    max_grad_norm: PosFloat = 40.0
    """Clip the gradient norm to this (the paper's 40)."""
    huber_delta: PosFloat = 1.0
    """Huber loss threshold (the TD error's gradient is clipped to +-delta)."""
    hidden: Sizes = (64, 64)
    """Hidden layers of the dueling Q-network (ReLU)."""
    target_update: PosInt = 250
    """Copy the online network to the target every this many learner updates (the paper's 2500)."""
    batches_per_call: PosInt = 4
    """Batches the learner asks the replay server for in one call, and priority updates it sends in one."""
    sync_every: PosInt = 10
    """Send the parameters to the actors every this many updates (the paper: actors copy every 400 frames)."""
    replay_ratio: PosFloat = 4.0
    """Transitions the learner samples per transition the actors insert, at least: an actor whose unroll is done
    is not relaunched while the learner is behind (a rate limiter, as Reverb's SampleToInsertRatio; the paper's
    actors never wait, because its GPU learner kept up). The learner waits for data only when it is ahead."""
    total_steps: PosInt = 200_000
    """Env steps of an arm at most, over all its actors."""
    max_seconds: PosFloat = 30.0
    """Wall seconds of an arm at most (its loop's own time: evaluations and checkpoints excluded)."""
    eval_every: PosInt = 250
    """Evaluate the learner's greedy policy every this many updates; an arm stops at its first solved evaluation."""
    eval_episodes: PosInt = 10
    """Episodes per evaluation (seeds 10000, 10001, ...)."""
    solved_return: float = 475.0
    """An evaluation at or above this is solved: the arm stops, its time to solve is recorded."""
    checkpoint_every: PosInt = 500
    """Checkpoint every this many learner updates (and whenever run.due())."""

    def validate(self) -> None:
        if self.main_actors not in self.actors or len(set(self.actors)) != len(self.actors):
            raise SeminalError(f"actors must be distinct and include main_actors={self.main_actors}")
        if self.learning_starts < self.batch_size:
            raise SeminalError("learning_starts must be at least batch_size")


PRESETS = {
    # §4's experiment on CartPole-v1: the same learner with 1, 2 and 4 actors (4 envs each), each arm until its
    # greedy return reaches 475 or 30 s of wall time, ray mode.
    "quick": Config(),
    # The paper's Atari-like settings where they apply (batch 512, 2M replay, target every 2500, n 3), many actors,
    # LunarLander-v3. Never run.
    "full": Config(env_id="LunarLander-v3", actors=(8, 32, 128), main_actors=128, envs_per_actor=1,
                   unroll_length=50, buffer_size=2_000_000, batch_size=512, learning_starts=50_000, lr=2.5e-4 / 4,
                   target_update=2500, sync_every=40, total_steps=20_000_000, max_seconds=3600.0, eval_every=5000,
                   solved_return=200.0, checkpoint_every=5000),
}

_RLLIB = ("RLlib's Ape-X DQN CartPole tuned example (rllib/tuned_examples/apex_dqn/cartpole-apex-dqn.yaml): stop at "
          "a mean return of 150 within 250k steps; gymnasium's CartPole-v1 reward_threshold is 475")
_FIG4 = "Fig. 4 (§4.1): with more actors the same learner scores higher at the same wall-clock time"
CLAIMS = {
    "quick": [
        Claim("Ape-X (ray mode, 2 actors) solves CartPole-v1: greedy return >= 475 within 200k env steps and 30 s",
              "a2/eval/return", ">=", 475.0, "475 = CartPole-v1 solved (RLlib's Ape-X bar: 150 in 250k steps)",
              _RLLIB, bar="peer"),
        Claim("§4's scaling on 2 cores: with 2 actors the learner solves CartPole-v1 in less wall time than with 1 "
              "(paired per seed; an arm that never solves counts as max_seconds)", "scaling/t1_minus_t2_seconds",
              ">", 0.0, "more actors, better at the same wall time", _FIG4, bar="sanity",
              paired=("a1/seconds_to_solve", "a2/seconds_to_solve")),
    ],
    "full": [Claim("Ape-X (128 actors) solves LunarLander-v3 (greedy return >= 200)", "a128/eval/return", ">=", 200.0,
                   "200 = solved", "gymnasium LunarLander-v3 reward_threshold", bar="peer")],
}


# ---- the paper's math -----------------------------------------------------------------------------------------
def actor_epsilons(n: int, eps: float = 0.4, alpha: float = 7.0) -> np.ndarray:
    """eps_i = eps^(1 + alpha i / (N - 1)), i = 0 ... N - 1 (§4.1); one actor gets eps itself."""
    i = np.arange(n)
    return eps ** (1.0 + alpha * i / max(n - 1, 1))  # §4.1


def n_step_target(ret: np.ndarray, discount: np.ndarray, q_next_online: np.ndarray,
                  q_next_target: np.ndarray) -> np.ndarray:
    """G_t = R_t^(n) + gamma^n q(S_{t+n}, argmax_a q(S_{t+n}, a; theta); theta^-) (§3): double Q, n-step.

    ret (B,): sum_{k<m} gamma^k R_{t+k+1} over the m <= n steps before an episode end; discount (B,): gamma^m, or 0
    where the episode terminated inside the window; q_next_* (B, A)."""
    a_star = q_next_online.argmax(axis=1)  # the online network picks the action ...
    return ret + discount * q_next_target[np.arange(len(ret)), a_star]  # ... the target network evaluates it


class NStep:
    """Per env, the last n (obs, action, reward) not yet emitted; `step` returns the n-step transitions completed by
    one env step: the oldest when n rewards are in, all of them when the episode ends (terminated: no bootstrap;
    truncated: bootstrap from the observation it was cut at)."""

    def __init__(self, n: int, gamma: float):
        self.n, self.gamma = n, gamma
        self.pending: list[tuple[np.ndarray, int, float]] = []

    def _emit(self, i: int, next_obs: np.ndarray, terminated: bool) -> tuple:
        obs, action, _ = self.pending[i]
        rewards = [r for _, _, r in self.pending[i:]]
        ret = sum(self.gamma**k * r for k, r in enumerate(rewards))  # sum_{k<m} gamma^k R_{t+k+1}
        discount = 0.0 if terminated else self.gamma ** len(rewards)  # gamma^m, 0 after a terminal state
        return obs, action, ret, next_obs, discount

    def step(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminated: bool,
             truncated: bool) -> list[tuple]:
        self.pending.append((obs, action, float(reward)))
        if terminated or truncated:
            out = [self._emit(i, next_obs, terminated) for i in range(len(self.pending))]
            self.pending = []
            return out
        if len(self.pending) == self.n:
            out = [self._emit(0, next_obs, False)]
            self.pending.pop(0)
            return out
        return []


# ---- the network, in torch for the learner and in NumPy for the actors -----------------------------------------
class DuelingQ(nn.Module):
    """obs (B, D) -> Q (B, A): a ReLU MLP whose last layer gives V and A(., a); Q = V + A - mean_a A (Wang et al.
    2016, Eq. 9). The two streams share the hidden layers here."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...], seed: int = 0):
        super().__init__()
        sizes = (obs_dim, *hidden, n_actions + 1)
        with torch.random.fork_rng():  # initial weights from the seed alone, the global generator untouched
            torch.manual_seed(seed)
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        out = self.layers[-1](x)
        v, adv = out[:, :1], out[:, 1:]
        return v + adv - adv.mean(dim=1, keepdim=True)  # Wang et al. Eq. (9)


def weights_of(net: DuelingQ) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().copy() for p in net.parameters()]


def numpy_q(weights: list[np.ndarray], obs: np.ndarray) -> np.ndarray:
    """`DuelingQ.forward` on NumPy weights [W0, b0, W1, b1, ...]: (B, D) -> (B, A)."""
    x = np.asarray(obs, np.float32)
    for j in range(0, len(weights), 2):
        x = x @ weights[j].T + weights[j + 1]
        if j + 2 < len(weights):
            x = np.maximum(x, 0.0)
    v, adv = x[:, :1], x[:, 1:]
    return v + adv - adv.mean(axis=1, keepdims=True)


# ---- the replay server: paper 15's prioritized memory, fed by the actors ----------------------------------------
class ReplayServer:
    """A FIFO memory of n-step transitions with proportional priorities (paper 15's sampler and sum-tree). Actors
    `add` transitions with their own TD errors; the learner `sample`s and `update`s priorities. A priority update
    for a slot rewritten since it was sampled is dropped (each slot counts its writes)."""

    def __init__(self, cfg: Config, obs_dim: int, seed: int):
        C = cfg.buffer_size
        self.cfg = cfg
        self.data = {"obs": np.zeros((C, obs_dim), np.float32), "action": np.zeros(C, np.int64),
                     "ret": np.zeros(C, np.float32), "next_obs": np.zeros((C, obs_dim), np.float32),
                     "discount": np.zeros(C, np.float32)}
        self.writes = np.zeros(C, np.int64)
        self.sampler = PrioritizedSampler(C, cfg.priority_alpha, cfg.priority_beta, cfg.priority_eps)
        self.pos, self.size, self.added = 0, 0, 0
        self.rng = np.random.default_rng([seed, 17])

    def add(self, batch: dict[str, np.ndarray], td_error: np.ndarray) -> int:
        """Write transitions over the oldest ones, with priorities |delta| + eps from the actor's TD errors."""
        n = len(td_error)
        idx = (self.pos + np.arange(n)) % self.cfg.buffer_size
        for k, v in self.data.items():
            v[idx] = batch[k]
        self.writes[idx] += 1
        self.sampler.update(idx, np.asarray(td_error))  # Alg. 1: the actor's priority, not the max
        self.pos, self.size, self.added = (self.pos + n) % self.cfg.buffer_size, min(self.size + n,
                                                                                  self.cfg.buffer_size), self.added + n
        return self.size

    def sample(self, k: int, m: int = 1) -> list[dict[str, np.ndarray]]:
        """m batches of k transitions, each drawn by priority, with their importance weights (beta fixed) and slot
        write counts (one call for m batches: a Ray call costs ~1 ms); none while the memory holds fewer than k."""
        out = []
        for _ in range(m if self.size >= k else 0):
            index, weights = self.sampler.sample(self.rng, k, self.size, 0.0)  # progress 0: beta is priority_beta
            out.append({**{key: v[index] for key, v in self.data.items()}, "index": index,
                        "writes": self.writes[index], "weights": weights.astype(np.float32)})
        return out

    def update(self, updates: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """For each (index, writes, td_error) in turn, p_i <- |delta_i| + eps for the slots still holding what was
        sampled (Alg. 2)."""
        for index, writes, td_error in updates:
            keep = self.writes[index] == writes
            if keep.any():
                self.sampler.update(index[keep], td_error[keep])

    def state(self) -> dict[str, Any]:
        return {"data": {k: v.copy() for k, v in self.data.items()}, "writes": self.writes.copy(),
                "sampler": self.sampler.state(), "pos": self.pos, "size": self.size, "added": self.added,
                "rng": json.dumps(self.rng.bit_generator.state)}

    def load(self, state: dict[str, Any]) -> None:
        for k, v in state["data"].items():
            self.data[k][:] = v
        self.writes[:] = state["writes"]
        self.sampler.load(state["sampler"])
        self.pos, self.size, self.added = int(state["pos"]), int(state["size"]), int(state["added"])
        self.rng.bit_generator.state = json.loads(state["rng"])


def call(obj: Any, method: str, *args: Any) -> Any:
    """obj.method(*args) on a plain object, or its Ray future on a Ray actor handle (`result` resolves either)."""
    fn = getattr(obj, method)
    return fn.remote(*args) if hasattr(fn, "remote") else fn(*args)


def result(x: Any) -> Any:
    return import_ray().get(x) if type(x).__name__ == "ObjectRef" else x


# ---- one actor --------------------------------------------------------------------------------------------------
class ApeXActor:
    """`envs_per_actor` envs, each with its own eps_i (i = index * E + j over all actors' envs, §4.1), acting
    eps-greedily with the last online weights sent. Every unroll's n-step transitions go to the replay server with
    their TD errors under the actor's copy of the online and target networks (Alg. 1); the learner gets back only
    counts and finished episodes."""

    def __init__(self, cfg: Config, n_actors: int, seed: int, replay: Any, index: int):
        E = cfg.envs_per_actor
        self.cfg, self.index, self.replay = cfg, index, replay
        self.eps = actor_epsilons(n_actors * E, cfg.eps_base, cfg.eps_alpha)[index * E:(index + 1) * E]
        self.envs = [make_env(cfg.env_id) for _ in range(E)]
        self.n_actions = int(self.envs[0].action_space.n)
        self.obs = np.stack([env.reset(seed=seed * 10_007 + index * 101 + j)[0] for j, env in enumerate(self.envs)])
        self.obs = self.obs.astype(np.float32)
        self.nstep = [NStep(cfg.n_step, cfg.gamma) for _ in range(E)]
        self.rng = np.random.default_rng([seed, index, 17])
        self.ep_ret = np.zeros(E)
        self.weights: dict[str, list[np.ndarray]] | None = None
        self.version = -1

    def set_weights(self, weights: dict[str, list[np.ndarray]], version: int) -> None:
        self.weights, self.version = {k: [np.asarray(w) for w in v] for k, v in weights.items()}, int(version)

    def unroll(self, T: int, weights: dict | None = None, version: int | None = None) -> dict[str, Any]:
        if weights is not None:
            self.set_weights(weights, version if version is not None else self.version)
        if self.weights is None:
            raise SeminalError("an actor was asked to act before it was sent weights")
        transitions, episodes = [], []
        for _ in range(T):
            greedy = numpy_q(self.weights["online"], self.obs).argmax(axis=1)
            explore = self.rng.random(len(self.envs)) < self.eps  # eps_i-greedy, one eps per env
            random_a = self.rng.integers(0, self.n_actions, len(self.envs))
            actions = np.where(explore, random_a, greedy)
            for j, env in enumerate(self.envs):
                o, r, term, trunc, _ = env.step(int(actions[j]))
                o = np.asarray(o, np.float32)
                transitions += self.nstep[j].step(self.obs[j].copy(), int(actions[j]), r, o, term, trunc)
                self.ep_ret[j] += r
                if term or trunc:
                    episodes.append(float(self.ep_ret[j]))
                    self.ep_ret[j] = 0.0
                    o, _ = env.reset()  # the env's own generator continues: deterministic
                self.obs[j] = o
        if transitions:
            batch = {"obs": np.stack([t[0] for t in transitions]), "action": np.array([t[1] for t in transitions]),
                     "ret": np.array([t[2] for t in transitions], np.float32),
                     "next_obs": np.stack([t[3] for t in transitions]),
                     "discount": np.array([t[4] for t in transitions], np.float32)}
            call(self.replay, "add", batch, self.td_errors(batch))  # Alg. 1: initial priorities from the actor
        return {"steps": T * len(self.envs), "added": len(transitions), "episodes": episodes,
                "version": self.version, "actor": self.index}

    def td_errors(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """G_t - q(S_t, A_t) under the actor's copies of the online and target networks (the learner's formula)."""
        q = numpy_q(self.weights["online"], batch["obs"])[np.arange(len(batch["action"])), batch["action"]]
        g = n_step_target(batch["ret"], batch["discount"], numpy_q(self.weights["online"], batch["next_obs"]),
                          numpy_q(self.weights["target"], batch["next_obs"]))
        return g - q

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def state(self) -> dict[str, Any]:
        return {"envs": [env_state(env) for env in self.envs], "obs": self.obs.copy(), "ep_ret": self.ep_ret.copy(),
                "pending": [n.pending for n in self.nstep], "rng": json.dumps(self.rng.bit_generator.state),
                "weights": self.weights, "version": self.version}

    def load(self, state: dict[str, Any]) -> None:
        if not all(set_env_state(env, s) for env, s in zip(self.envs, state["envs"])):
            raise SeminalError("this env's state cannot be restored; restart the run instead of resuming it")
        self.obs, self.ep_ret = np.asarray(state["obs"], np.float32).copy(), np.asarray(state["ep_ret"], float).copy()
        for n, pending in zip(self.nstep, state["pending"]):
            n.pending = [(np.asarray(o, np.float32), int(a), float(r)) for o, a, r in pending]
        self.rng.bit_generator.state = json.loads(state["rng"])
        if state["weights"] is not None:
            self.set_weights(state["weights"], state["version"])


# ---- the learner ------------------------------------------------------------------------------------------------
def learner_step(net: DuelingQ, target: DuelingQ, opt: torch.optim.Optimizer, batch: dict[str, np.ndarray],
                 cfg: Config) -> tuple[np.ndarray, float]:
    """One n-step double-Q step on a prioritized batch, the loss weighted by the importance weights; returns the TD
    errors G_t - q(S_t, A_t) (the new priorities) and the loss."""
    obs, next_obs = torch.tensor(batch["obs"]), torch.tensor(batch["next_obs"])  # copies: Ray hands read-only arrays
    action = torch.tensor(batch["action"])
    q_sa = net(obs).gather(1, action[:, None]).squeeze(1)
    with torch.no_grad():
        g = n_step_target(batch["ret"], batch["discount"], net(next_obs).numpy(), target(next_obs).numpy())  # §3
    g = torch.as_tensor(g, dtype=torch.float32)
    loss = td_loss(q_sa, g, cfg.huber_delta, torch.tensor(batch["weights"]))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
    opt.step()
    return (g - q_sa).detach().numpy(), loss.item()


def greedy_return(weights: list[np.ndarray], cfg: Config) -> float:
    act = lambda obs: int(numpy_q(weights, np.asarray(obs, np.float32)[None])[0].argmax())  # noqa: E731
    return float(np.mean(evaluate(act, cfg.env_id, cfg.eval_episodes)))


def train_arm(arm: str, n_actors: int, cfg: Config, run: Run, state: dict | None, save) -> dict[str, Any]:
    """One learner with n_actors actors and a replay server until solved, total_steps or max_seconds. In ray mode the
    learner takes one step on a batch it asked for during the previous step (prefetched) and sends the priorities back
    without waiting, for as long as it is behind replay_ratio; then it takes the unrolls that have arrived (or waits
    for one), whose actors start their next one. In local mode `ready` is the next actor's unroll: the same loop in
    lockstep."""
    obs_dim, n_actions = env_spaces(cfg.env_id, "Ape-X")
    if cfg.mode == "ray":
        replay = import_ray().remote(num_cpus=0)(ReplayServer).remote(cfg, obs_dim, run.seed)
    else:
        replay = ReplayServer(cfg, obs_dim, run.seed)
    actors = make_actors(cfg.mode, n_actors, cfg, n_actors, run.seed, replay, actor_cls=ApeXActor)
    net, target = DuelingQ(obs_dim, n_actions, cfg.hidden, run.seed), DuelingQ(obs_dim, n_actions, cfg.hidden)
    target.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    s: dict[str, Any] = {"updates": 0, "saved_at": 0, "steps": 0, "seconds": 0.0, "evals": [], "episodes": [],
                         "solved": None, "prefetched": [], "queue": [], "unsent": []}
    try:
        if state is None:
            actors.broadcast({"online": weights_of(net), "target": weights_of(target)}, 0)
        else:
            net.load_state_dict(state["net"])
            target.load_state_dict(state["target"])
            opt.load_state_dict(state["opt"])
            result(call(replay, "load", state["replay"]))
            actors.load(state["actors"])
            s = {k: state[k] for k in s}
        prefetched, m = s.pop("prefetched"), cfg.batches_per_call
        bar = run.progress(total=cfg.total_steps, initial=s["steps"], desc=f"ape-x {arm}", unit="step")
        t0 = time.perf_counter() - s["seconds"]
        while s["solved"] is None and s["steps"] < cfg.total_steps and s["seconds"] < cfg.max_seconds:
            behind = s["updates"] * cfg.batch_size < cfg.replay_ratio * (s["steps"] - cfg.learning_starts)
            if not behind:  # the learner has caught up: take what has arrived, or wait for one unroll
                for un in actors.ready(cfg.unroll_length) or actors.unrolls(1, cfg.unroll_length):
                    s["steps"] += un["steps"]
                    s["episodes"] += [[s["steps"], r] for r in un["episodes"]]
                    bar.update(un["steps"])
            else:
                if not s["queue"]:
                    s["queue"] = result(prefetched) or result(call(replay, "sample", cfg.batch_size, m))
                    prefetched = call(replay, "sample", cfg.batch_size, m)  # the next batches, while these learn
                    if not s["queue"]:
                        continue
                batch = s["queue"].pop(0)
                td, loss = learner_step(net, target, opt, batch, cfg)
                s["unsent"].append((batch["index"], batch["writes"], td))
                if len(s["unsent"]) == m:
                    call(replay, "update", s["unsent"])  # Alg. 2: new priorities, without waiting
                    s["unsent"] = []
                s["updates"] = u = s["updates"] + 1
                if u % cfg.target_update == 0:
                    target.load_state_dict(net.state_dict())
                if u % cfg.sync_every == 0:
                    actors.broadcast({"online": weights_of(net), "target": weights_of(target)}, u)
                if u % 100 == 0:
                    run.check_finite(loss, s["steps"], what="loss", hint="lr")
                    run.log({f"{arm}/loss": loss}, step=s["steps"])
                if u % cfg.eval_every == 0:
                    s["seconds"] = time.perf_counter() - t0
                    ret = greedy_return(weights_of(net), cfg)
                    s["evals"].append([s["steps"], s["seconds"], ret])
                    run.log({f"{arm}/eval_return": ret, f"{arm}/seconds": s["seconds"]}, step=s["steps"])
                    bar.set_postfix(eval=f"{ret:.0f}", refresh=False)
                    t0 = time.perf_counter() - s["seconds"]  # evaluations are not the arm's time
                    if ret >= cfg.solved_return:
                        s["solved"] = [s["steps"], s["seconds"]]
            s["seconds"] = time.perf_counter() - t0
            if s["solved"] is None and (s["updates"] - s["saved_at"] >= cfg.checkpoint_every or run.due()):
                s["saved_at"] = s["updates"]
                save({**s, "prefetched": result(prefetched), "net": net.state_dict(), "target": target.state_dict(),
                      "opt": opt.state_dict(), "replay": result(call(replay, "state")), "actors": actors.state()})
                t0 = time.perf_counter() - s["seconds"]
        bar.close()
        added = result(call(replay, "state"))["added"] if cfg.mode == "local" else s["steps"]
    finally:
        actors.close()
        if cfg.mode == "ray":
            import_ray().kill(replay)
    if s["solved"] is None:  # the last word is a final evaluation
        s["evals"].append([s["steps"], s["seconds"], greedy_return(weights_of(net), cfg)])
    return {"return": s["evals"][-1][2], "seconds_to_solve": s["solved"][1] if s["solved"] else cfg.max_seconds,
            "steps_to_solve": s["solved"][0] if s["solved"] else math.nan, "solved": float(s["solved"] is not None),
            "env_steps": s["steps"], "updates": s["updates"], "seconds": s["seconds"], "added": added,
            "steps_per_second": s["steps"] / max(s["seconds"], 1e-9),
            "updates_per_second": s["updates"] / max(s["seconds"], 1e-9), "evals": s["evals"]}


def train(cfg: Config, run: Run) -> dict[str, float]:
    cfg.validate()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: intra-op threads only add synchronisation
    try:
        if cfg.mode == "local":
            return _train(cfg, run, {"startup_seconds": 0.0})
        with ray_session(max(cfg.actors), cfg.ray_address) as info:
            return _train(cfg, run, info)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: Config, run: Run, ray_info: dict[str, float]) -> dict[str, float]:
    """One arm per actor count, in turn, from the same initial network; checkpoints inside arms and after each."""
    state = run.restore() or {"done": {}, "arm": None}
    done = dict(state["done"])
    for n in cfg.actors:
        name = f"a{n}"
        if name in done:
            continue

        def save(arm_state, name=name):
            run.checkpoint({"done": done, "arm": {"name": name, **arm_state}})

        resume = state["arm"] if state["arm"] is not None and state["arm"]["name"] == name else None
        done[name] = train_arm(name, n, cfg, run, resume, save)
        state["arm"] = None
        run.checkpoint({"done": done, "arm": None})
    metrics: dict[str, float] = {"train/ray_startup_seconds": ray_info["startup_seconds"]}
    for name, d in done.items():
        metrics |= {f"{name}/{k}": float(v) for k, v in d.items() if k != "evals"}
        metrics[f"{name}/eval/return"] = d["return"]
    if {"a1", "a2"} <= set(done):
        metrics["scaling/t1_minus_t2_seconds"] = done["a1"]["seconds_to_solve"] - done["a2"]["seconds_to_solve"]
    run.log(metrics, step=0)
    line_plot(run.plots_dir / "return_vs_wall_time.png",
              {f"{name[1:]} actor(s)": ([e[1] for e in d["evals"]], [e[2] for e in d["evals"]])
               for name, d in done.items()}, xlabel="wall seconds (learner loop)", ylabel="greedy return",
              title=f"Ape-X on {cfg.env_id}", hline=cfg.solved_return)
    line_plot(run.plots_dir / "return_vs_env_steps.png",
              {f"{name[1:]} actor(s)": ([e[0] for e in d["evals"]], [e[2] for e in d["evals"]])
               for name, d in done.items()}, xlabel="env steps", ylabel="greedy return",
              title=f"Ape-X on {cfg.env_id}", hline=cfg.solved_return)
    return metrics
