"""Plumbing of the distributed papers: actors that return whole unrolls, run locally or as Ray actors. No algorithm
math here (targets, corrections and losses stay in the paper modules).

  * `PolicyNet`: pi(a|s) logits and V(s), two tanh MLPs (orthogonal init, small last policy layer).
  * `policy_weights` / `numpy_logits`: the policy's weights as NumPy arrays, and its forward pass on them: what
    the learner broadcasts and what actors act with (no torch on the acting path).
  * `Actor`: `envs_per_actor` gymnasium envs stepped together. `unroll(T, weights, version)` plays T steps of
    every env with the weights it holds (replaced first when new ones come with the call) and returns the whole
    (T, N) unroll in one message: a Ray call costs ~1 ms, so one call per env step would cost more than the step.
    Its `state()` (envs, generator, weights, running episode returns) makes a local run resume exactly.
  * `LocalActors`: the actors as plain objects, stepped in lockstep in this process, round-robin; deterministic.
  * `RayActors`: each actor a Ray actor with one unroll always in flight; `unrolls(k)` hands back the first k
    that arrive (`ray.wait`), `ready()` those finished by now without waiting (a learner that never waits for
    data: Ape-X), and each actor is relaunched at once with the newest weights broadcast to it.
    Asynchronous, so not bitwise deterministic.
  * `ray_session`: `ray.init` (local, or a cluster at `address`) and `ray.shutdown` around a block.
  * `stack`: unrolls side by side on the batch axis.

Both pools take the actor class (`Actor` by default; a paper may bring its own with the same methods:
`__init__(*args, index)`, `set_weights(weights, version)`, `unroll(T, weights=None, version=None)`, `state()`,
`load(state)`, `close()`), so Ape-X and R2D2 actors, which return transitions or sequences, run on the same pools.

`LocalPool` / `RayPool` (`make_pool`, paper 21): actors behind one call interface (`put`, `launch`, `next_done`,
`kill`), as plain objects whose queued calls run oldest first, or as Ray actors with `max_restarts` whose lost calls
come back as `LOST` (the learner makes them again; `kill` is a SIGKILL of the actor's process).

Re-exported for paper 21 (distributed PPO and SAC), so that a paper of this area reaches the rl area's plumbing through
its own, without copying it: `rl._onpolicy`'s `ActorCritic`, `NumpyActor`, `Episodes`, `collect`, `make_vec_env` and
`rl._offpolicy`'s `scale_action`.

Ray is the `distributed` extra, imported only in ray mode.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from seminal.core.errors import SeminalError
from seminal.core.rl import env_state, make_env, require_discrete, set_env_state
from seminal.papers.rl._offpolicy import scale_action as scale_action
from seminal.papers.rl._onpolicy import ActorCritic as ActorCritic
from seminal.papers.rl._onpolicy import Episodes as Episodes
from seminal.papers.rl._onpolicy import NumpyActor as NumpyActor
from seminal.papers.rl._onpolicy import collect as collect
from seminal.papers.rl._onpolicy import make_vec_env as make_vec_env

RAY_MISSING = "ray mode needs the distributed extra: pip install 'seminal[distributed]'"


def import_ray() -> Any:
    """The ray module, or a one-line SeminalError naming the extra."""
    try:
        import ray
    except ImportError as e:
        raise SeminalError(RAY_MISSING) from e
    return ray


# ---- the network, and its policy as NumPy weights ------------------------------------------------------------
def _mlp(sizes: list[int], last_gain: float, gen: torch.Generator) -> nn.Sequential:
    layers: list[nn.Module] = []
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = nn.Linear(n_in, n_out)
        last = j == len(sizes) - 2
        nn.init.orthogonal_(layer.weight, last_gain if last else math.sqrt(2), generator=gen)
        nn.init.zeros_(layer.bias)
        layers += [layer] if last else [layer, nn.Tanh()]
    return nn.Sequential(*layers)


class PolicyNet(nn.Module):
    """pi(a|s) as categorical logits and V(s): two MLPs with tanh hidden layers."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...] = (64, 64), seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.pi = _mlp([obs_dim, *hidden, n_actions], 0.01, gen)  # near-uniform policy at the start
        self.v = _mlp([obs_dim, *hidden, 1], 1.0, gen)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pi(obs), self.v(obs).squeeze(-1)  # (..., A), (...)


