"""Human-level control through deep reinforcement learning — Mnih et al., Nature 518 (2015) ("DQN").

Q-learning with a neural network Q(s, a; theta), made stable by two devices: experience replay (learn
from minibatches drawn from the last N transitions, which breaks the correlation of consecutive steps)
and a target network theta^- (a copy of theta refreshed every C updates, which the TD target bootstraps
from). The TD error is clipped to [-1, 1], i.e. the loss is the Huber loss; actions are epsilon-greedy,
epsilon annealed linearly. On Atari the input is the paper's preprocessing (84x84 grey frames, max over
two raw frames, action repeat 4, a stack of the last 4 frames, rewards clipped to [-1, 1]) and the
network the paper's three-conv "Nature CNN". One switch from a later paper, an ablation of this one:
Double DQN (van Hasselt, Guez & Silver 2016, arXiv:1509.06461) picks a' with the online net and
evaluates it with the target net. `learn` takes a replay sampler, so that entry 15 (prioritized replay,
`seminal.papers.rl.prioritized_replay`) runs this same loop with its sum-tree sampler.

Equation map (Nature 2015, Methods; Double DQN Eq. 4):
  Eq. (1) / Methods  y = r + gamma max_a' Q(s', a'; theta^-), y = r at terminal s'   -> `td_target`
  Double DQN Eq. (4) y = r + gamma Q(s', argmax_a' Q(s', a'; theta); theta^-)       -> `td_target`
  Methods  error clipping of (y - Q(s, a; theta)) to [-1, 1] == Huber loss           -> `huber`, `td_loss`
  Eq. (3)  gradient step on E[(y - Q(s, a; theta))^2] over replayed minibatches      -> `dqn_update`
  Methods  theta^- <- theta every C updates                                            -> `replay_updates`
  Methods  epsilon annealed linearly from 1 to 0.1 over the first 1M frames          -> `epsilon`
  Methods  preprocessing phi, reward clipping                                          -> `make_train_env`
  Ext. Data Table 1 hyperparameters                                                   -> `PRESETS["full"]`
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seminal.core.claims import Claim
from seminal.core.config import PosFloat, PosInt, Prob, Sizes
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.rl import env_state, evaluate, make_env, require_discrete, set_env_state
from seminal.core.run import Run

__all__ = ["Config", "PRESETS", "CLAIMS", "dqn_update", "replay_updates", "learn", "train", "replace"]


@dataclass(frozen=True)
class Config:
    env_id: str = "CartPole-v1"
    """Gymnasium id; `ALE/...` ids (the `atari` extra) get the paper's Atari preprocessing and CNN."""
    total_steps: PosInt = 25_000
    """Environment (agent) steps of training; on Atari one step is 4 frames."""
    buffer_size: PosInt = 50_000
    """Replay memory size N (transitions)."""
    batch_size: PosInt = 64
    """Minibatch size of each gradient step."""
    lr: PosFloat = 2.3e-3
    """Learning rate of the optimizer."""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """`rmsprop`: the paper's (centred, momentum 0.95, eps 0.01); `adam`: the quick preset's (deviation 2)."""
    gamma: Prob = 0.99
    """Discount factor gamma."""
    learning_starts: PosInt = 1_000
    """Steps of random-policy data collected before the first update (the paper's "replay start size")."""
    train_freq: PosInt = 16
    """Env steps between update phases (the paper's "update frequency", 4)."""
    gradient_steps: PosInt = 8
    """Gradient steps per update phase (the paper's 1)."""
    target_update: PosInt = 128
    """C: gradient updates between copies theta^- <- theta (the paper's 10,000)."""
    eps_start: Prob = 1.0
    """Initial exploration rate epsilon."""
    eps_end: Prob = 0.04
    """Final exploration rate epsilon (the paper's 0.1)."""
    exploration_steps: PosInt = 8_000
    """Env steps over which epsilon falls linearly from eps_start to eps_end (the paper's 1M frames)."""
    hidden: Sizes = (64, 64)
    """Hidden widths of the MLP Q-network for vector observations (Atari uses the Nature CNN)."""
    double: bool = False
    """Double DQN target (van Hasselt et al. 2016): online argmax, target-network value."""
    huber_delta: PosFloat = 1.0
    """Huber loss threshold (the paper clips the TD error to [-1, 1], i.e. 1)."""
    clip_rewards: bool = False
    """Clip rewards to [-1, 1] (the paper, on Atari; CartPole's rewards are already 1)."""
    eval_every: PosInt = 2_500
    """Env steps between greedy evaluations."""
    eval_episodes: PosInt = 10
    """Episodes per greedy evaluation (deterministic policy, seeds 10000, 10001, ...)."""
    checkpoint_every: PosInt = 5_000
    """Env steps between checkpoints (network, optimizer, replay buffer)."""

    def validate(self) -> None:
        if self.learning_starts < self.batch_size:
            raise SeminalError(f"learning_starts={self.learning_starts} must be >= batch_size={self.batch_size}")
        if self.buffer_size < self.batch_size:
            raise SeminalError(f"buffer_size={self.buffer_size} must be >= batch_size={self.batch_size}")

    @property
    def atari(self) -> bool:
        return self.env_id.startswith("ALE/")


