"""Plumbing shared by the off-policy continuous-control papers (DDPG, TD3, SAC). No algorithm math here.

  * `make_box_env`: a continuous-action env with one-line errors (wrong action space, missing extra).
  * `scale_action`: the networks act in [-1, 1]; the env gets [low, high], exact at both ends.
  * `ReplayBuffer`: one preallocated float32 table, sampled with NumPy indices (one gather a batch).
  * `EnsembleMLP`: K independent MLPs stored as stacked weights, run as one batched matmul
    (`torch.baddbmm`): twin critics are one forward, one backward and one optimizer.
  * `Nets`, `make_nets`: a deterministic actor mu(s) in [-1, 1] and K critics Q_k(s, a), with target copies.
  * `q_vs_return`: the critic's estimate beside the true discounted return of the policy (Monte Carlo).
  * `offpolicy_loop`: act with exploration, store, sample, call the paper's `update(batch, step)`,
    evaluate (with an optional measurement at each evaluation), checkpoint (with the env's own state, so
    a resumed run continues exactly). DDPG, TD3 and SAC differ only in the `act` and `update` they pass in.
  * `CudaGraphed`: on a GPU, replays a whole update step as one CUDA graph (same math, one launch).

Targets, losses, noise and update rules stay in the paper modules.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.rl import env_state, evaluate, make_env, require_box, set_env_state
from seminal.core.run import Run


def make_box_env(env_id: str, algorithm: str, seed: int | None = None, **kwargs: Any) -> tuple[Any, np.ndarray,
                                                                                                np.ndarray]:
    """(env, action low, action high) for a Box-action, flat-Box-observation env; SeminalError otherwise."""
    env = make_env(env_id, seed=seed, **kwargs)
    low, high = require_box(env, env_id, algorithm)
    obs_space = env.observation_space
    if type(obs_space).__name__ != "Box" or len(obs_space.shape) != 1:
        raise SeminalError(f"{algorithm} here needs flat vector observations; {env_id} has {obs_space}")
    return env, low, high


def scale_action(u: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map u in [-1, 1] to [low, high]; written so that u=-1 gives low and u=1 gives high exactly."""
    u = np.clip(u, -1.0, 1.0)
    return (0.5 * (1.0 - u) * low + 0.5 * (1.0 + u) * high).astype(np.float32)


class ReplayBuffer:
    """A ring buffer of transitions (s, a, r, s', terminated) in one float32 table of rows.

    `terminated` is the env's true end of an episode; a time-limit truncation is stored as not terminated,
    so the target still bootstraps from s' (the state is not absorbing, the clock just ran out).
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device | str = "cpu"):
        self.capacity, self.obs_dim, self.act_dim = capacity, obs_dim, act_dim
        self.width = 2 * obs_dim + act_dim + 2
        self.table = torch.zeros(capacity, self.width, dtype=torch.float32, device=device)
        self._row = np.zeros(self.width, dtype=np.float32)
        self.size = 0
        self.pos = 0

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray,
            terminated: bool) -> None:
        o, a = self.obs_dim, self.act_dim
        row = self._row
        row[:o] = obs
        row[o : o + a] = action
        row[o + a] = reward
        row[o + a + 1 : 2 * o + a + 1] = next_obs
        row[-1] = float(terminated)
        self.table[self.pos] = torch.from_numpy(row)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, ...]:
        """Uniform minibatch: obs (B, o), action (B, a), reward (B,), next_obs (B, o), terminated (B,)."""
        idx = torch.from_numpy(rng.integers(0, self.size, size=batch))
        rows = self.table[idx.to(self.table.device, non_blocking=True)]  # one gather: (B, width)
        o, a = self.obs_dim, self.act_dim
        return rows[:, :o], rows[:, o : o + a], rows[:, o + a], rows[:, o + a + 1 : 2 * o + a + 1], rows[:, -1]

    def state_dict(self) -> dict[str, Any]:
        return {"table": self.table[: self.size].cpu().clone(), "size": self.size, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.pos = int(state["size"]), int(state["pos"])
        self.table[: self.size] = state["table"].to(self.table.device)


def mlp(sizes: tuple[int, ...], out_act: nn.Module | None = None) -> nn.Sequential:
    """Linear-ReLU stack: sizes (in, h1, ..., out); ReLU between layers, `out_act` after the last."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