def policy_weights(net: PolicyNet) -> list[np.ndarray]:
    """The policy MLP's weights as NumPy copies [W0, b0, W1, b1, ...] (W: (out, in)): what actors act with."""
    return [p.detach().cpu().numpy().copy() for p in net.pi.parameters()]


def numpy_logits(weights: list[np.ndarray], obs: np.ndarray) -> np.ndarray:
    """The policy MLP's forward pass on NumPy weights: (N, obs) -> (N, A) logits."""
    x = obs
    for j in range(0, len(weights), 2):
        x = x @ weights[j].T + weights[j + 1]
        if j + 2 < len(weights):
            x = np.tanh(x)
    return x


def sample(logits: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Actions (N,) drawn from softmax(logits) by the inverse CDF, and their log-probabilities (N,)."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp_all = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    cdf = np.cumsum(np.exp(logp_all), axis=1)
    a = np.minimum((rng.random((len(logits), 1)) > cdf).sum(axis=1), logits.shape[1] - 1)
    return a, logp_all[np.arange(len(logits)), a]


def env_spaces(env_id: str, algorithm: str) -> tuple[int, int]:
    """(obs_dim, n_actions) of a discrete-action env with flat observations, or a one-line error."""
    env = make_env(env_id)
    n_actions = require_discrete(env, env_id, algorithm)
    shape = env.observation_space.shape
    env.close()
    if shape is None or len(shape) != 1:
        raise SeminalError(f"{algorithm} here needs flat vector observations; {env_id} has shape {shape}")
    return int(shape[0]), n_actions


# ---- one actor ------------------------------------------------------------------------------------------------
class Actor:
    """`n_envs` copies of `env_id`, reset with seeds from (seed, actor index, env index), acting with the weights it
    was last sent. Autoreset: when an episode ends at step t, obs[t + 1] is the next episode's first observation
    and, where it was truncated, final_obs[t] is the observation it was cut at."""

    def __init__(self, env_id: str, n_envs: int, seed: int, index: int):
        self.index = index
        self.envs = [make_env(env_id) for _ in range(n_envs)]
        self.obs = np.stack([env.reset(seed=seed * 10_007 + index * 101 + i)[0] for i, env in enumerate(self.envs)])
        self.obs = self.obs.astype(np.float32)
        self.rng = np.random.default_rng([seed, index, 16])
        self.ep_ret = np.zeros(n_envs)
        self.weights: list[np.ndarray] | None = None
        self.version = -1
        """Which learner update the weights it acts with come from."""

    def set_weights(self, weights: list[np.ndarray], version: int) -> None:
        self.weights, self.version = [np.asarray(w) for w in weights], int(version)

    def unroll(self, T: int, weights: list[np.ndarray] | None = None, version: int | None = None) -> dict[str, Any]:
        """T steps of every env: obs (T + 1, N, D), actions, behaviour log-probs mu(a|x), rewards, terminated,
        truncated (T, N), final_obs (T, N, D; zero where not truncated), finished episodes' returns, and the
        weights' version."""
        if weights is not None:
            self.set_weights(weights, version if version is not None else self.version)
        if self.weights is None:
            raise SeminalError("an actor was asked to act before it was sent weights")
        N, D = self.obs.shape
        out = {"obs": np.empty((T + 1, N, D), np.float32), "actions": np.empty((T, N), np.int64),
               "behaviour_logp": np.empty((T, N), np.float32), "rewards": np.zeros((T, N), np.float32),
               "terminated": np.zeros((T, N), bool), "truncated": np.zeros((T, N), bool),
               "final_obs": np.zeros((T, N, D), np.float32)}
        episodes = []
        for t in range(T):
            out["obs"][t] = self.obs
            a, logp = sample(numpy_logits(self.weights, self.obs), self.rng)
            out["actions"][t], out["behaviour_logp"][t] = a, logp
            for i, env in enumerate(self.envs):
                o, r, term, trunc, _ = env.step(int(a[i]))
                out["rewards"][t, i], out["terminated"][t, i] = r, term
                out["truncated"][t, i] = trunc and not term
                self.ep_ret[i] += r
                if term or trunc:
                    episodes.append(float(self.ep_ret[i]))
                    self.ep_ret[i] = 0.0
                    if trunc and not term:
                        out["final_obs"][t, i] = o
                    o, _ = env.reset()  # the env's own generator continues: deterministic
                self.obs[i] = o
        out["obs"][T] = self.obs
        return {**out, "episodes": episodes, "version": self.version, "actor": self.index}

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def state(self) -> dict[str, Any]:
        return {"envs": [env_state(env) for env in self.envs], "obs": self.obs.copy(), "ep_ret": self.ep_ret.copy(),
                "rng": json.dumps(self.rng.bit_generator.state), "weights": self.weights, "version": self.version}

    def load(self, state: dict[str, Any]) -> None:
        if not all(set_env_state(env, s) for env, s in zip(self.envs, state["envs"])):
            raise SeminalError("this env's state cannot be restored; restart the run instead of resuming it")
        self.obs, self.ep_ret = np.asarray(state["obs"], np.float32).copy(), np.asarray(state["ep_ret"], float).copy()
        self.rng.bit_generator.state = json.loads(state["rng"])
        if state["weights"] is not None:
            self.set_weights(state["weights"], state["version"])


def stack(unrolls: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Unrolls side by side on the batch axis (axis 1): (T, sum of N, ...)."""
    keys = ("obs", "actions", "behaviour_logp", "rewards", "terminated", "truncated", "final_obs")
    return {k: np.concatenate([u[k] for u in unrolls], axis=1) for k in keys}


# ---- many actors: locally in lockstep, or on Ray ------------------------------------------------------------
class LocalActors:
    """The actors as plain objects in this process, asked for unrolls in turn (actor 0, 1, ..., 0, ...); a
    broadcast reaches every actor at once. Deterministic for a seed. Actor i is `actor_cls(*args, i)`."""

    def __init__(self, n_actors: int, *args: Any, actor_cls: type = Actor):
        self.actors = [actor_cls(*args, i) for i in range(n_actors)]
        self.turn = 0

    def broadcast(self, weights: list[np.ndarray], version: int) -> None:
        for actor in self.actors:
            actor.set_weights(weights, version)

    def unrolls(self, k: int, T: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(k):
            out.append(self.actors[self.turn % len(self.actors)].unroll(T))
            self.turn += 1
        return out

    def ready(self, T: int) -> list[dict[str, Any]]:
        """Local stand-in for `RayActors.ready`: the next actor's unroll (local actors are never done on their own)."""
        return self.unrolls(1, T)

    def state(self) -> dict[str, Any]:
        return {"turn": self.turn, "actors": [a.state() for a in self.actors]}

    def load(self, state: dict[str, Any]) -> None:
        self.turn = int(state["turn"])
        for actor, s in zip(self.actors, state["actors"]):
            actor.load(s)

    def close(self) -> None:
        for actor in self.actors:
            actor.close()


class RayActors:
    """Each actor a Ray actor (one CPU) with one unroll in flight. `unrolls(k)` returns the first k to arrive and
    relaunches each of their actors at once, with the newest broadcast weights if it has not had them yet (sent as
    one object in Ray's store, not once per actor). Actors never wait for the learner: their policy lags by however
    many updates happened while they acted, plus what the learner holds back on purpose. Actor i is
    `actor_cls(*args, i)` in its own process."""

    def __init__(self, n_actors: int, *args: Any, actor_cls: type = Actor):
        self.ray = import_ray()
        remote = self.ray.remote(num_cpus=1)(actor_cls)
        self.actors = [remote.remote(*args, i) for i in range(n_actors)]
        self.pending: dict[Any, int] = {}  # object ref of an unroll in flight -> actor index
        self.weights_ref, self.version, self.sent = None, -1, [-1] * n_actors

    def broadcast(self, weights: list[np.ndarray], version: int) -> None:
        self.weights_ref, self.version = self.ray.put(weights), version

    def _launch(self, i: int, T: int) -> None:
        new = self.sent[i] < self.version
        self.sent[i] = max(self.sent[i], self.version)
        ref = self.actors[i].unroll.remote(T, self.weights_ref if new else None, self.version if new else None)
        self.pending[ref] = i

    def unrolls(self, k: int, T: int) -> list[dict[str, Any]]:
        for i in set(range(len(self.actors))) - set(self.pending.values()):
            self._launch(i, T)
        out = []
        while len(out) < k:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1)
            i = self.pending.pop(ready[0])
            out.append(self.ray.get(ready[0]))
            self._launch(i, T)
        return out

    def ready(self, T: int) -> list[dict[str, Any]]:
        """Every unroll finished by now, without waiting (possibly none); each of their actors relaunched at once."""
        for i in set(range(len(self.actors))) - set(self.pending.values()):
            self._launch(i, T)
        done, _ = self.ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
        out = []
        for ref in done:
            i = self.pending.pop(ref)
            out.append(self.ray.get(ref))
            self._launch(i, T)
        return out

    def state(self) -> dict[str, Any]:
        """Each actor's state after its unroll in flight (whose data a resumed run never sees: not exact)."""
        return {"turn": 0, "actors": self.ray.get([a.state.remote() for a in self.actors])}

    def load(self, state: dict[str, Any]) -> None:
        self.ray.get([a.load.remote(s) for a, s in zip(self.actors, state["actors"])])
        self.sent = [int(s["version"]) for s in state["actors"]]

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.pending.clear()


def make_actors(mode: str, n_actors: int, *args: Any, actor_cls: type = Actor) -> LocalActors | RayActors:
    """n_actors actors `actor_cls(*args, i)`: plain objects in lockstep (mode "local") or Ray actors ("ray")."""
    return (LocalActors if mode == "local" else RayActors)(n_actors, *args, actor_cls=actor_cls)


@contextmanager
def ray_session(n_cpus: int, address: str | None = None) -> Iterator[dict[str, float]]:
    """ray.init (a local Ray with n_cpus CPUs, or the cluster at `address`) unless Ray is running already; shut down
    at the end if started here. Yields {"startup_seconds": ...}."""
    ray = import_ray()
    t0, started = time.perf_counter(), False
    if not ray.is_initialized():
        kwargs = {"address": address} if address else {"num_cpus": n_cpus}
        ray.init(**kwargs, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}})
        started = True
    try:
        yield {"startup_seconds": time.perf_counter() - t0}
    finally:
        if started:
            ray.shutdown()