PRESETS = {
    "quick": Config(),
    # Nature 2015 Ext. Data Table 1: 50M frames = 12.5M agent steps; replay 1M (here 400k: both s and s' are
    # stored as 4-frame stacks, deviation 4), batch 32, C = 10k updates, RMSProp 2.5e-4, update every 4
    # steps, replay start 50k, epsilon 1 -> 0.1 over 1M frames (250k steps).
    "full": Config(env_id="ALE/Pong-v5", total_steps=12_500_000, buffer_size=400_000, batch_size=32, lr=2.5e-4,
                   optimizer="rmsprop", learning_starts=50_000, train_freq=4, gradient_steps=1,
                   target_update=10_000, eps_end=0.1, exploration_steps=250_000, clip_rewards=True,
                   eval_every=250_000, checkpoint_every=250_000),
}

CLAIMS = {
    # The policy at the end of training, not the best of the evaluations along the way: greedy, 10 episodes,
    # mean return >= 475 (gymnasium's CartPole-v1 reward_threshold) in a majority of seeds. The majority is the
    # peer's own record: SB3's tuned DQN reached 500 in 2 of 3 seeds at 50k steps on this machine (notes).
    # Fixed before running. The 25k budget was chosen on seeds 100-102, the other hyperparameters earlier on
    # seeds 0-2 (notes, deviation 3); the claim is recorded on seeds 1000+.
    "quick": [
        Claim("DQN's greedy policy after 25k env steps solves CartPole-v1 (return >= 475) in most seeds",
              "eval/return", ">=", 475.0, "SB3 zoo DQN: 500 in 2 of 3 seeds at 50k steps (measured here)",
              "gymnasium CartPole-v1 reward_threshold; rl-baselines3-zoo dqn.yml", aggregate="k_of_n", bar="peer"),
    ],
    "full": [
        Claim("DQN plays Pong at the paper's level", "eval/return", ">=", 17.6, "18.9 +- 1.3",
              "Nature 2015 Ext. Data Table 2 (mean minus one std)", bar="paper"),
    ],
}


# ---- the paper's math: pure functions -----------------------------------------------------------------
def epsilon(step: int, eps_start: float, eps_end: float, exploration_steps: int) -> float:
    """Linear annealing of the exploration rate, then constant (Methods)."""
    frac = min(step / max(exploration_steps, 1), 1.0)
    return eps_start + frac * (eps_end - eps_start)


def td_target(reward: torch.Tensor, terminated: torch.Tensor, q_next_target: torch.Tensor, gamma: float,
              q_next_online: torch.Tensor | None = None) -> torch.Tensor:
    """y = r + gamma (1 - terminated) max_a' Q(s', a'; theta^-); with `q_next_online`, the Double DQN y.

    reward, terminated (B,); q_next_* (B, A). Only a true terminal stops the bootstrap: a time-limit
    truncation still bootstraps from s', which the replay buffer stores as the real last observation.
    """
    if q_next_online is None:
        next_value = q_next_target.max(dim=1).values  # Eq. (1): max over a' with theta^-
    else:
        a_star = q_next_online.argmax(dim=1, keepdim=True)  # Double DQN Eq. (4): argmax with theta,
        next_value = q_next_target.gather(1, a_star).squeeze(1)  # evaluated with theta^-
    return reward + gamma * (1.0 - terminated) * next_value


