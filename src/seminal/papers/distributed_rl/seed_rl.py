"""SEED RL: Scalable and efficient deep-RL with accelerated central inference — Espeholt, Marinier, Stanczyk, Wang &
Michalski, ICLR 2020 (arXiv:1910.06591).

IMPALA's actors each hold a copy of the policy and run it themselves. SEED moves inference to the learner: an actor
holds only its environments and, at every step, sends the observation (with the reward and done of its last step)
to one central inference server and waits for the action. The server holds the policy, batches the requests of all
actors (dynamic batching: it runs the network once `batch_size` requests have arrived, or `timeout` after the first
of them), samples the actions, and logs each env's trajectory (obs, action, reward, behaviour log-prob, done) into
unrolls that go straight to the learner. The learner is IMPALA's: V-trace on those unrolls (`impala.learner_step`,
imported). Inference always uses the learner's newest parameters, so the policy lag is at most the updates made
while an unroll was being played. The price is one round trip per env step, so the latency of that round trip and
the batching of requests decide the throughput.

Section map (arXiv v2):
  §3  central inference: actors send (obs, reward, done), the server replies with the action
      -> `EnvActor`, `InferenceServer.submit` / `flush`, `RayInferenceServer.infer`
  §3  dynamic batching: run the network at batch_size requests, or timeout after the first of a batch
      -> `InferenceServer.submit`, `RayInferenceServer.infer` / `_flush`, `LocalSEED.round`
  §3  the server logs trajectories into unrolls of T steps (+1 bootstrap observation) for the learner
      -> `InferenceServer._log`, `InferenceServer.take`
  §3  the learner: V-trace (IMPALA Eq. (1), §4.2) on the logged unrolls, inference on its newest weights
      -> `impala.learner_step` (reused), `train_learner`
  §4  throughput (env steps/s) and latency of central against per-actor inference at the same number of envs,
      and of batched against unbatched central inference, in one process (the claims) and on Ray (reported: on
      2 cores the round trip per step, not the network, sets the pace) -> `bench_central`, `bench_per_actor`
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from seminal.core.claims import Claim
from seminal.core.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Prob, Sizes
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.rl import env_state, make_env, set_env_state
from seminal.core.run import Run
from seminal.papers.distributed_rl import impala
from seminal.papers.distributed_rl._actors import (
    env_spaces,
    import_ray,
    make_actors,
    numpy_logits,
    policy_weights,
    ray_session,
    sample,
    stack,
)


@dataclass(frozen=True)
class Config:
    env_id: str = "CartPole-v1"
    """Environment id (discrete actions, flat observations)."""
    mode: Literal["local", "ray"] = "local"
    """Where the learning run runs. local: env actors and the server are objects in this process, in lockstep
    (deterministic, resumes exactly); ray: each env actor a Ray actor, the server one async Ray actor."""
    ray_address: str | None = None
    """Ray cluster to join (e.g. auto); none: start a local Ray with n_actors CPUs."""
    n_actors: PosInt = 8
    """Env actors (each one process in ray mode); every arm of a run has this many."""
    envs_per_actor: PosInt = 4
    """Environments each actor steps together and sends in one request (SEED's env_batch_size)."""
    batch_size: PosInt = 8
    """Dynamic batching: the server runs the network once this many requests (actors) have arrived (§3)."""
    timeout_ms: PosFloat = 5.0
    """... or this many milliseconds after the first request of a batch arrived, with what it has (§3)."""
    unroll_length: PosInt = 20
    """T: steps of each env per logged unroll (the paper's 20 on Atari as IMPALA; its unrolls overlap by one)."""
    batch_unrolls: PosInt = 8
    """Unrolls (envs_per_actor columns each) in a learner batch: 8 x 4 columns of 20 steps, IMPALA quick's 640."""
    max_queue: PosInt = 16
    """Ray learning: completed unrolls waiting for the learner at most; past it, requests wait (SEED's bounded
    unroll queue, which holds the actors back when the learner falls behind)."""
    total_steps: PosInt = 200_000
    """Environment steps the learner trains on, over all envs."""
    gamma: Prob = 0.99
    """Discount gamma."""
    rho_bar: PosFloat = 1.0
    """V-trace rho_bar (IMPALA Eq. 1)."""
    c_bar: PosFloat = 1.0
    """V-trace c_bar (IMPALA Eq. 1)."""
    pg_rho_bar: PosFloat = 1.0
    """Truncation of the policy gradient's importance weight (IMPALA §4.2)."""
    lam: Prob = 1.0
    """lambda of the traces c_i (1: plain V-trace)."""
    baseline_cost: NonNegFloat = 0.5
    """Weight of the baseline loss."""
    entropy_cost: NonNegFloat = 0.01
    """Weight of the entropy bonus."""
    lr: PosFloat = 5e-4
    """Learning rate, annealed linearly to 0 when anneal_lr."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over training."""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """RMSProp (decay 0.99, momentum 0, IMPALA's) or Adam (SEED's own Atari setting)."""
    rms_eps: PosFloat = 0.01
    """RMSProp's epsilon."""
    max_grad_norm: NonNegFloat = 40.0
    """Clip the global gradient norm to this (0: off)."""
    hidden: Sizes = (64, 64)
    """Hidden sizes of the policy and value MLPs (tanh); the inference server runs the policy MLP."""
    eval_every: NonNegInt = 20_000
    """Evaluate the learner's greedy policy every this many env steps (0: only at the end)."""
    eval_episodes: PosInt = 10
    """Episodes per evaluation (seeds 10000, 10001, ...)."""
    solved_return: float = 475.0
    """An evaluation at or above this counts as solved (eval/solved_at: its env step)."""
    bench_steps: NonNegInt = 3000
    """Requests (steps of its envs) each env actor makes in each local-mode throughput arm (0: none)."""
    ray_bench_steps: NonNegInt = 200
    """The same for the ray-mode throughput arms (0: none)."""
    bench_warmup: NonNegInt = 50
    """Untimed requests per env actor before each throughput arm (processes started, caches warm)."""
    checkpoint_every: PosInt = 100
    """Checkpoint the learning run every this many learner updates (and whenever run.due())."""

    @property
    def n_envs(self) -> int:
        return self.n_actors * self.envs_per_actor

    @property
    def steps_per_update(self) -> int:
        return self.batch_unrolls * self.envs_per_actor * self.unroll_length

    def learner_cfg(self) -> impala.Config:
        """IMPALA's config with this run's learner settings: what `impala.learner_step` reads."""
        keys = ("env_id", "gamma", "rho_bar", "c_bar", "pg_rho_bar", "lam", "baseline_cost", "entropy_cost", "lr",
                "anneal_lr", "optimizer", "rms_eps", "max_grad_norm", "hidden", "eval_episodes")
        return impala.Config(**{k: getattr(self, k) for k in keys})

    def validate(self) -> None:
        if self.batch_size > self.n_actors:
            raise SeminalError(f"batch_size={self.batch_size} requests can never arrive from n_actors="
                               f"{self.n_actors} actors (each waits for its reply); use batch_size <= n_actors")
        if self.mode == "ray" and self.max_queue < self.batch_unrolls:
            raise SeminalError(f"max_queue={self.max_queue} unrolls can never fill a batch of batch_unrolls="
                               f"{self.batch_unrolls} (the actors would wait for the learner, the learner for them)")
        if self.total_steps < self.steps_per_update:
            raise SeminalError(f"total_steps must cover one update ({self.steps_per_update} steps)")


PRESETS = {
    # CartPole-v1, 8 env actors x 4 envs (32 envs), batch_size 8. Throughput arms (batched and unbatched central
    # inference, IMPALA's per-actor inference) in local mode (the claims) and on Ray (reported), then the V-trace
    # learner for 200k env steps in local mode.
    "quick": Config(),
    # The paper's scale where it applies: many actors, batches of 8 unrolls x 4 envs, everything on Ray, LunarLander.
    "full": Config(env_id="LunarLander-v3", mode="ray", n_actors=64, envs_per_actor=4, batch_size=64,
                   timeout_ms=10.0, batch_unrolls=16, total_steps=50_000_000, lr=6e-4, hidden=(256, 256),
                   eval_every=1_000_000, solved_return=200.0, bench_steps=10_000, ray_bench_steps=10_000,
                   checkpoint_every=2000),
}

_GYM = "gymnasium CartPole-v1 reward_threshold (475)"
_FIG = ("§3 and §4: central batched inference gives more env steps/s than IMPALA's per-actor "
        "inference on the same hardware and number of envs")
_BATCH = ("§3: batching the actors' requests is what makes central inference efficient (one network run per "
          "batch)")
CLAIMS = {
    "quick": [
        Claim("central batched inference (one network run per batch of the 8 actors' requests) steps CartPole-v1 "
              "faster than IMPALA's per-actor inference at the same 32 envs, actors and server in one process "
              "(local mode; on Ray the 2 cores' message round trips cap it: reported, not claimed)",
              "bench/central_minus_per_actor_steps_per_s", ">", 0.0, "SEED > IMPALA in env steps/s", _FIG,
              bar="sanity", paired=("central/steps_per_s", "per_actor/steps_per_s")),
        Claim("batched central inference (batch_size 8) steps faster than unbatched central inference "
              "(batch_size 1), same 32 envs, local mode", "bench/batched_minus_unbatched_steps_per_s", ">", 0.0,
              "batching raises throughput", _BATCH, bar="sanity",
              paired=("central/steps_per_s", "unbatched/steps_per_s")),
        Claim("SEED's V-trace learner solves CartPole-v1: greedy return >= 475 after 200k env steps",
              "eval/return", ">=", 475.0, "475 = CartPole-v1 solved", _GYM, bar="peer"),
    ],
    "full": [Claim("SEED solves LunarLander-v3 (greedy return >= 200)", "eval/return", ">=", 200.0, "200 = solved",
                   "gymnasium LunarLander-v3 reward_threshold", bar="peer")],
}


# ---- the env actor: environments only (§3) ---------------------------------------------------------------------
class EnvActor:
    """`n_envs` copies of `env_id` (seeded from (seed, index, env) as IMPALA's actors) and no policy. `request()` is
    what it sends each step: its current observations with the reward, terminated, truncated and (where truncated)
    final observation of its last step; `step(actions)` applies the server's reply (autoreset: an ended episode's
    next observation is the new episode's first)."""

    def __init__(self, env_id: str, n_envs: int, seed: int, index: int):
        self.index = index
        self.envs = [make_env(env_id) for _ in range(n_envs)]
        self.obs = np.stack([env.reset(seed=seed * 10_007 + index * 101 + i)[0] for i, env in enumerate(self.envs)])
        self.obs = self.obs.astype(np.float32)
        self.reward = np.zeros(n_envs, np.float32)
        self.terminated, self.truncated = np.zeros(n_envs, bool), np.zeros(n_envs, bool)
        self.final_obs = np.zeros_like(self.obs)

    def request(self) -> dict[str, Any]:
        return {"actor": self.index, "obs": self.obs.copy(), "reward": self.reward.copy(),
                "terminated": self.terminated.copy(), "truncated": self.truncated.copy(),
                "final_obs": self.final_obs.copy()}

    def step(self, actions: np.ndarray) -> None:
        self.final_obs[:] = 0.0
        for i, env in enumerate(self.envs):
            o, r, term, trunc, _ = env.step(int(actions[i]))
            self.reward[i], self.terminated[i], self.truncated[i] = r, term, trunc and not term
            if term or trunc:
                if trunc and not term:
                    self.final_obs[i] = o
                o, _ = env.reset()  # the env's own generator continues: deterministic
            self.obs[i] = o

    def ready(self) -> bool:
        return True

    def run(self, server: Any, n_steps: int | None = None) -> dict[str, float]:
        """Ray mode: request, wait for the action, step; n_steps times, or until the server answers None (stopped).
        Returns the steps made and the mean latency (request sent to action received, seconds)."""
        ray, steps, waited = import_ray(), 0, 0.0
        while n_steps is None or steps < n_steps:
            t0 = time.perf_counter()
            actions = ray.get(server.infer.remote(self.request()))  # §3: one round trip per env step
            waited += time.perf_counter() - t0
            if actions is None:
                break
            self.step(actions)
            steps += 1
        return {"steps": steps * len(self.envs), "requests": steps, "latency": waited / max(steps, 1)}

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def state(self) -> dict[str, Any]:
        return {"envs": [env_state(env) for env in self.envs], "obs": self.obs.copy(), "reward": self.reward.copy(),
                "terminated": self.terminated.copy(), "truncated": self.truncated.copy(),
                "final_obs": self.final_obs.copy()}

    def load(self, state: dict[str, Any]) -> None:
        if not all(set_env_state(env, s) for env, s in zip(self.envs, state["envs"])):
            raise SeminalError("this env's state cannot be restored; restart the run instead of resuming it")
        for k in ("obs", "reward", "terminated", "truncated", "final_obs"):
            setattr(self, k, np.array(state[k]))


# ---- the central inference server (§3) -------------------------------------------------------------------------
_LOG = {"obs": np.float32, "actions": np.int64, "behaviour_logp": np.float32, "rewards": np.float32,
        "terminated": bool, "truncated": bool, "final_obs": np.float32}


class InferenceServer:
    """The policy, dynamic batching and the trajectory log. `submit(request)` queues a request and says whether a
    batch is full (batch_size requests); `flush()` runs the network once on the queued requests (at most
    batch_size), samples each env's action with that env's own generator (so batching never changes an action),
    logs the step and returns {actor: actions}. Completed unrolls wait in `ready` until the learner `take`s them."""

    def __init__(self, n_actors: int, n_envs: int, obs_dim: int, T: int, batch_size: int, seed: int):
        self.E, self.D, self.T, self.batch_size = n_envs, obs_dim, T, batch_size
        self.rngs = [np.random.default_rng([seed, g, 19]) for g in range(n_actors * n_envs)]
        self.weights: list[np.ndarray] | None = None
        self.version = -1
        self.pending: list[dict[str, Any]] = []
        self.buf = [self._empty() for _ in range(n_actors)]
        self.t = [0] * n_actors  # steps of the actor's current unroll whose outcome is logged
        self.awaiting = [False] * n_actors  # its last step's action was sent, its reward not yet received
        self.ep_ret = np.zeros((n_actors, n_envs))
        self.episodes: list[list[float]] = [[] for _ in range(n_actors)]  # ended in the unroll being logged
        self.ready: list[dict[str, Any]] = []
        self.flushes: list[list[int]] = []  # which actors each network run served (tests, batch-size metric)

    def _empty(self) -> dict[str, np.ndarray]:
        T, E, D = self.T, self.E, self.D
        shapes = {"obs": (T + 1, E, D), "final_obs": (T, E, D)}
        return {k: np.zeros(shapes.get(k, (T, E)), dt) for k, dt in _LOG.items()} | {"versions": np.zeros(T, int)}

    def set_weights(self, weights: list[np.ndarray], version: int) -> None:
        self.weights, self.version = [np.asarray(w) for w in weights], int(version)

    def submit(self, request: dict[str, Any]) -> bool:
        self.pending.append(request)
        return len(self.pending) >= self.batch_size  # §3: a full batch runs at once

    def flush(self) -> dict[int, np.ndarray]:
        if self.weights is None:
            raise SeminalError("the inference server was asked to act before it was sent weights")
        batch, self.pending = self.pending[:self.batch_size], self.pending[self.batch_size:]
        if not batch:
            return {}
        obs = np.concatenate([r["obs"] for r in batch])  # (requests x E, D): one network run for the batch
        logits = numpy_logits(self.weights, obs)
        u = np.array([self.rngs[r["actor"] * self.E + j].random() for r in batch for j in range(self.E)])
        actions, logp = sample_with(logits, u)
        self.flushes.append([r["actor"] for r in batch])
        out = {}
        for k, r in enumerate(batch):
            rows = slice(k * self.E, (k + 1) * self.E)
            self._log(r, actions[rows], logp[rows])
            out[r["actor"]] = actions[rows]
        return out

    def _log(self, r: dict[str, Any], actions: np.ndarray, logp: np.ndarray) -> None:
        """§3: complete the actor's last step with the reward/done this request brings, emit the unroll once it
        has T steps (its last observation, this one, is the bootstrap and the next unroll's first), then log this
        step's observation, action and behaviour log-probability mu(a|x)."""
        i, buf = r["actor"], self.buf[r["actor"]]
        if self.awaiting[i]:
            t = self.t[i]
            buf["rewards"][t], buf["terminated"][t], buf["truncated"][t] = r["reward"], r["terminated"], r["truncated"]
            buf["final_obs"][t] = r["final_obs"]
            self.ep_ret[i] += r["reward"]
            ended = r["terminated"] | r["truncated"]
            self.episodes[i] += self.ep_ret[i][ended].tolist()
            self.ep_ret[i][ended] = 0.0
            self.t[i] = t = t + 1
            if t == self.T:
                buf["obs"][t] = r["obs"]
                self.ready.append({k: v.copy() for k, v in buf.items()} | {
                    "actor": i, "episodes": self.episodes[i], "version": int(buf["versions"].min())})
                self.episodes[i], self.t[i] = [], 0
        t = self.t[i]
        buf["obs"][t], buf["actions"][t], buf["behaviour_logp"][t] = r["obs"], actions, logp
        buf["versions"][t] = self.version
        self.awaiting[i] = True

    def take(self, k: int) -> list[dict[str, Any]]:
        """The k oldest completed unrolls (all of them while fewer are ready)."""
        out, self.ready = self.ready[:k], self.ready[k:]
        return out

    def state(self) -> dict[str, Any]:
        return {"rngs": [json.dumps(g.bit_generator.state) for g in self.rngs], "weights": self.weights,
                "version": self.version, "buf": self.buf, "t": list(self.t), "awaiting": list(self.awaiting),
                "ep_ret": self.ep_ret.copy(), "episodes": self.episodes, "ready": self.ready}

    def load(self, state: dict[str, Any]) -> None:
        for g, s in zip(self.rngs, state["rngs"]):
            g.bit_generator.state = json.loads(s)
        if state["weights"] is not None:
            self.set_weights(state["weights"], state["version"])
        self.buf = [{k: np.array(v) for k, v in b.items()} for b in state["buf"]]
        self.t, self.awaiting = [int(x) for x in state["t"]], [bool(x) for x in state["awaiting"]]
        self.ep_ret, self.episodes = np.array(state["ep_ret"], float), [list(e) for e in state["episodes"]]
        self.ready = [{k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in u.items()}
                      for u in state["ready"]]


def sample_with(logits: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_actors.sample` with the uniforms given, one per row (each env's own): actions by the inverse CDF of
    softmax(logits), and their log-probabilities."""
    return sample(logits, _Given(u))


class _Given:
    """A stand-in generator whose `random((n, 1))` returns the uniforms given."""

    def __init__(self, u: np.ndarray):
        self.u = u

    def random(self, shape: tuple[int, int]) -> np.ndarray:
        return self.u.reshape(shape)


class RayInferenceServer:
    """The server as an async Ray actor: every env actor's `infer` call waits in it (a coroutine) until the batch
    holding its request has run. A batch runs when batch_size requests are in, or timeout after its first (§3)."""

    def __init__(self, timeout_s: float, max_queue: int | None, *args: Any):
        self.core, self.timeout, self.max_queue = InferenceServer(*args), timeout_s, max_queue
        self.waiting: dict[int, asyncio.Future] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.stopped = False

    async def infer(self, request: dict[str, Any]) -> np.ndarray | None:
        while self.max_queue and len(self.core.ready) >= self.max_queue and not self.stopped:
            await asyncio.sleep(0.0005)  # the learner is behind: hold this actor back
        if self.stopped:
            return None
        loop = asyncio.get_running_loop()
        self.waiting[request["actor"]] = reply = loop.create_future()
        if self.core.submit(request):
            self._flush()  # §3: a full batch
        elif self.timer is None:
            self.timer = loop.call_later(self.timeout, self._flush)  # §3: timeout after the batch's first request
        return await reply

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for actor, actions in self.core.flush().items():
            self.waiting.pop(actor).set_result(actions)

    async def set_weights(self, weights: list[np.ndarray], version: int) -> None:
        self.core.set_weights(weights, version)

    async def take(self, k: int) -> list[dict[str, Any]]:
        """k completed unrolls, waiting for them (the learner's queue)."""
        while len(self.core.ready) < k:
            await asyncio.sleep(0.001)
        return self.core.take(k)

    async def stop(self) -> None:
        """Answer None to every waiting and later request: the env actors' loops end."""
        self.stopped = True
        for reply in self.waiting.values():
            reply.set_result(None)
        self.waiting.clear()

    async def flushes(self) -> list[list[int]]:
        return self.core.flushes

    async def state(self) -> dict[str, Any]:
        return self.core.state()


# ---- the system: env actors and one server, in this process or on Ray ----------------------------------------
class LocalSEED:
    """Env actors and the server as objects in this process. Each `round` every actor sends one request, in turn;
    the server runs its network whenever batch_size are queued and, at the round's end, on the rest (what the
    timeout does when no more requests can arrive). Deterministic for a seed."""

    def __init__(self, cfg: Config, obs_dim: int, seed: int, batch_size: int):
        self.server = InferenceServer(cfg.n_actors, cfg.envs_per_actor, obs_dim, cfg.unroll_length, batch_size, seed)
        self.actors = [EnvActor(cfg.env_id, cfg.envs_per_actor, seed, i) for i in range(cfg.n_actors)]
        self.latency, self.requests = 0.0, 0

    def round(self) -> None:
        replies, sent = {}, {}
        for actor in self.actors:
            sent[actor.index] = time.perf_counter()
            if self.server.submit(actor.request()):
                replies |= self.server.flush()
        while self.server.pending:
            replies |= self.server.flush()  # the timeout: nothing more can arrive this round
        now = time.perf_counter()
        for actor in self.actors:
            actor.step(replies[actor.index])
        self.latency += sum(now - t for t in sent.values())  # in lockstep every reply is handed out at the end
        self.requests += len(self.actors)

    def unrolls(self, k: int) -> list[dict[str, Any]]:
        while len(self.server.ready) < k:
            self.round()
        return self.server.take(k)

    def set_weights(self, weights: list[np.ndarray], version: int) -> None:
        self.server.set_weights(weights, version)

    def state(self) -> dict[str, Any]:
        return {"server": self.server.state(), "actors": [a.state() for a in self.actors]}

    def load(self, state: dict[str, Any]) -> None:
        self.server.load(state["server"])
        for actor, s in zip(self.actors, state["actors"]):
            actor.load(s)

    def close(self) -> None:
        for actor in self.actors:
            actor.close()


class RaySEED:
    """Each env actor a Ray actor (one CPU) running its request loop; the server an async Ray actor (no CPU of its
    own) that the learner takes unrolls from and sends its weights to. Asynchronous, not bitwise deterministic."""

    def __init__(self, cfg: Config, obs_dim: int, seed: int, batch_size: int, max_queue: int | None = None):
        self.ray = ray = import_ray()
        self.server = ray.remote(num_cpus=0)(RayInferenceServer).remote(
            cfg.timeout_ms / 1000, max_queue, cfg.n_actors, cfg.envs_per_actor, obs_dim, cfg.unroll_length,
            batch_size, seed)
        self.actors = [ray.remote(num_cpus=1)(EnvActor).remote(cfg.env_id, cfg.envs_per_actor, seed, i)
                       for i in range(cfg.n_actors)]
        ray.get([a.ready.remote() for a in self.actors])
        self.loops: list | None = None

    def run(self, n_steps: int) -> list[dict[str, float]]:
        """Every actor's loop for n_steps requests, all at once; their stats."""
        return self.ray.get([a.run.remote(self.server, n_steps) for a in self.actors])

    def unrolls(self, k: int) -> list[dict[str, Any]]:
        if self.loops is None:
            self.loops = [a.run.remote(self.server) for a in self.actors]  # until the server stops
        return self.ray.get(self.server.take.remote(k))

    def set_weights(self, weights: list[np.ndarray], version: int) -> None:
        self.ray.get(self.server.set_weights.remote(weights, version))

    def state(self) -> dict[str, Any]:
        """The server's state only (the env actors are busy in their loops): a resumed ray run restarts its envs."""
        return {"server": self.ray.get(self.server.state.remote()), "actors": None}

    def load(self, state: dict[str, Any]) -> None:
        weights = state["server"]["weights"]
        if weights is not None:
            self.set_weights(weights, state["server"]["version"])

    def close(self) -> None:
        self.ray.get(self.server.stop.remote())
        if self.loops is not None:
            self.ray.get(self.loops)
        for actor in self.actors:
            self.ray.kill(actor)
        self.ray.kill(self.server)


def make_system(mode: str, cfg: Config, obs_dim: int, seed: int, batch_size: int,
                learning: bool = False) -> LocalSEED | RaySEED:
    """The env actors and the server in this process (local) or on Ray; a learning system's Ray server bounds its
    unroll queue (max_queue), a throughput arm's does not (nobody takes its unrolls)."""
    if mode == "local":
        return LocalSEED(cfg, obs_dim, seed, batch_size)
    return RaySEED(cfg, obs_dim, seed, batch_size, cfg.max_queue if learning else None)


# ---- throughput and latency (§4) --------------------------------------------------------------------------------
def bench_central(cfg: Config, mode: str, n_steps: int, weights: list[np.ndarray], obs_dim: int, seed: int,
                  batch_size: int) -> dict:
    """Env steps per second and mean latency per step of central inference with this batch_size, every actor making
    n_steps requests (after bench_warmup untimed ones), the server logging unrolls as in training."""
    system = make_system(mode, cfg, obs_dim, seed, batch_size)
    system.set_weights(weights, 0)
    try:
        if isinstance(system, RaySEED):
            system.run(cfg.bench_warmup)
            t0 = time.perf_counter()
            stats = system.run(n_steps)
            seconds = time.perf_counter() - t0
            latency = float(np.mean([s["latency"] for s in stats]))
            flushes = system.ray.get(system.server.flushes.remote())
        else:
            for _ in range(cfg.bench_warmup):
                system.round()
            system.latency, system.requests, t0 = 0.0, 0, time.perf_counter()
            for _ in range(n_steps):
                system.round()
                system.server.take(len(system.server.ready))
            seconds = time.perf_counter() - t0
            latency, flushes = system.latency / system.requests, system.server.flushes
    finally:
        system.close()
    return {"steps_per_s": cfg.n_envs * n_steps / seconds, "latency_seconds": latency,
            "mean_batch": float(np.mean([len(f) for f in flushes])), "seconds": seconds}


def bench_per_actor(cfg: Config, mode: str, n_steps: int, weights: list[np.ndarray], seed: int) -> dict:
    """The baseline, IMPALA's per-actor inference (`_actors.Actor`): each actor runs its own copy of the policy on
    its envs and ships whole unrolls. The same envs and request count as `bench_central`. Its latency per step is
    the actor's own forward pass and sampling on its envs' observations, timed here on the same weights."""
    T = cfg.unroll_length
    actors = make_actors(mode, cfg.n_actors, cfg.env_id, cfg.envs_per_actor, seed)
    actors.broadcast(weights, 0)
    try:
        actors.unrolls(cfg.n_actors * max(1, cfg.bench_warmup // T), T)
        n = cfg.n_actors * math.ceil(n_steps / T)
        t0 = time.perf_counter()
        actors.unrolls(n, T)
        seconds = time.perf_counter() - t0
    finally:
        actors.close()
    obs = np.random.default_rng(seed).normal(size=(cfg.envs_per_actor, len(weights[0][0]))).astype(np.float32)
    rng, reps = np.random.default_rng(0), 200
    t1 = time.perf_counter()
    for _ in range(reps):
        sample(numpy_logits(weights, obs), rng)
    latency = (time.perf_counter() - t1) / reps
    return {"steps_per_s": n * T * cfg.envs_per_actor / seconds, "latency_seconds": latency, "seconds": seconds}


# ---- the learner (§3): IMPALA's V-trace update on the server's unrolls ----------------------------------------
def train_learner(cfg: Config, run: Run, state: dict | None, save) -> tuple[dict[str, Any], torch.nn.Module]:
    """Take batch_unrolls unrolls from the server, one `impala.learner_step`, send the new weights to the server (the
    inference uses the learner's newest parameters, §3); evaluate and checkpoint between updates. Returns the
    run's record (updates, evaluations, episodes, lag) and the learner's network."""
    obs_dim, n_actions = env_spaces(cfg.env_id, "SEED RL")
    lcfg = cfg.learner_cfg()
    net, opt = impala.make_learner(obs_dim, n_actions, lcfg, run.seed)
    system = make_system(cfg.mode, cfg, obs_dim, run.seed, cfg.batch_size, learning=True)
    n_updates = cfg.total_steps // cfg.steps_per_update
    s: dict[str, Any] = {"update": 0, "evals": [], "episodes": [], "lag": []}
    try:
        if state is None:
            system.set_weights(policy_weights(net), 0)
        else:
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["opt"])
            system.load(state["system"])
            s = {k: state[k] for k in s}
        bar = run.progress(total=n_updates, initial=s["update"], desc="seed-rl learner", unit="update")
        while s["update"] < n_updates:
            u = s["update"]
            unrolls = system.unrolls(cfg.batch_unrolls)
            if cfg.anneal_lr:
                opt.param_groups[0]["lr"] = cfg.lr * (1.0 - u / n_updates)
            info = impala.learner_step(net, opt, stack(unrolls), lcfg, "vtrace")  # IMPALA Eq. (1), §4.2
            s["update"] = u = u + 1
            system.set_weights(policy_weights(net), u)  # §3: inference runs the learner's newest parameters
            step = u * cfg.steps_per_update
            s["episodes"] += [[step, r] for un in unrolls for r in un["episodes"]]
            s["lag"].append([step, float(np.mean([u - 1 - un["version"] for un in unrolls]))])
            bar.update()
            if u % 25 == 0 or u == n_updates:
                for key, value in info.items():
                    run.check_finite(value, step, what=key, hint="lr")
                recent = [r for _, r in s["episodes"][-20:]]
                run.log({"train/return": float(np.mean(recent)) if recent else 0.0, "train/policy_lag":
                         s["lag"][-1][1], **{f"train/{k}": v for k, v in info.items()}}, step=step)
            if (cfg.eval_every and step // cfg.eval_every > (step - cfg.steps_per_update) // cfg.eval_every) \
                    or u == n_updates:
                s["evals"].append([step, impala.greedy_return(policy_weights(net), lcfg)])
                run.log({"eval/return": s["evals"][-1][1]}, step=step)
                bar.set_postfix(eval=f"{s['evals'][-1][1]:.0f}", refresh=False)
            if u < n_updates and (u % cfg.checkpoint_every == 0 or run.due()):
                save({**s, "net": net.state_dict(), "opt": opt.state_dict(), "system": system.state()})
        bar.close()
    finally:
        system.close()
    return s, net


def uses_ray(cfg: Config) -> bool:
    """Whether a run starts Ray actors (the learner in ray mode, or the Ray throughput arms): the runner then gives it
    the machine's cores, one seed-run at a time."""
    return cfg.mode == "ray" or cfg.ray_bench_steps > 0


def train(cfg: Config, run: Run) -> dict[str, float]:
    cfg.validate()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: intra-op threads only add synchronisation
    try:
        if cfg.mode == "local" and not cfg.ray_bench_steps:
            return _train(cfg, run, {"startup_seconds": 0.0})
        with ray_session(cfg.n_actors, cfg.ray_address) as info:
            return _train(cfg, run, info)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: Config, run: Run, ray_info: dict[str, float]) -> dict[str, float]:
    """The throughput arms (checkpointed once all are measured), then the learning run (checkpointed between
    updates)."""
    state = run.restore() or {"bench": None, "learner": None}
    obs_dim, n_actions = env_spaces(cfg.env_id, "SEED RL")
    bench = state["bench"]
    if bench is None:
        bench = {}
        weights = policy_weights(impala.make_learner(obs_dim, n_actions, cfg.learner_cfg(), run.seed)[0])
        for mode, n, prefix in (("local", cfg.bench_steps, ""), ("ray", cfg.ray_bench_steps, "ray_")):
            if n:
                bench |= {f"{prefix}central": bench_central(cfg, mode, n, weights, obs_dim, run.seed, cfg.batch_size),
                          f"{prefix}unbatched": bench_central(cfg, mode, n, weights, obs_dim, run.seed, 1),
                          f"{prefix}per_actor": bench_per_actor(cfg, mode, n, weights, run.seed)}
        run.checkpoint({"bench": bench, "learner": None})

    def save(learner_state):
        run.checkpoint({"bench": bench, "learner": learner_state})

    s, _ = train_learner(cfg, run, state["learner"], save)
    evals = [r for _, r in s["evals"]]
    last = [r for _, r in s["episodes"][-100:]]
    metrics = {"eval/return": evals[-1], "eval/auc": float(np.mean(evals)),
               "eval/solved_at": next((st for st, r in s["evals"] if r >= cfg.solved_return), math.nan),
               "train/return": float(np.mean(last)) if last else 0.0,
               "train/policy_lag": float(np.mean([x for _, x in s["lag"]])),
               "train/ray_startup_seconds": ray_info["startup_seconds"], "train/seconds": run.elapsed}
    for arm, b in bench.items():
        metrics |= {f"{arm}/{k}": float(v) for k, v in b.items() if k != "seconds"}
    for prefix in ("", "ray_"):
        if f"{prefix}central" in bench:
            central, unbatched, per_actor = (bench[f"{prefix}{a}"]["steps_per_s"] for a in
                                             ("central", "unbatched", "per_actor"))
            metrics[f"bench/{prefix}central_minus_per_actor_steps_per_s"] = central - per_actor
            metrics[f"bench/{prefix}batched_minus_unbatched_steps_per_s"] = central - unbatched
    run.log(metrics, step=cfg.total_steps)
    line_plot(run.plots_dir / "return_vs_env_steps.png", {"SEED (V-trace)": ([e[0] for e in s["evals"]],
                                                                              [e[1] for e in s["evals"]])},
              xlabel="env steps", ylabel="greedy return", title=f"SEED RL on {cfg.env_id}", hline=cfg.solved_return)
    for prefix, mode in (("", "local"), ("ray_", "ray")):
        if f"{prefix}central" in bench:
            _bench_plot(run, {a: bench[f"{prefix}{a}"] for a in ("central", "unbatched", "per_actor")}, cfg, mode)
    return metrics


def _bench_plot(run: Run, bench: dict[str, dict], cfg: Config, mode: str) -> None:
    import matplotlib.pyplot as plt

    names = {"central": f"central, batch {cfg.batch_size}", "unbatched": "central, batch 1",
             "per_actor": "per-actor (IMPALA)"}
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for ax, key, label in ((axes[0], "steps_per_s", "env steps / s"), (axes[1], "latency_seconds", "latency (ms)")):
        scale = 1000.0 if key == "latency_seconds" else 1.0
        ax.bar([names[a] for a in bench], [bench[a][key] * scale for a in bench], color=["C0", "C1", "C2"])
        ax.set_ylabel(label)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"SEED RL throughput, {cfg.n_actors} actors x {cfg.envs_per_actor} envs, {mode} mode")
    run.savefig(fig, f"throughput_{mode}")