class EnsembleMLP(nn.Module):
    """K independent ReLU MLPs with stacked weights (K, in, out); forward is one baddbmm per layer.

    Each member is initialised like `nn.Linear` (U(-1/sqrt(in), 1/sqrt(in)) for weights and biases).
    `forward(x, frozen=True)` uses detached weights: gradients reach the input (the action, for an actor
    loss) but no weight gradient is computed, which is also what the actor's update needs.
    """

    def __init__(self, members: int, sizes: tuple[int, ...]):
        super().__init__()
        self.members = members
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """x (B, in) shared by all members, or (K, B, in) one batch each -> (K, B, out)."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.members, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if frozen:
                w, b = w.detach(), b.detach()
            x = torch.baddbmm(b, x, w)  # (K, B, out) = b + x @ w
            if i < last:
                x = torch.relu(x)
        return x


class CudaGraphed:
    """Call `fn(*tensors)` eagerly `warmup` times, then capture it once as a CUDA graph and replay that.

    The math is `fn`'s, unchanged. Why: on a GPU one SAC update is about 190 operator calls, and launching
    them one at a time from Python takes longer than running them; a graph launches all of them at once.
    What `fn` must allow (as `torch.cuda.graph` requires): fixed input shapes, no host sync (`.item()`,
    `.cpu()`, printing), and optimizers built with `capturable=True`. Its outputs are tensors that every
    replay overwrites in place. The eager warm-up calls, on a side stream, create the optimizers' state
    before the capture; they are real updates on the batches they are given.
    """

    def __init__(self, fn: Any, warmup: int = 3):
        self.fn, self.warmup, self.calls = fn, warmup, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: list[torch.Tensor] = []
        self.out: Any = None

    def __call__(self, *inputs: torch.Tensor) -> Any:
        if self.graph is None and self.calls < self.warmup:
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.fn(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self.inputs = [x.contiguous().clone() for x in inputs]  # the graph's fixed input buffers
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):  # records the kernels; nothing runs yet
                self.out = self.fn(*self.inputs)
        else:
            for buf, x in zip(self.inputs, inputs):
                buf.copy_(x)
        self.graph.replay()
        return self.out


def load_optimizer(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """`opt.load_state_dict(state)`, keeping this optimizer's own `capturable` setting.

    A checkpoint from a CUDA-graph run (capturable Adam, step counters on the GPU) then resumes on a CPU,
    and a CPU checkpoint resumes in a graph, with each step counter moved to where its parameter lives.
    """
    capturable = [group.get("capturable", False) for group in opt.param_groups]
    opt.load_state_dict(state)
    for group, flag in zip(opt.param_groups, capturable):
        group["capturable"] = flag
        for p in group["params"]:
            st = opt.state.get(p, {})
            if torch.is_tensor(st.get("step")):
                st["step"] = st["step"].to(p.device if flag else "cpu", torch.float32)


# ---- a deterministic actor and K critics, with target copies (DDPG, TD3) ---------------------------------
@dataclass
class Nets:
    """Actor mu, critics Q (K members), their targets, and one Adam optimizer each for actor and critics."""

    actor: nn.Module
    critic: EnsembleMLP
    actor_target: nn.Module
    critic_target: EnsembleMLP
    actor_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).state_dict() for k in
                ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("actor", "critic", "actor_target", "critic_target"):
            getattr(self, k).load_state_dict(state[k])
        for k in ("actor_opt", "critic_opt"):
            load_optimizer(getattr(self, k), state[k])


def make_nets(obs_dim: int, act_dim: int, hidden: tuple[int, ...], critics: int, actor_lr: float,
              critic_lr: float, critic_weight_decay: float = 0.0, device: Any = "cpu") -> Nets:
    """mu(s) = tanh(MLP(s)) in [-1, 1]^act_dim; Q_k(s, a) = MLP_k([s, a]), k = 1..critics; targets are copies."""
    actor = mlp((obs_dim, *hidden, act_dim), nn.Tanh()).to(device)
    critic = EnsembleMLP(critics, (obs_dim + act_dim, *hidden, 1)).to(device)  # (K, B, 1)
    fused = {"foreach": True}
    return Nets(actor, critic, copy.deepcopy(actor), copy.deepcopy(critic),
                torch.optim.Adam(actor.parameters(), lr=actor_lr, **fused),
                torch.optim.Adam(critic.parameters(), lr=critic_lr, weight_decay=critic_weight_decay, **fused))


# ---- measuring a critic against the truth -------------------------------------------------------------------
def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = sum_k gamma^k r_{t+k} for every t of one rollout (ending where `rewards` ends)."""
    out = np.zeros(len(rewards))
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