def huber(x: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Elementwise Huber loss: its gradient is the TD error clipped to [-delta, delta] (Methods)."""
    a = x.abs()
    return torch.where(a <= delta, 0.5 * x * x, delta * (a - 0.5 * delta))


def td_loss(q_sa: torch.Tensor, y: torch.Tensor, delta: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean (importance-weighted, for prioritized replay) Huber loss of the TD errors y - Q(s, a)."""
    per_sample = huber(y - q_sa, delta)
    return (per_sample if weights is None else weights * per_sample).mean()


def clip_reward(r: float) -> float:
    return float(np.sign(r))  # Methods: positive rewards 1, negative -1, zero 0


# ---- networks -----------------------------------------------------------------------------------------
class QMLP(nn.Module):
    """obs (B, D) -> Q-values (B, A)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...]):
        super().__init__()
        sizes = (obs_dim, *hidden, n_actions)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)

    def numpy_greedy(self) -> Any:
        """argmax_a Q(obs, a) for one observation, in NumPy on views of the live weights (CPU only).

        A torch call costs ~100 us for one tiny input; this costs ~10 us and needs no copying: the views
        share memory with the parameters, which the optimizer updates in place.
        """
        params = [(layer.weight.detach().numpy(), layer.bias.detach().numpy()) for layer in self.layers]

        def act(obs: np.ndarray) -> int:
            h = np.asarray(obs, dtype=np.float32)
            for w, b in params[:-1]:
                h = np.maximum(w @ h + b, 0.0)
            w, b = params[-1]
            return int(np.argmax(w @ h + b))

        return act


class NatureCNN(nn.Module):
    """The paper's network: frames (B, 4, 84, 84) uint8 -> Q-values (B, A)."""

    def __init__(self, n_actions: int, frames: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(frames, 32, 8, stride=4), nn.ReLU(),  # (B, 32, 20, 20)
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),  # (B, 64, 9, 9)
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),  # (B, 64, 7, 7)
            nn.Flatten(), nn.Linear(64 * 7 * 7, 512), nn.ReLU(),  # (B, 512)
            nn.Linear(512, n_actions),  # (B, A)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float() / 255.0)


# ---- environment, replay memory, samplers -------------------------------------------------------------
def make_train_env(cfg: Config, seed: int | None = None) -> Any:
    """The env; for `ALE/` ids with the paper's preprocessing phi (Methods) on top."""
    if not cfg.atari:
        return make_env(cfg.env_id, seed=seed)
    gymnasium = __import__("gymnasium")
    env = make_env(cfg.env_id, frameskip=1, repeat_action_probability=0.0)  # the paper had no sticky actions
    env = gymnasium.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84,
                                                grayscale_obs=True, scale_obs=False)  # max of 2 frames, 84x84
    env = gymnasium.wrappers.FrameStackObservation(env, 4)  # (4, 84, 84)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def solve_threshold(env_id: str) -> float | None:
    """The env's `reward_threshold` (CartPole-v1: 475), or None."""
    spec = __import__("gymnasium").spec(env_id) if not env_id.startswith("ALE/") else None
    return None if spec is None or spec.reward_threshold is None else float(spec.reward_threshold)


class Replay:
    """The replay memory D: the last `capacity` transitions (s, a, r, s', terminated) in flat arrays."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: Any):
        self.capacity, self.pos, self.n = capacity, 0, 0
        self.obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.action = np.zeros(capacity, dtype=np.int64)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)

    def add(self, obs, action, reward, next_obs, terminated) -> int:
        i = self.pos
        self.obs[i], self.action[i], self.reward[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, terminated
        self.pos, self.n = (i + 1) % self.capacity, min(self.n + 1, self.capacity)
        return i

    def batch(self, index: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
        arrays = (self.obs, self.action, self.reward, self.next_obs, self.terminated)
        return tuple(torch.as_tensor(a[index], device=device) for a in arrays)

    def state(self) -> dict:
        names = ("obs", "next_obs", "action", "reward", "terminated")
        return {"pos": self.pos, "n": self.n, **{k: getattr(self, k)[: self.n] for k in names}}

    def load(self, state: dict) -> None:
        self.pos, self.n = int(state["pos"]), int(state["n"])
        for k in ("obs", "next_obs", "action", "reward", "terminated"):
            getattr(self, k)[: self.n] = state[k]


class UniformSampler:
    """The paper's replay: indices uniform over the memory, all weights 1."""

    def add(self, index: int) -> None:
        pass

    def sample(self, rng: np.random.Generator, batch: int, n: int, progress: float) -> tuple[np.ndarray, None]:
        return rng.integers(0, n, size=batch), None

    def update(self, index: np.ndarray, td_error: np.ndarray) -> None:
        pass

    def state(self) -> dict:
        return {}

    def load(self, state: dict) -> None:
        pass


# ---- one update (Eq. 3) and one update phase ----------------------------------------------------------
def make_qnet(cfg: Config, obs_shape: tuple[int, ...], n_actions: int) -> nn.Module:
    return NatureCNN(n_actions, obs_shape[0]) if cfg.atari else QMLP(int(np.prod(obs_shape)), n_actions, cfg.hidden)


