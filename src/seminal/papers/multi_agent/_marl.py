"""Shared plumbing of the multi-agent papers (23 MADDPG, 24 QMIX, 25 MAPPO): a thin parallel-env layer over the
Multi-Particle Environments as maintained today (the `mpe2` package), and reward scales said out loud.

- `MultiAgentEnv(task, seed=...)`: a fixed agent order; observations, actions and rewards as lists/arrays in that
  order; `state()` is the global state a centralised critic or mixer sees (mpe2's concatenation of every agent's
  observation); episodes end at `max_cycles` (truncation; MPE tasks have no terminal states).
- Each episode's reset is seeded from (run seed, episode index) only, so a run checkpointed between episodes
  resumes exactly without saving the simulator.
- Reward scales. Peers report MPE returns per agent, as the team's sum, or divided by the number of agents, and
  mpe2 mixes a global and a local reward (`local_ratio`) in simple_spread. Every return here is named with its
  scale: `team_sum` (the sum over agents and steps of each agent's reward) or `per_agent` (team_sum / n agents).
  `random_baseline` measures a uniform-random policy the same way, to print beside every learning curve.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from seminal.core.errors import SeminalError

# task name -> (mpe2 module, default keyword arguments of its parallel_env)
TASKS: dict[str, tuple[str, dict]] = {
    "simple_spread": ("mpe2.simple_spread_v3", {"N": 3, "local_ratio": 0.5}),
    "simple_speaker_listener": ("mpe2.simple_speaker_listener_v4", {}),
    "simple_reference": ("mpe2.simple_reference_v3", {"local_ratio": 0.5}),
    "simple_tag": ("mpe2.simple_tag_v3", {"num_good": 1, "num_adversaries": 3, "num_obstacles": 2}),
    "simple_adversary": ("mpe2.simple_adversary_v3", {"N": 2}),
}

Scale = Literal["team_sum", "per_agent"]
SCALE_TEXT = {"team_sum": "team return: sum over agents and steps", "per_agent": "team return / number of agents"}


def episode_seed(seed: int, episode: int) -> int:
    """The reset seed of episode `episode` of a run seeded `seed`: a function of the two only."""
    return int(np.random.SeedSequence([int(seed), int(episode)]).generate_state(1)[0])


@dataclass
class MultiAgentEnv:
    """One MPE task as a parallel env with a fixed agent order (see the module docstring)."""

    task: str
    seed: int = 0
    max_cycles: int = 25
    continuous: bool = False
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise SeminalError(f"unknown multi-agent task {self.task!r}; choose one of: {', '.join(TASKS)}")
        name, defaults = TASKS[self.task]
        try:
            mod = importlib.import_module(name)
        except ImportError as e:
            raise SeminalError(f"task {self.task} needs mpe2, which is not installed: pip install 'seminal[marl]'") \
                from e
        self._env = mod.parallel_env(max_cycles=self.max_cycles, continuous_actions=self.continuous,
                                     **{**defaults, **self.kwargs})
        self.agents: list[str] = list(self._env.possible_agents)
        self.n = len(self.agents)
        self.obs_dims = [int(np.prod(self._env.observation_space(a).shape)) for a in self.agents]
        spaces = [self._env.action_space(a) for a in self.agents]
        # discrete: the number of actions; continuous: the action vector's size (mpe2 Box in [0, 1])
        self.act_dims = [int(s.shape[0]) if self.continuous else int(s.n) for s in spaces]
        self.episode = 0
        self.reset(0)
        self.state_dim = int(self.state().shape[0])

    def reset(self, episode: int | None = None) -> list[np.ndarray]:
        """Start episode `episode` (default: the next one); its randomness depends on (seed, episode) only."""
        self.episode = self.episode + 1 if episode is None else int(episode)
        obs, _ = self._env.reset(seed=episode_seed(self.seed, self.episode))
        self.t = 0
        return [np.asarray(obs[a], dtype=np.float32) for a in self.agents]

    def step(self, actions) -> tuple[list[np.ndarray], np.ndarray, bool, bool]:
        """Actions in agent order (ints, or arrays in [0, 1] when continuous) -> (observations, rewards[n],
        done: the episode is over, terminal: it ended in a terminal state rather than at max_cycles)."""
        acts = {a: (np.asarray(u, dtype=np.float32) if self.continuous else int(u))
                for a, u in zip(self.agents, actions)}
        obs, rew, term, trunc, _ = self._env.step(acts)
        self.t += 1
        terminal = any(bool(term.get(a, False)) for a in self.agents)
        done = terminal or all(bool(trunc.get(a, False)) for a in self.agents) or not self._env.agents
        out = [np.asarray(obs[a], dtype=np.float32) if a in obs else np.zeros(d, np.float32)
               for a, d in zip(self.agents, self.obs_dims)]
        return out, np.array([float(rew.get(a, 0.0)) for a in self.agents]), done, terminal

    def state(self) -> np.ndarray:
        """The global state (mpe2: every agent's observation, concatenated in agent order)."""
        return np.asarray(self._env.state(), dtype=np.float32)


def scaled(team_sum: float, n_agents: int, scale: Scale) -> float:
    """A team-sum return on the named scale."""
    return float(team_sum) if scale == "team_sum" else float(team_sum) / n_agents


def rollout_return(env: MultiAgentEnv, act, episodes: int, first_episode: int, scale: Scale = "team_sum",
                   agents: list[int] | None = None) -> float:
    """Mean return over `episodes` episodes of `act(observations list, state) -> actions list`, on `scale`.
    `agents` restricts the sum to some agents (e.g. one team of a competitive task)."""
    keep = list(range(env.n)) if agents is None else list(agents)
    total = 0.0
    for i in range(episodes):
        obs, done = env.reset(first_episode + i), False
        while not done:
            obs, rew, done, _ = env.step(act(obs, env.state()))
            total += float(rew[keep].sum())
    return scaled(total / episodes, len(keep), scale)


def random_baseline(task: str, episodes: int = 100, seed: int = 0, scale: Scale = "team_sum",
                    max_cycles: int = 25, **kwargs) -> float:
    """A uniform-random policy's mean return on `task`, measured as every learner here is (same scale)."""
    env = MultiAgentEnv(task, seed=seed, max_cycles=max_cycles, kwargs=kwargs)
    rng = np.random.default_rng(seed)
    return rollout_return(env, lambda obs, state: [int(rng.integers(d)) for d in env.act_dims], episodes,
                          10**6, scale)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run a block with one torch thread (tiny nets: intra-op threads only add synchronisation), then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def arms_in_turn(arms, run, train_arm: Callable[[str, dict | None, Callable[[dict], None]], dict]) -> dict:
    """Train each arm in turn on the same seed, resuming: `train_arm(arm, resume_state, save)` trains one arm,
    calling `save(arm_state)` at its checkpoints; a checkpoint holds the finished arms' results and the running
    arm's state, and one is written after each arm. Returns {arm: train_arm's result}."""
    state = run.restore() or {"done": {}, "arm": None}
    done = dict(state["done"])
    for arm in arms:
        if arm in done:
            continue

        def save(arm_state, arm=arm):
            run.checkpoint({"done": done, "arm": {"name": arm, **arm_state}})

        resume = state["arm"] if state["arm"] is not None and state["arm"]["name"] == arm else None
        done[arm] = train_arm(arm, resume, save)
        state["arm"] = None
        run.checkpoint({"done": done, "arm": None})
    return done