@torch.no_grad()
def q_vs_return(actor: Callable[[torch.Tensor], torch.Tensor], q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                env_id: str, gamma: float, episodes: int, states: int, horizon: int, seed: int = 20_000,
                device: Any = "cpu") -> dict[str, float]:
    """Mean critic estimate q(s, actor(s)) and mean true discounted return G(s) of `actor`, over fresh rollouts.

    `actor` maps (B, obs) to actions in [-1, 1] (deterministic); `q` maps (states, actions) to (B,) estimates.
    Each of `episodes` rollouts (seeds seed, seed+1, ...) runs `states + horizon` steps (or to termination);
    the first `states` states are scored, each with at least `horizon` steps of return behind it.
    Returns {"q_estimate", "mc_return", "q_bias" (= estimate - return)}.
    """
    env, low, high = make_box_env(env_id, "q_vs_return", max_episode_steps=states + horizon)
    qs, gs = [], []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        seen, rewards = [], []
        for _ in range(states + horizon):
            seen.append(obs)
            u = actor(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])[0].cpu().numpy()
            obs, reward, terminated, truncated, _ = env.step(scale_action(u, low, high))
            rewards.append(reward)
            if terminated or truncated:
                break
        n = min(states, len(seen))
        s = torch.as_tensor(np.array(seen[:n]), dtype=torch.float32, device=device)
        qs.append(q(s, actor(s)).cpu().numpy())
        gs.append(discounted_returns(np.asarray(rewards, dtype=np.float64), gamma)[:n])
    env.close()
    est, true = float(np.concatenate(qs).mean()), float(np.concatenate(gs).mean())
    return {"q_estimate": est, "mc_return": true, "q_bias": est - true}


# ---- the off-policy loop ------------------------------------------------------------------------------------
Act = Callable[[np.ndarray, bool], np.ndarray]
"""The paper's behaviour: `act(obs, explore) -> u`, an action in [-1, 1]^A for one observation; `explore=True`
while collecting (the paper's exploration: noise, or a sample of a stochastic policy), False to evaluate."""
Update = Callable[[tuple[torch.Tensor, ...], int], dict[str, torch.Tensor]]
"""The paper's algorithm: `update(batch, step) -> metrics`, one gradient step on a uniform minibatch
(s (B, o), a (B, a), r (B,), s' (B, o), terminated (B,)); `step` is the 0-based env step it follows."""
Measure = Callable[[int], dict[str, float]]
"""`measure(step) -> metrics`, called at every evaluation (e.g. the critic against the true return)."""


def _rng_state(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)  # a string: PCG64's 128-bit ints survive the checkpoint


