"""Plumbing shared by the off-policy continuous-control papers (DDPG, TD3, SAC). No algorithm math here.

  * `make_box_env`: a continuous-action env with one-line errors (wrong action space, missing extra).
  * `scale_action`: the networks act in [-1, 1]; the env gets [low, high], exact at both ends.
  * `ReplayBuffer`: one preallocated float32 table, sampled with NumPy indices (one gather a batch).
  * `EnsembleMLP`: K independent MLPs stored as stacked weights, run as one batched matmul
    (`torch.baddbmm`): twin critics are one forward, one backward and one optimizer.
  * `CudaGraphed`: on a GPU, replays a whole update step as one CUDA graph (same math, one launch).

Targets, losses, noise and update rules stay in the paper modules.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from seminal.core.errors import SeminalError
from seminal.core.rl import make_env, require_box


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
