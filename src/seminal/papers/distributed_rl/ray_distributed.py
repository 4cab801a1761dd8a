"""Ray: A distributed framework for emerging AI applications — Moritz, Nishihara, Wang, Tumanov, Liaw, Liang, Elibol,
Yang, Paul, Jordan & Stoica, OSDI 2018 (arXiv:1712.05889). Distributed PPO and SAC built on its two primitives.

Ray gives a program two things to run elsewhere: *tasks* (stateless remote functions) and *actors* (stateful objects
whose methods run remotely, in order, in their own process). Both return futures at once; `ray.get` blocks for a
value, `ray.wait` hands back whichever futures finish first (§3.1, Table 1). Large values go once into a shared
object store and are passed by reference (§4.2.3). Work lost with a process is rebuilt: a task from its lineage, an
actor by restarting it (running its constructor again) and re-executing what it owed (§4.2.1, §5.1). §5.3.2 builds
PPO from these: rollout actors collect with the policy the learner sends, the learner gathers them and takes its SGD
steps, and sends the new weights. Here the same is done for PPO (synchronous, as §5.3.2) and for SAC (acting actors
feeding a replay actor that the learner samples), with the paper's fault tolerance tested by killing an actor.

Every arm runs in one of two modes of the same code. `local`: the actors are plain objects in this process and their
calls run one at a time, oldest first (deterministic, what the tests use). `ray`: each actor is a Ray actor with
`max_restarts`; a call lost to a dead process (`RayActorError`) is made again on the restarted actor by the learner
itself (not by Ray's `max_task_retries`), so the learner knows what was lost and counts only what it used. The two
modes are `_actors.LocalPool` and `_actors.RayPool` (plumbing: how a call is made, lost, or a process killed).

Map (Ray paper sections; the RL math is papers 11 and 14's, imported, not copied):
  §3.1 actors: state behind remote method calls   -> `RolloutActor`, `ActingActor`, `ReplayActor`
  §3.1 ray.wait: take results as they finish        -> `train_sac_arm`, `gather_rollouts` (`_actors.RayPool`)
  §4.2.3 object store: weights put once, shared     -> `gather_rollouts`, `train_sac_arm` (`RayPool.put`)
  §4.2.1, §5.1 actor restart, lost work redone      -> `gather_rollouts`, `train_sac_arm` (`kill_actor_at` injects it)
  §5.3.2 PPO: rollouts gathered, SGD, broadcast     -> `train_ppo_arm`
  PPO Algorithm 1, Eq. (7), (9), GAE Eq. (11)       -> `ppo.make_update` on `concat_rollouts` (`ppo_learner_step`)
  SAC v2 Eq. (3), v1 Eq. (5), (12), v2 Eq. (18)     -> `sac.sac_update` on replay batches (`sac_learner_step`)
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

import numpy as np
import torch

from seminal.core.claims import Claim
from seminal.core.config import NonNegInt, PosFloat, PosInt, Range, apply_overrides
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.rl import env_state, evaluate, make_env, require_box, set_env_state
from seminal.core.run import Run
from seminal.papers.distributed_rl._actors import (
    LOST,
    ActorCritic,
    Episodes,
    LocalPool,
    NumpyActor,
    RayPool,
    collect,
    import_ray,
    make_pool,
    make_vec_env,
    ray_session,
    scale_action,
)
from seminal.papers.distributed_rl.ape_x import call, result
from seminal.papers.rl import ppo, sac


@dataclass(frozen=True)
class Config:
    mode: Literal["local", "ray"] = "ray"
    """local: actors are objects in this process, their calls run in turn (deterministic); ray: each a Ray actor."""
    ray_address: str | None = None
    """Ray cluster to join (e.g. auto); none: start a local Ray with as many CPUs as an arm has actors."""
    arms: tuple[str, ...] = ("ppo", "sac")
    """Which arms to train, in order: ppo (rollout actors, synchronous learner), sac (acting actors, replay actor)."""
    kill_actor_at: Annotated[float, Range(ge=0, lt=1)] = 0.0
    """Fault injection: at this fraction of an arm's env steps, SIGKILL actor 0's process while it is working (ray
    mode; local mode drops its call and rebuilds it, as a restart does); 0: never."""
    max_restarts: NonNegInt = 3
    """Ray's max_restarts of each actor; a lost call is made again by the learner (no max_task_retries)."""
    ppo_preset: str = "quick"
    """Paper 11's preset whose PPO hyperparameters the PPO arm uses (K epochs, minibatch, lr, gamma, lambda, eps)."""
    ppo_overrides: tuple[str, ...] = ()
    """key=value changes to those PPO hyperparameters (env, N, T and steps come from the fields below)."""
    ppo_env: str = "CartPole-v1"
    """Environment of the PPO arm (Discrete or Box actions, flat observations)."""
    ppo_actors: PosInt = 2
    """Rollout actors (one process each in ray mode)."""
    ppo_envs_per_actor: PosInt = 4
    """Envs each rollout actor steps; PPO's N is ppo_actors x ppo_envs_per_actor."""
    ppo_rollout: PosInt = 64
    """T: steps of every env per rollout; a learner batch is N x T."""
    ppo_steps: PosInt = 100_000
    """Env steps of the PPO arm (counted from the rollouts the learner used)."""
    ppo_eval_every: NonNegInt = 20_000
    """Greedy evaluation of the PPO learner every this many env steps (0: only at the end)."""
    ppo_solved: float = 475.0
    """A PPO evaluation at or above this counts as solved (ppo/solved_at)."""
    sac_preset: str = "quick"
    """Paper 14's preset whose SAC hyperparameters the SAC arm uses (nets, lr, batch, gamma, tau, start_steps)."""
    sac_overrides: tuple[str, ...] = ()
    """key=value changes to those SAC hyperparameters (env and steps come from the fields below)."""
    sac_env: str = "Pendulum-v1"
    """Environment of the SAC arm (bounded Box actions)."""
    sac_actors: PosInt = 2
    """Acting actors (one process each in ray mode), each with one env."""
    sac_chunk: PosInt = 50
    """Env steps an acting actor takes per call; their transitions go to the replay actor in one message."""
    sac_steps: PosInt = 10_000
    """Env steps of the SAC arm, over all acting actors."""
    sac_replay_ratio: PosFloat = 1.0
    """Learner updates per env step after start_steps (SAC's one update a step); actors wait while it is behind."""
    sac_broadcast_every: PosInt = 50
    """k: the learner sends its policy's weights to the acting actors every k updates."""
    sac_batches_per_call: PosInt = 10
    """Batches the learner asks the replay actor for in one call (a Ray call costs about 1 ms)."""
    sac_eval_every: PosInt = 2_000
    """Greedy (tanh of the mean) evaluation of the SAC learner every this many env steps."""
    eval_episodes: PosInt = 10
    """Episodes per evaluation (seeds 10000, 10001, ...)."""
    checkpoint_every: PosInt = 20
    """Checkpoint every this many PPO updates, or SAC chunks received (and whenever run.due())."""

    def validate(self) -> None:
        if not self.arms or len(set(self.arms)) != len(self.arms) or set(self.arms) - {"ppo", "sac"}:
            raise SeminalError(f"arms must be distinct among ppo, sac, not {','.join(self.arms) or 'none'}")
        if self.ppo_preset not in ppo.PRESETS or self.sac_preset not in sac.PRESETS:
            raise SeminalError(f"ppo_preset must be one of {', '.join(ppo.PRESETS)} and sac_preset one of "
                               f"{', '.join(sac.PRESETS)}")
        batch = self.ppo_actors * self.ppo_envs_per_actor * self.ppo_rollout
        if "ppo" in self.arms and self.ppo_steps < batch:
            raise SeminalError(f"ppo_steps={self.ppo_steps} is less than one PPO batch ({batch} steps)")
        if "sac" in self.arms and self.sac_steps < self.sac_chunk * self.sac_actors:
            raise SeminalError(f"sac_steps={self.sac_steps} is less than one chunk per acting actor")