def dqn_update(q: nn.Module, q_target: nn.Module, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...],
               cfg: Config, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One gradient step of Eq. (3) on a replayed minibatch; returns the loss and |delta| (B,) before the step.

    batch = (s, a, r, s', terminated); weights (B,): prioritized replay's importance weights, or None. The
    target y bootstraps from theta^- (Double DQN: a' picked by theta, valued by theta^-) and has no gradient.
    """
    s, a, r, s_next, terminated = batch
    with torch.no_grad():
        y = td_target(r, terminated, q_target(s_next), cfg.gamma, q(s_next) if cfg.double else None)  # Eq. (1)
    q_sa = q(s).gather(1, a.unsqueeze(1)).squeeze(1)  # Q(s, a; theta), (B,)
    loss = td_loss(q_sa, y, cfg.huber_delta, weights)  # Methods: error clipping == Huber
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()  # Eq. (3)
    return loss.detach(), (y - q_sa).detach().abs()


def replay_updates(q: nn.Module, q_target: nn.Module, opt: torch.optim.Optimizer, memory: Replay, sampler: Any,
                   rng: np.random.Generator, cfg: Config, progress: float, updates: int) -> tuple[int, torch.Tensor]:
    """One update phase: `gradient_steps` minibatches drawn by `sampler`, each a `dqn_update` whose |delta|
    goes back to the sampler, and theta^- <- theta every C updates. Returns the update count and last loss."""
    dev = next(q.parameters()).device
    for _ in range(cfg.gradient_steps):
        index, weights = sampler.sample(rng, cfg.batch_size, memory.n, progress)
        w = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=dev)
        loss, abs_td = dqn_update(q, q_target, opt, memory.batch(index, dev), cfg, w)
        sampler.update(index, abs_td.cpu().numpy())
        updates += 1
        if updates % cfg.target_update == 0:
            q_target.load_state_dict(q.state_dict())  # Methods: theta^- <- theta every C updates
    return updates, loss


# ---- the loop -----------------------------------------------------------------------------------------
def learn(cfg: Config, run: Run, sampler: Any = None, prefix: str = "", state: dict | None = None,
          save: Any = None, evaluator: Any = None) -> dict[str, float]:
    """Train one DQN agent; log under `prefix`; resume from `state`; `save(state)` checkpoints; `evaluator`
    (default `seminal.core.rl.evaluate`, same signature) scores the greedy policy, e.g. timed by a benchmark.

    On CPU the MLP runs on one thread for the duration (restored after): intra-op threads only add
    synchronisation to matmuls this small, and cost 10x when the cores are shared (notes, detail 3).
    """
    threads = torch.get_num_threads()
    if run.device.type == "cpu" and not cfg.atari:
        torch.set_num_threads(1)
    try:
        return _learn(cfg, run, sampler, prefix, state, save, evaluator or evaluate)
    finally:
        torch.set_num_threads(threads)


def _learn(cfg: Config, run: Run, sampler: Any, prefix: str, state: dict | None, save: Any,
           evaluator: Any) -> dict[str, float]:
    cfg.validate()
    env = make_train_env(cfg, seed=run.seed)
    n_actions = require_discrete(env, cfg.env_id, "DQN")
    obs_shape = env.observation_space.shape
    dev = run.device
    with torch.random.fork_rng(devices=[]):  # initial weights depend on the seed alone: every arm of an
        torch.manual_seed(run.seed)  # ablation (entry 15's uniform vs prioritized) starts from the same net
        q = make_qnet(cfg, obs_shape, n_actions).to(dev)
    q_target = copy.deepcopy(q)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(q.parameters(), lr=cfg.lr, foreach=True)
    else:
        opt = torch.optim.RMSprop(q.parameters(), lr=cfg.lr, alpha=0.95, eps=0.01, centered=True)
    memory = Replay(cfg.buffer_size, obs_shape, np.uint8 if cfg.atari else np.float32)
    sampler = sampler or UniformSampler()
    rng = np.random.default_rng([run.seed, 7])  # exploration and minibatch draws
    greedy_np = q.numpy_greedy() if isinstance(q, QMLP) and dev.type == "cpu" else None

    def greedy(obs: np.ndarray) -> int:
        if greedy_np is not None:
            return greedy_np(obs)
        with torch.no_grad():
            return int(q(torch.as_tensor(np.asarray(obs), device=dev).unsqueeze(0)).argmax())

    s = {"step": 0, "episode": 0, "updates": 0, "train_seconds": 0.0, "evals": []}
    ep_return, ep_len = 0.0, 0
    if state is None:
        obs, _ = env.reset()
    else:
        q.load_state_dict(state["q"])  # copies in place: greedy_np's views stay valid
        q_target.load_state_dict(state["q_target"])
        opt.load_state_dict(state["opt"])
        memory.load(state["memory"])
        sampler.load(state["sampler"])
        rng.bit_generator.state = json.loads(state["rng"])
        s = {k: state[k] for k in s}
        s["evals"] = [list(e) for e in s["evals"]]
        if set_env_state(env, state.get("env")):  # classic control: continue the interrupted episode exactly
            obs, ep_return, ep_len = np.asarray(state["obs"]), float(state["ep_return"]), int(state["ep_len"])
        else:  # Atari: the emulator's state is not saved; a new episode starts (not bit-identical, notes)
            obs, _ = env.reset(seed=run.seed + 1000 * s["episode"])
    threshold = solve_threshold(cfg.env_id)
    t0 = time.perf_counter()
    for step in run.progress(range(s["step"], cfg.total_steps), total=cfg.total_steps, initial=s["step"],
                             desc=f"dqn {prefix}", unit="step"):
        eps = epsilon(step, cfg.eps_start, cfg.eps_end, cfg.exploration_steps)
        action = int(rng.integers(n_actions)) if rng.random() < eps else greedy(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        r = clip_reward(reward) if cfg.clip_rewards else float(reward)
        sampler.add(memory.add(obs, action, r, next_obs, terminated))  # s' stored even when truncated
        ep_return, ep_len = ep_return + float(reward), ep_len + 1
        if terminated or truncated:
            s["episode"] += 1
            run.log({f"{prefix}train/episode_return": ep_return, f"{prefix}train/episode_length": ep_len,
                     f"{prefix}train/epsilon": eps}, step=step + 1)
            obs, _ = env.reset()
            ep_return, ep_len = 0.0, 0
        else:
            obs = next_obs

        if step + 1 >= cfg.learning_starts and (step + 1) % cfg.train_freq == 0:
            s["updates"], loss = replay_updates(q, q_target, opt, memory, sampler, rng, cfg,
                                                (step + 1) / cfg.total_steps, s["updates"])
            if s["updates"] % 100 < cfg.gradient_steps:
                run.check_finite(loss.item(), step + 1, hint="lr")
                run.log({f"{prefix}train/loss": loss.item()}, step=step + 1)

        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.total_steps:
            s["train_seconds"] += time.perf_counter() - t0
            returns = evaluator(greedy, cfg.env_id, cfg.eval_episodes,
                                env=make_train_env(cfg) if cfg.atari else None)
            mean_return = float(np.mean(returns))
            s["evals"].append([step + 1, mean_return, s["train_seconds"]])
            run.log({f"{prefix}eval/return": mean_return, f"{prefix}eval/return_std": float(np.std(returns)),
                     f"{prefix}time/train_seconds": s["train_seconds"]}, step=step + 1)
            t0 = time.perf_counter()
        if save is not None and step + 1 < cfg.total_steps and ((step + 1) % cfg.checkpoint_every == 0 or run.due()):
            s["train_seconds"] += time.perf_counter() - t0
            s["step"] = step + 1
            save({**s, "q": q.state_dict(), "q_target": q_target.state_dict(), "opt": opt.state_dict(),
                  "memory": memory.state(), "sampler": sampler.state(), "rng": json.dumps(rng.bit_generator.state),
                  "env": env_state(env), "obs": np.asarray(obs), "ep_return": ep_return, "ep_len": ep_len})
            t0 = time.perf_counter()
    env.close()

    evals = np.array(s["evals"])  # (k, 3): step, mean return, train seconds so far
    solved = [e for e in s["evals"] if threshold is not None and e[1] >= threshold]
    # Wall times are logged (time/train_seconds), not returned: a resumed run must return the same numbers.
    return {
        f"{prefix}eval/return": float(evals[-1, 1]),  # the claim's number: the policy at the end of training
        f"{prefix}eval/best_return": float(evals[:, 1].max()),
        f"{prefix}eval/mean_return": float(evals[:, 1].mean()),  # area under the eval curve / its length
        f"{prefix}eval/solved_step": float(solved[0][0]) if solved else float("nan"),
    }


def train(cfg: Config, run: Run) -> dict[str, float]:
    metrics = learn(cfg, run, state=run.restore(), save=run.checkpoint)
    line_plot(run.plots_dir / "eval_return.png", {"greedy policy": run.history("eval/return"),
                                                   "training episodes": run.history("train/episode_return")},
              xlabel="env steps", ylabel="return", title=f"DQN on {cfg.env_id}", hline=solve_threshold(cfg.env_id))
    return metrics