# ---- pools with restarts (paper 21): calls on plain objects, or on Ray actors with max_restarts ---------------
LOST = "lost"
"""What `next_done` gives for a call whose actor died before it returned."""


class LocalPool:
    """The actors as plain objects. `launch` queues a call; `next_done` runs the oldest. `kill(i)` drops actor i's
    queued calls with none of their effects and rebuilds it from its constructor, as a SIGKILL and Ray's restart."""

    def __init__(self, cls: type, args: tuple, n: int, max_restarts: int):
        self.cls, self.args, self.max_restarts = cls, args, max_restarts
        self.actors = [cls(*args, i) for i in range(n)]
        self.pending: dict[int, tuple[int, str, tuple]] = {}  # call id -> (actor, method, args)
        self.next_id, self.lost, self.restarts = 0, set(), [0] * n

    def put(self, value: Any) -> Any:
        return value

    def launch(self, i: int, method: str, *args: Any) -> None:
        self.pending[self.next_id] = (i, method, args)
        self.next_id += 1

    def kill(self, i: int) -> None:
        self.lost |= {c for c, (j, _, _) in self.pending.items() if j == i}
        self.restarts[i] += 1
        if self.restarts[i] > self.max_restarts:
            raise SeminalError(f"actor {i} died more than max_restarts={self.max_restarts} times")
        self.actors[i] = self.cls(*self.args, i)

    def next_done(self) -> tuple[int, Any]:
        c = min(self.pending)
        i, method, args = self.pending.pop(c)
        if c in self.lost:
            self.lost.discard(c)
            return i, LOST
        return i, getattr(self.actors[i], method)(*args)

    def state(self) -> dict[str, Any]:
        return {"actors": [a.state() for a in self.actors], "restarts": self.restarts,
                "pending": [[i, m, list(a)] for c, (i, m, a) in sorted(self.pending.items()) if c not in self.lost]}

    def load(self, state: dict[str, Any]) -> None:
        for actor, s in zip(self.actors, state["actors"]):
            actor.load(s)
        self.restarts = list(state["restarts"])
        for i, method, args in state["pending"]:
            self.launch(int(i), method, *args)

    def close(self) -> None:
        self.pending.clear()