PRESETS = {
    # Both arms in ray mode on 2 CPUs, each with one actor SIGKILLed half way and restarted: PPO with paper 11's quick
    # hyperparameters (the same N x T = 8 x 64 batch, split over 2 actors x 4 envs), SAC with paper 14's quick ones.
    "quick": Config(kill_actor_at=0.5),
    # Paper 11's and paper 14's full presets on many actors. Never run.
    "full": Config(ppo_preset="full", ppo_env="LunarLander-v3", ppo_actors=16, ppo_envs_per_actor=1, ppo_rollout=1024,
                   ppo_steps=1_000_000, ppo_eval_every=50_000, ppo_solved=200.0, sac_preset="full",
                   sac_env="LunarLanderContinuous-v3", sac_actors=8, sac_steps=300_000, sac_eval_every=10_000,
                   kill_actor_at=0.5),
}

_KILLED = "one actor SIGKILLed half way and restarted"
CLAIMS = {
    "quick": [
        Claim(f"Distributed PPO (ray mode, 2 rollout actors, {_KILLED}) solves CartPole-v1: greedy return >= 475 "
              "after 100k env steps", "ppo/eval_return", ">=", 475.0,
              "475 = CartPole-v1 reward_threshold; SB3 zoo PPO 500 at 100k steps", "gymnasium; rl-baselines3-zoo",
              bar="peer"),
        Claim(f"Distributed SAC (ray mode, 2 acting actors and a replay actor, {_KILLED}) solves Pendulum-v1: greedy "
              "return >= -200 after 10k env steps", "sac/eval_return", ">=", -200.0,
              "about -150 at 20k steps (SB3 zoo SAC); random policy about -1200",
              "rl-baselines3-zoo benchmark, Pendulum-v1", bar="peer"),
        Claim("Fault tolerance (§5.1): in each arm the killed actor's lost work was collected again from the restarted "
              "actor and the run finished", "fault/recollected", ">=", 2.0,
              "a killed actor is restarted and its lost work re-executed", "Moritz et al. 2018, §4.2.1 and §5.1",
              bar="sanity"),
    ],
    "full": [
        Claim("Distributed PPO (16 rollout actors) solves LunarLander-v3 (greedy return >= 200)", "ppo/eval_return",
              ">=", 200.0, "SB3 zoo PPO 242 +- 31 at 1M steps (LunarLander-v2)", "rl-baselines3-zoo benchmark",
              bar="peer"),
        Claim("Distributed SAC (8 acting actors) lands LunarLanderContinuous-v3", "sac/eval_return", ">=", 200.0,
              "200 = solved (env definition); SB3 zoo SAC about 270", "Gymnasium LunarLander docs; SB3 zoo",
              bar="peer"),
    ],
}