def offpolicy_loop(env: Any, cfg: Any, act: Act, update: Update, stateful: dict[str, Any], *, seed: int,
                   run: Run | None = None, tag: str = "train", eval_env: str | Callable[[], Any] | None = None,
                   measure: Measure | None = None, episode_start: Callable[[], None] | None = None,
                   resume: dict[str, Any] | None = None, outer: dict[str, Any] | None = None,
                   hint: str = "lr", device: Any = "cpu", evaluator: Callable[..., list[float]] = evaluate) -> float:
    """Act, store, sample, `update` once a step; evaluate every `eval_every` steps; checkpoint. Returns the
    final deterministic evaluation's mean return (nan without a run).

    env: the training env (closed at the end); eval_env: an id or a factory for evaluation envs (default:
    the training env's id). cfg: any config with total_steps, start_steps, batch_size, buffer_size,
    eval_every, eval_episodes, checkpoint_every. The first `start_steps` actions are uniform in [-1, 1];
    then `act(obs, explore=True)`. One `update` per env step from `start_steps` on; `episode_start()` is
    called before every training episode (e.g. to reset an OU process). stateful: objects with
    state_dict/load_state_dict (networks, optimizers, the noise's generator) saved in checkpoints.
    With a `run`: metrics go to `<tag>/...`; `measure(step)`'s metrics are logged beside each evaluation; a
    checkpoint `{**outer, "loop": ...}` is written every `checkpoint_every` steps and whenever `run.due()`
    (Ctrl-C, or `checkpoint_seconds` passed). Pass the restored `state["loop"]` back as `resume`. `evaluator`
    replaces the deterministic evaluation (`seminal.core.rl.evaluate`'s signature), e.g. a timed one. The
    checkpoint holds the env's own state, the episode counter, the running return, the replay buffer, this
    loop's generator and torch's: a resumed run continues exactly. Envs simulated in C (Box2D, MuJoCo)
    cannot be saved: they restart the interrupted episode from its seed (close to, not equal to, a
    straight run).
    """
    low, high = require_box(env, getattr(getattr(env, "spec", None), "id", None) or "the env", tag.upper())
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    name = getattr(getattr(env, "spec", None), "id", None) or ""
    eval_env = eval_env if eval_env is not None else name
    buffer = ReplayBuffer(min(cfg.buffer_size, cfg.total_steps), obs_dim, act_dim, device)
    rng = np.random.default_rng([seed, 1])  # warm-up actions and minibatch indices
    cuda = torch.device(device).type == "cuda"

    def reset(episode: int) -> np.ndarray:
        if episode_start is not None:
            episode_start()
        return env.reset(seed=seed * 1_000_003 + episode)[0]  # every episode from its own seed

    first, episode, ret = 0, 0, 0.0
    if resume is None:
        obs = reset(0)
    else:
        for key, obj in stateful.items():
            obj.load_state_dict(resume[key])
        buffer.load_state_dict(resume["buffer"])
        rng.bit_generator.state = json.loads(resume["rng"])
        first, episode, ret = resume["step"], resume["episode"], resume["ret"]
        torch.set_rng_state(resume["torch_rng"])  # as at the checkpoint, whatever was built since the restore
        if cuda and resume.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(resume["cuda_rng"], torch.device(device))
        if resume.get("env") is not None and set_env_state(env, resume["env"]):
            obs = np.asarray(resume["obs"], dtype=np.float32)  # the env continues exactly where it was
        else:  # Box2D, MuJoCo: the interrupted episode starts again from its seed
            obs, ret = reset(episode), 0.0

    def policy(o: np.ndarray) -> np.ndarray:
        return scale_action(act(o, False), low, high)

    bar = run.progress(total=cfg.total_steps, initial=first, desc=tag, unit="step") if run is not None else None
    final, last = math.nan, {}
    t0, t_steps = time.perf_counter(), first
    for step in range(first, cfg.total_steps):
        u = rng.uniform(-1.0, 1.0, act_dim) if step < cfg.start_steps else act(obs, True)
        next_obs, reward, terminated, truncated, _ = env.step(scale_action(u, low, high))
        buffer.add(obs, u, reward, next_obs, terminated)  # a time-limit truncation is not a terminal state
        obs, ret = next_obs, ret + float(reward)
        if terminated or truncated:
            if run is not None:
                run.log({f"{tag}/episode_return": ret}, step=step + 1)
            episode += 1
            obs, ret = reset(episode), 0.0
        if step >= cfg.start_steps:
            last = update(buffer.sample(rng, cfg.batch_size), step)  # the paper's algorithm
        if bar is not None:
            bar.update()
        if run is None:
            continue
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.total_steps:
            sps = (step + 1 - t_steps) / max(time.perf_counter() - t0, 1e-9)
            eval_factory = eval_env() if callable(eval_env) else None
            returns = evaluator(policy, eval_env if isinstance(eval_env, str) else name, cfg.eval_episodes,
                                env=eval_factory)
            final = float(np.mean(returns))
            row = {f"{tag}/eval_return": final, f"{tag}/steps_per_s": sps}
            row.update({f"{tag}/{k}": float(v) for k, v in last.items()})
            if measure is not None:
                row.update({f"{tag}/{k}": float(v) for k, v in measure(step + 1).items()})
            run.check_finite(row.get(f"{tag}/critic_loss", 0.0), step + 1, "critic loss", hint=hint)
            run.log(row, step=step + 1)
            bar.set_postfix(eval_return=f"{final:.1f}", refresh=False)
            t0, t_steps = time.perf_counter(), step + 1
        if step + 1 < cfg.total_steps and ((step + 1) % cfg.checkpoint_every == 0 or run.due()):
            loop = {"step": step + 1, "episode": episode, "ret": ret, "obs": np.asarray(obs, dtype=np.float32),
                    "env": env_state(env), "buffer": buffer.state_dict(), "rng": _rng_state(rng),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(torch.device(device)) if cuda else None,
                    **{key: obj.state_dict() for key, obj in stateful.items()}}
            run.checkpoint({**(outer or {}), "loop": loop})
    if bar is not None:
        bar.close()
    env.close()
    return final


def plot_q_vs_return(run: Run, tags: list[str], name: str, title: str) -> None:
    """DDPG's Fig. 3 / TD3's Fig. 1: each agent's critic estimate and true discounted return over training."""
    series = {}
    for tag in tags:
        series[f"{tag}: Q(s, mu(s))"] = run.history(f"{tag}/q_estimate")
        series[f"{tag}: true return"] = run.history(f"{tag}/mc_return")
    line_plot(run.plots_dir / f"{name}.png", series, xlabel="env step", ylabel="discounted value", title=title)