class RayPool:
    """Each actor a Ray actor (one CPU, `max_restarts`, no task retries). `put` stores a value once in the object store
    (§4.2.3); `next_done` is `ray.wait` for the first call to finish, LOST when its actor died (RayActorError); `kill`
    is os.kill(pid, SIGKILL) of the actor's process."""

    def __init__(self, cls: type, args: tuple, n: int, max_restarts: int):
        self.ray = import_ray()
        remote = self.ray.remote(num_cpus=1, max_restarts=max_restarts, max_task_retries=0)(cls)
        self.actors = [remote.remote(*args, i) for i in range(n)]
        self.pids = self.ray.get([a.pid.remote() for a in self.actors])
        self.pending: dict[Any, tuple[int, str, tuple]] = {}  # object ref -> (actor, method, args)
        self.restarts, self.max_restarts = [0] * n, max_restarts

    def put(self, value: Any) -> Any:
        return self.ray.put(value)

    def launch(self, i: int, method: str, *args: Any) -> None:
        self.pending[getattr(self.actors[i], method).remote(*args)] = (i, method, args)

    def kill(self, i: int) -> None:
        print(f"seminal: killing actor {i} (pid {self.pids[i]}) on purpose (kill_actor_at); the 'worker died' line Ray "
              "prints next is that fault, and the actor restarts", file=sys.stderr)
        os.kill(self.pids[i], signal.SIGKILL)  # the fault: the process dies; Ray notices and restarts the actor

    def next_done(self) -> tuple[int, Any]:
        ready, _ = self.ray.wait(list(self.pending), num_returns=1)
        i, _, _ = self.pending.pop(ready[0])
        try:
            out = self.ray.get(ready[0])
        except self.ray.exceptions.RayActorError:  # the actor died with this call in flight
            self._await_restart(i)
            return i, LOST
        self.pids[i] = out["pid"]  # a restarted actor is a new process
        return i, out

    def _await_restart(self, i: int) -> None:
        """Wait until Ray has restarted actor i (§5.1): calls sent while it restarts fail as well, and the lost one
        is to be made again on the new process. SeminalError once it is past max_restarts."""
        self.restarts[i] += 1
        self.pids[i] = self._call_when_up(i, "pid")

    def _call_when_up(self, i: int, method: str, timeout: float = 120.0) -> Any:
        """actor i's `method()`, retried while Ray restarts the actor; one line once it is past max_restarts or does
        not come back within `timeout` seconds."""
        t0 = time.monotonic()
        while True:
            try:
                return self.ray.get(getattr(self.actors[i], method).remote())
            except self.ray.exceptions.ActorDiedError:
                raise SeminalError(f"actor {i} died and is past max_restarts={self.max_restarts}") from None
            except self.ray.exceptions.RayActorError:  # still restarting
                if time.monotonic() - t0 > timeout:
                    raise SeminalError(f"actor {i} did not come back within {timeout:.0f} s") from None
                time.sleep(0.1)

    def state(self) -> dict[str, Any]:
        """Each actor's state after its calls in flight (whose results a resumed run makes again: not exact)."""
        resolve = self.ray.get
        pending = [[i, m, [resolve(a) if type(a).__name__ == "ObjectRef" else a for a in args]]
                   for i, m, args in self.pending.values()]
        # an actor killed and restarting: wait for it (its lost call is counted by next_done)
        return {"actors": [self._call_when_up(i, "state") for i in range(len(self.actors))],
                "restarts": self.restarts, "pending": pending}

    def load(self, state: dict[str, Any]) -> None:
        self.ray.get([a.load.remote(s) for a, s in zip(self.actors, state["actors"])])
        self.restarts = list(state["restarts"])
        for i, method, args in state["pending"]:
            self.launch(int(i), method, *args)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.pending.clear()


def make_pool(mode: str, cls: type, args: tuple, n: int, max_restarts: int) -> LocalPool | RayPool:
    return (LocalPool if mode == "local" else RayPool)(cls, args, n, max_restarts)