def ppo_config(cfg: Config) -> ppo.Config:
    """Paper 11's Config for the PPO arm: its preset and overrides, with N = actors x envs, T and the env steps."""
    base = apply_overrides(ppo.PRESETS[cfg.ppo_preset], list(cfg.ppo_overrides))
    return replace(base, env_id=cfg.ppo_env, n_envs=cfg.ppo_actors * cfg.ppo_envs_per_actor, n_steps=cfg.ppo_rollout,
                   total_steps=cfg.ppo_steps, ablation=False)


def sac_config(cfg: Config) -> sac.Config:
    """Paper 14's Config for the SAC arm: its preset and overrides, with the env and the env steps."""
    base = apply_overrides(sac.PRESETS[cfg.sac_preset], list(cfg.sac_overrides))
    return replace(base, env_id=cfg.sac_env, total_steps=cfg.sac_steps, cuda_graph=False)


# ---- the learners' steps: papers 11 and 14, on what the actors sent -------------------------------------------
def concat_rollouts(rollouts: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The actors' (T, n) rollouts side by side: one (T, N) batch, as one process stepping all N envs collects."""
    keys = ("obs", "actions", "logp", "values", "rewards", "terminated", "dones", "next_values")
    return {k: np.concatenate([r[k] for r in rollouts], axis=1) for k in keys}


def ppo_learner_step(update: Any, rollouts: list[dict[str, Any]], progress: float,
                     rng: np.random.Generator) -> dict[str, float]:
    """Paper 11's update (GAE Eq. 11, then K epochs of minibatch steps on Eq. 9) on the gathered batch."""
    return update(concat_rollouts(rollouts), progress, rng)


def sac_learner_step(agent: sac.Agent, batch: dict[str, np.ndarray], scfg: sac.Config,
                     target_entropy: float) -> dict[str, torch.Tensor]:
    """Paper 14's `sac_update` (v2 Eq. 3, v1 Eq. 5 and 12, v2 Eq. 18, Polyak) on one batch from the replay actor."""
    s, a, r, s2, terminated = (torch.tensor(batch[k], dtype=torch.float32)  # copies: Ray hands read-only arrays
                               for k in ("obs", "action", "reward", "next_obs", "terminated"))
    return sac.sac_update(agent, (s, a, r, s2, terminated), scfg, target_entropy)


def numpy_weights(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """A snapshot of a module's weights, as NumPy copies: what a broadcast sends."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_weights(module: torch.nn.Module, weights: dict[str, np.ndarray]) -> None:
    module.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in weights.items()})


# ---- the actors (§3.1) ------------------------------------------------------------------------------------------
class RolloutActor:
    """PPO's actors of Algorithm 1, a share of them per process: `n_envs` envs of its own (seeded from the seed and
    its index), rolled out with the weights each call brings. Returns paper 11's (T, n) rollout (`collect`)."""

    def __init__(self, env_id: str, n_envs: int, hidden: tuple[int, ...], shared: bool, seed: int, index: int):
        self.index, self.n_envs = index, n_envs
        start = seed * 10_007 + index * 101
        self.envs = make_vec_env(env_id, n_envs, start, "PPO")
        self.model = ActorCritic(self.envs.single_observation_space.shape[0], self.envs.single_action_space, hidden,
                                 shared)  # its weights come with every call
        self.actor = NumpyActor(self.model, self.envs.single_action_space)
        self.rng = np.random.default_rng([seed, index, 21])
        self.episodes = Episodes(n_envs)
        self.obs = np.asarray(self.envs.reset(seed=start)[0], dtype=np.float32)

    def pid(self) -> int:
        return os.getpid()

    def rollout(self, T: int, weights: dict[str, np.ndarray], version: int) -> dict[str, Any]:
        load_weights(self.model, weights)  # the learner's broadcast
        self.actor.refresh()
        buf, self.obs = collect(self.envs, self.actor, self.obs, T, self.rng, self.episodes, 0)
        finished, self.episodes.returns, self.episodes.steps = self.episodes.returns, [], []
        return {**buf, "steps": T * self.n_envs, "episodes": finished, "version": version, "actor": self.index,
                "pid": os.getpid()}

    def state(self) -> dict[str, Any]:
        return {"envs": env_state(self.envs), "obs": self.obs.copy(), "episodes": self.episodes.state(),
                "rng": json.dumps(self.rng.bit_generator.state)}

    def load(self, state: dict[str, Any]) -> None:
        if not set_env_state(self.envs, state["envs"]):
            raise SeminalError("this env's state cannot be restored; restart the run instead of resuming it")
        self.obs = np.asarray(state["obs"], np.float32).copy()
        self.episodes.load(state["episodes"])
        self.rng.bit_generator.state = json.loads(state["rng"])


class ReplayActor:
    """SAC's replay memory as an actor of its own: a FIFO ring of transitions (s, a, r, s', terminated) that acting
    actors `add` to and the learner `sample`s from, uniformly over the rows written so far."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seed: int):
        C = capacity
        self.data = {"obs": np.zeros((C, obs_dim), np.float32), "action": np.zeros((C, act_dim), np.float32),
                     "reward": np.zeros(C, np.float32), "next_obs": np.zeros((C, obs_dim), np.float32),
                     "terminated": np.zeros(C, np.float32)}
        self.capacity, self.pos, self.size, self.added = C, 0, 0, 0
        self.rng = np.random.default_rng([seed, 21])

    def add(self, batch: dict[str, np.ndarray]) -> int:
        """Write the transitions over the oldest ones; returns how many were ever added."""
        n = len(batch["reward"])
        idx = (self.pos + np.arange(n)) % self.capacity
        for k, v in self.data.items():
            v[idx] = batch[k]
        self.pos, self.size, self.added = (self.pos + n) % self.capacity, min(self.size + n, self.capacity), \
            self.added + n
        return self.added

    def sample(self, batch_size: int, m: int = 1) -> list[dict[str, np.ndarray]]:
        """m uniform minibatches of the filled rows (one call for m: a Ray call costs about 1 ms)."""
        out = []
        for _ in range(m if self.size else 0):
            idx = self.rng.integers(0, self.size, batch_size)
            out.append({k: v[idx] for k, v in self.data.items()})
        return out

    def count(self) -> int:
        return self.added

    def state(self) -> dict[str, Any]:
        return {"data": {k: v[: self.size].copy() for k, v in self.data.items()}, "pos": self.pos, "size": self.size,
                "added": self.added, "rng": json.dumps(self.rng.bit_generator.state)}

    def load(self, state: dict[str, Any]) -> None:
        self.pos, self.size, self.added = int(state["pos"]), int(state["size"]), int(state["added"])
        for k, v in state["data"].items():
            self.data[k][: self.size] = v
        self.rng.bit_generator.state = json.loads(state["rng"])


class ActingActor:
    """One env acting with the SAC policy it was last sent: a ~ pi(.|s) (v1 Eq. 11), or uniform actions during
    start_steps. Each call ends by adding its transitions to the replay actor in one message, waited for, so that
    what the learner counts is in the replay; the learner itself gets counts and episode returns."""

    def __init__(self, env_id: str, hidden: tuple[int, ...], seed: int, replay: Any, index: int):
        self.index, self.replay = index, replay
        self.env = make_env(env_id)
        self.low, self.high = require_box(self.env, env_id, "SAC")
        self.act_dim = self.env.action_space.shape[0]
        self.policy = sac.SquashedGaussianActor(self.env.observation_space.shape[0], self.act_dim, hidden)
        self.rng = np.random.default_rng([seed, index, 21])
        self.gen = torch.Generator().manual_seed(seed * 10_007 + index * 101 + 21)  # the policy's noise eps
        self.obs = np.asarray(self.env.reset(seed=seed * 10_007 + index * 101)[0], np.float32)
        self.ret = 0.0

    def pid(self) -> int:
        return os.getpid()

    @torch.no_grad()
    def act(self, n: int, weights: dict[str, np.ndarray], version: int, uniform: bool) -> dict[str, Any]:
        load_weights(self.policy, weights)
        rows: dict[str, list] = {"obs": [], "action": [], "reward": [], "next_obs": [], "terminated": []}
        episodes = []
        for _ in range(n):
            if uniform:
                u = self.rng.uniform(-1.0, 1.0, self.act_dim).astype(np.float32)
            else:
                mean, log_std = self.policy(torch.as_tensor(self.obs)[None])
                eps = torch.randn(mean.shape, generator=self.gen)
                u = sac.squashed_gaussian(mean, log_std, eps)[0][0].numpy()  # v1 Eq. (11): a = tanh(mu + sigma eps)
            next_obs, r, term, trunc, _ = self.env.step(scale_action(u, self.low, self.high))
            for k, v in zip(rows, (self.obs, u, r, next_obs, term)):  # a time limit is not a terminal state
                rows[k].append(v)
            self.ret += float(r)
            if term or trunc:
                episodes.append(self.ret)
                self.ret, next_obs = 0.0, self.env.reset()[0]  # the env's own generator continues: deterministic
            self.obs = np.asarray(next_obs, np.float32)
        batch = {k: np.asarray(v, np.float32) for k, v in rows.items()}
        result(call(self.replay, "add", batch))  # §3.1: a method call on the replay actor, done before we report
        return {"steps": n, "episodes": episodes, "version": version, "actor": self.index, "pid": os.getpid()}

    def state(self) -> dict[str, Any]:
        return {"env": env_state(self.env), "obs": self.obs.copy(), "ret": self.ret,
                "rng": json.dumps(self.rng.bit_generator.state), "gen": self.gen.get_state()}

    def load(self, state: dict[str, Any]) -> None:
        if not set_env_state(self.env, state["env"]):
            raise SeminalError("this env's state cannot be restored; restart the run instead of resuming it")
        self.obs, self.ret = np.asarray(state["obs"], np.float32).copy(), float(state["ret"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.gen.set_state(state["gen"])


# ---- PPO: rollout actors and a synchronous learner (§5.3.2) ------------------------------------------------------
def gather_rollouts(pool: LocalPool | RayPool, T: int, weights: dict[str, np.ndarray], version: int,
                    kill: bool = False) -> tuple[list[dict[str, Any]], int]:
    """One rollout of T steps from every actor, all with this update's weights, in actor order; and how many were
    lost. A rollout lost with its actor is collected again from the restarted actor, with the same weights (§5.1);
    only rollouts that arrived are returned, one per actor, so no step is counted twice."""
    ref = pool.put(weights)  # §4.2.3: one copy in the object store, read by every actor
    for i in range(len(pool.actors)):
        pool.launch(i, "rollout", T, ref, version)
    if kill:
        pool.kill(0)  # fault injection: actor 0 dies with its rollout in flight
    got, lost = {}, 0
    while pool.pending:
        i, out = pool.next_done()
        if out is LOST:
            lost += 1
            pool.launch(i, "rollout", T, ref, version)  # §5.1: the lost work, re-executed on the restarted actor
        else:
            got[i] = out
    return [got[i] for i in range(len(pool.actors))], lost


def greedy_ppo_return(actor: NumpyActor, env_id: str, episodes: int) -> float:
    actor.refresh()
    return float(np.mean(evaluate(actor.greedy, env_id, episodes)))


def train_ppo_arm(cfg: Config, run: Run, state: dict | None, save: Any) -> dict[str, Any]:
    """Broadcast, gather one rollout per actor, one PPO update on the concatenated batch; repeat (§5.3.2)."""
    pcfg = ppo_config(cfg)
    t_arm = time.perf_counter()
    probe = make_env(cfg.ppo_env)
    obs_dim, space = probe.observation_space.shape[0], probe.action_space
    probe.close()
    with torch.random.fork_rng():  # nn.Linear's default init draws from torch's generator: keep it untouched
        model = ActorCritic(obs_dim, space, pcfg.hidden, pcfg.shared, seed=run.seed)
        pool = make_pool(cfg.mode, RolloutActor, (cfg.ppo_env, cfg.ppo_envs_per_actor, pcfg.hidden, pcfg.shared,
                                                  run.seed), cfg.ppo_actors, cfg.max_restarts)
    opt = torch.optim.Adam(model.parameters(), lr=pcfg.lr, eps=1e-5)  # paper 11's optimizer
    update = ppo.make_update(model, opt, pcfg)
    rng = np.random.default_rng(run.seed)  # minibatch order
    batch = pcfg.n_envs * pcfg.n_steps
    n_updates = cfg.ppo_steps // batch
    kill_at = int(cfg.kill_actor_at * n_updates) if cfg.kill_actor_at > 0 else -1
    greedy = NumpyActor(model, space)
    s: dict[str, Any] = {"update": 0, "env_steps": 0, "recollected": 0, "evals": [], "episodes": []}
    try:
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            rng.bit_generator.state = json.loads(state["rng"])
            pool.load(state["actors"])
            s = {k: state[k] for k in s}
        bar = run.progress(total=n_updates, initial=s["update"], desc="ppo", unit="update")
        t0 = time.perf_counter()
        while s["update"] < n_updates:
            u = s["update"]
            rollouts, lost = gather_rollouts(pool, pcfg.n_steps, numpy_weights(model), u, kill=u == kill_at)
            info = ppo_learner_step(update, rollouts, u / n_updates, rng)
            s["update"] = u = u + 1
            s["env_steps"] += sum(r["steps"] for r in rollouts)  # only what the learner used, each rollout once
            s["recollected"] += lost
            s["episodes"] += [[s["env_steps"], ret] for r in rollouts for ret in r["episodes"]]
            bar.update()
            step = s["env_steps"]
            if u % 10 == 0 or u == n_updates:
                for key, value in info.items():
                    run.check_finite(value, step, what=key, hint="ppo_overrides=lr")
                recent = [r for _, r in s["episodes"][-20:]]
                run.log({"ppo/return": float(np.mean(recent)) if recent else 0.0,
                         **{f"ppo/{k}": v for k, v in info.items()},
                         "ppo/steps_per_s": step / max(time.perf_counter() - t0, 1e-9)}, step=step)
            if (cfg.ppo_eval_every and step // cfg.ppo_eval_every > (step - batch) // cfg.ppo_eval_every) \
                    or u == n_updates:
                s["evals"].append([step, greedy_ppo_return(greedy, cfg.ppo_env, cfg.eval_episodes)])
                run.log({"ppo/eval_return": s["evals"][-1][1]}, step=step)
                bar.set_postfix(eval=f"{s['evals'][-1][1]:.0f}", refresh=False)
            if u < n_updates and (u % cfg.checkpoint_every == 0 or run.due()):
                save({**s, "model": model.state_dict(), "opt": opt.state_dict(),
                      "rng": json.dumps(rng.bit_generator.state), "actors": pool.state()})
        bar.close()
        restarts = sum(pool.restarts)
    finally:
        pool.close()
    solved = next((st for st, r in s["evals"] if r >= cfg.ppo_solved), math.nan)
    last = [r for _, r in s["episodes"][-100:]]
    return {"return": s["evals"][-1][1], "solved_at": solved, "env_steps": s["env_steps"], "updates": s["update"],
            "recollected": s["recollected"], "restarts": restarts, "evals": s["evals"],
            "train_return": float(np.mean(last)) if last else math.nan, "episodes": s["episodes"],
            "seconds": time.perf_counter() - t_arm}


# ---- SAC: acting actors, a replay actor and a learner ------------------------------------------------------------
def train_sac_arm(cfg: Config, run: Run, state: dict | None, save: Any) -> dict[str, Any]:
    """Acting actors push chunks of transitions to the replay actor; the learner samples it for SAC updates while it
    is behind the replay ratio, else takes the next finished chunk (`ray.wait`) and relaunches that actor with the
    newest weights (sent every k updates). Local mode runs the same loop with the calls in turn."""
    scfg = sac_config(cfg)
    t_arm = time.perf_counter()
    probe = make_env(cfg.sac_env)
    low, high = require_box(probe, cfg.sac_env, "SAC")
    obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    probe.close()
    target_entropy = -float(act_dim) if scfg.target_entropy is None else scfg.target_entropy  # SAC v2 §5
    torch.manual_seed(run.seed)  # the arm's networks and policy noise from the seed alone, whatever ran before
    agent = sac.make_agent(obs_dim, act_dim, scfg)
    capacity = min(scfg.buffer_size, cfg.sac_steps)
    if cfg.mode == "ray":
        replay = import_ray().remote(num_cpus=0)(ReplayActor).remote(capacity, obs_dim, act_dim, run.seed)
    else:
        replay = ReplayActor(capacity, obs_dim, act_dim, run.seed)
    pool = make_pool(cfg.mode, ActingActor, (cfg.sac_env, scfg.hidden, run.seed, replay), cfg.sac_actors,
                     cfg.max_restarts)
    chunk, total, m = cfg.sac_chunk, cfg.sac_steps, cfg.sac_batches_per_call
    kill_step = int(cfg.kill_actor_at * total) if cfg.kill_actor_at > 0 else None
    s: dict[str, Any] = {"updates": 0, "steps": 0, "launched": 0, "version": 0, "chunks": 0, "recollected": 0,
                         "killed": False, "queue": [], "evals": [], "episodes": [], "info": {}}
    weights = numpy_weights(agent.actor)
    prefetched = None
    try:
        if state is None:
            for i in range(cfg.sac_actors):
                pool.launch(i, "act", chunk, pool.put(weights), 0, s["launched"] < scfg.start_steps)
                s["launched"] += chunk
        else:
            agent.load_state_dict(state["agent"])
            result(call(replay, "load", state["replay"]))
            pool.load(state["actors"])
            s, weights, prefetched = {k: state[k] for k in s}, state["weights"], state["prefetched"]
            torch.set_rng_state(state["torch_rng"])  # as at the checkpoint, whatever was built since the restore
        weights_ref = pool.put(weights)
        bar = run.progress(total=total, initial=s["steps"], desc="sac", unit="step")
        while True:
            target = int(cfg.sac_replay_ratio * max(0, s["steps"] - scfg.start_steps))
            if s["updates"] < target:  # behind: learn on batches asked for one call earlier (prefetched)
                if not s["queue"]:
                    s["queue"] = result(prefetched) if prefetched is not None else \
                        result(call(replay, "sample", scfg.batch_size, m))
                    prefetched = call(replay, "sample", scfg.batch_size, m)
                info = sac_learner_step(agent, s["queue"].pop(0), scfg, target_entropy)
                s["updates"] += 1
                if s["updates"] % cfg.sac_broadcast_every == 0:  # k updates: the new policy goes to the actors
                    weights, s["version"] = numpy_weights(agent.actor), s["updates"]
                    weights_ref = pool.put(weights)
                if s["updates"] % 100 == 0:
                    s["info"] = {k: float(v) for k, v in info.items()}
                continue
            if not pool.pending:
                break
            i, out = pool.next_done()  # caught up: the next chunk to finish
            if out is LOST:
                s["recollected"] += 1
                s["launched"] -= chunk  # its steps never reached the replay actor: they are taken again
            else:
                s["steps"] += out["steps"]
                s["chunks"] += 1
                s["episodes"] += [[s["steps"], r] for r in out["episodes"]]
                bar.update(out["steps"])
            if s["launched"] + chunk <= total:
                pool.launch(i, "act", chunk, weights_ref, s["version"], s["launched"] < scfg.start_steps)
                s["launched"] += chunk
                if kill_step is not None and not s["killed"] and s["steps"] >= kill_step and i == 0:
                    s["killed"] = True  # right after its launch, so that the chunk is surely in flight (a finished
                    pool.kill(0)  # one would survive in the object store): fault injection, actor 0 dies with it
            step = s["steps"]
            if out is not LOST and step < total and step // cfg.sac_eval_every > (step - chunk) // cfg.sac_eval_every:
                policy = sac.SquashedGaussianPolicy(agent.actor, low, high)
                s["evals"].append([step, float(np.mean(evaluate(policy, cfg.sac_env, cfg.eval_episodes)))])
                recent = [r for _, r in s["episodes"][-10:]]
                run.log({"sac/eval_return": s["evals"][-1][1], "sac/return": float(np.mean(recent)) if recent else 0,
                         **{f"sac/{k}": v for k, v in s["info"].items()}}, step=step)
                bar.set_postfix(eval=f"{s['evals'][-1][1]:.0f}", refresh=False)
            if pool.pending and out is not LOST and (s["chunks"] % cfg.checkpoint_every == 0 or run.due()):
                save({**s, "agent": agent.state_dict(), "replay": result(call(replay, "state")),
                      "actors": pool.state(), "weights": weights,
                      "prefetched": result(prefetched) if prefetched is not None else None,
                      "torch_rng": torch.get_rng_state()})
        bar.close()
        added = result(call(replay, "count"))  # transitions the learner could sample: each env step once
        restarts = sum(pool.restarts)
    finally:
        pool.close()
        if cfg.mode == "ray":
            import_ray().kill(replay)
    policy = sac.SquashedGaussianPolicy(agent.actor, low, high)  # the final policy, after its last updates
    s["evals"].append([s["steps"], float(np.mean(evaluate(policy, cfg.sac_env, cfg.eval_episodes)))])
    run.log({"sac/eval_return": s["evals"][-1][1]}, step=s["steps"])
    return {"return": s["evals"][-1][1], "env_steps": added, "updates": s["updates"], "recollected": s["recollected"],
            "restarts": restarts, "evals": s["evals"], "episodes": s["episodes"],
            "seconds": time.perf_counter() - t_arm}


# ---- both arms ---------------------------------------------------------------------------------------------------
def train(cfg: Config, run: Run) -> dict[str, float]:
    cfg.validate()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: intra-op threads only add synchronisation
    try:
        if cfg.mode == "local":
            return _train(cfg, run, 0.0)
        with ray_session(max(cfg.ppo_actors, cfg.sac_actors), cfg.ray_address) as info:
            return _train(cfg, run, info["startup_seconds"])
    finally:
        torch.set_num_threads(threads)


def _train(cfg: Config, run: Run, startup_seconds: float) -> dict[str, float]:
    """The arms in turn; a checkpoint inside an arm (between its updates) and after each."""
    state = run.restore() or {"done": {}, "arm": None}
    done = dict(state["done"])
    arms = {"ppo": train_ppo_arm, "sac": train_sac_arm}
    for name in cfg.arms:
        if name in done:
            continue

        def save(arm_state, name=name):
            run.checkpoint({"done": done, "arm": {"name": name, **arm_state}})

        resume = state["arm"] if state["arm"] is not None and state["arm"]["name"] == name else None
        done[name] = arms[name](cfg, run, resume, save)
        state["arm"] = None
        run.checkpoint({"done": done, "arm": None})
    metrics = {"train/ray_startup_seconds": startup_seconds, "train/seconds": run.elapsed}
    for name, d in done.items():
        metrics |= {f"{name}/eval_return": d["return"], **{f"{name}/{k}": float(v) for k, v in d.items()
                                                            if k not in ("return", "evals", "episodes")}}
    metrics["fault/recollected"] = float(sum(d["recollected"] for d in done.values()))
    run.log(metrics, step=max(cfg.ppo_steps, cfg.sac_steps))
    for name, d in done.items():
        line_plot(run.plots_dir / f"{name}_return.png",
                  {"greedy evaluation": ([e[0] for e in d["evals"]], [e[1] for e in d["evals"]]),
                   "training episodes": ([e[0] for e in d["episodes"]], [e[1] for e in d["episodes"]])},
                  xlabel="env steps (used by the learner)", ylabel="return",
                  title=f"Distributed {name.upper()} on {cfg.ppo_env if name == 'ppo' else cfg.sac_env} ({cfg.mode})",
                  hline=cfg.ppo_solved if name == "ppo" else -200.0 if cfg.sac_env == "Pendulum-v1" else None)
    return metrics
