"""Multi-agent actor-critic for mixed cooperative-competitive environments — Lowe, Wu, Tamar, Harb, Abbeel &
Mordatch, NeurIPS 2017, arXiv:1706.02275.

MADDPG is DDPG with one change that matters when several agents learn at once: each agent i keeps a
decentralised actor mu_i(o_i) that sees only its own observation, but its critic Q_i(x, a_1, ..., a_N) is
centralised: it sees every agent's observation and every agent's action. From agent i's point of view the
environment is non-stationary (the other agents' policies keep changing), but given all actions it is
stationary again, so the critic can be learned off-policy from replay. The actor follows dQ_i/da_i with the
other agents' actions taken from the buffer; the critic's target uses every agent's *target* actor on the
next observations. Discrete actions (moving, speaking a symbol) are made differentiable with the
Gumbel-softmax relaxation, as in the paper's communication tasks. Independent DDPG, the paper's baseline, is
the same code with each critic given only its own observation and action ("decentralised critics").

Experiments: cooperative communication (MPE `simple_speaker_listener`, §5, Fig. 4): a speaker sees the goal
landmark's colour, a listener sees the landmarks and hears the speaker, both get minus the listener's squared
distance to the goal. Competitive tasks (physical deception `simple_adversary`, predator-prey `simple_tag`)
compare a team trained with MADDPG against one trained with DDPG (§5, Fig. 7); a preset here, not run.

Equation map (arXiv v4):
  Eq. (5)  grad J(mu_i) = E[grad mu_i(o_i) dQ_i(x, a_1..a_N)/da_i |a_i = mu_i(o_i)], a_j (j != i) from D
                                                                            -> `maddpg_update`, actor loss
  Eq. (6)  L(theta_i) = E[(Q_i(x, a_1..a_N) - y)^2], y = r_i + gamma Q'_i(x', a'_1..a'_N)|a'_j = mu'_j(o'_j)
                                                                            -> `td_target`, `maddpg_update`
  §4.1     x = (o_1, ..., o_N) and all actions for MADDPG; (o_i, a_i) for DDPG -> `critic_inputs`
  §4.1     theta'_i <- tau theta_i + (1 - tau) theta'_i                      -> `ddpg.polyak_update`
  §5, App. Gumbel-softmax: softmax((logits + g) / T), g = -log(-log U)    -> `gumbel_noise`, `gumbel_softmax`
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Prob, Range, Sizes
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.run import Run
from seminal.papers.multi_agent._marl import MultiAgentEnv, Scale, arms_in_turn, one_torch_thread, rollout_return
from seminal.papers.rl.ddpg import polyak_update

# an arm: which agents get centralised critics. Cooperative tasks: every agent MADDPG, or every agent DDPG.
# Competitive tasks also: "X_vs_Y" = the good agents learn with X, the adversaries with Y (§5, Fig. 7).
ARMS = ("maddpg", "ddpg", "maddpg_vs_ddpg", "ddpg_vs_maddpg")


@dataclass(frozen=True)
class Config:
    task: Literal["simple_speaker_listener", "simple_adversary", "simple_tag"] = "simple_speaker_listener"
    """MPE task: cooperative communication (§5, Fig. 4), physical deception or predator-prey (§5, Fig. 7)."""
    arms: tuple[str, ...] = ("maddpg", "ddpg")
    """Learners trained one after the other on the same seed (paired): maddpg, ddpg, maddpg_vs_ddpg, ddpg_vs_maddpg."""
    episodes: PosInt = 25_000
    """Training episodes per arm (the paper: 25,000 on cooperative communication), max_cycles steps each."""
    max_cycles: PosInt = 25
    """Steps per episode (the paper's code: 25)."""
    hidden: Sizes = (64, 64)
    """Hidden widths of every actor and critic (§5: two-layer ReLU MLPs of 64 units)."""
    lr: PosFloat = 1e-2
    """Adam step size of actors and critics (§5: 0.01)."""
    gamma: Prob = 0.95
    """Discount gamma (§5: 0.95)."""
    tau: Annotated[float, Range(gt=0, le=1)] = 0.01
    """Polyak rate of the target networks (§5: 0.01)."""
    batch_size: PosInt = 1024
    """Transitions per minibatch (the paper's code: 1024)."""
    buffer_size: PosInt = 1_000_000
    """Replay capacity in transitions (§5: 10^6)."""
    learning_starts: NonNegInt = 25_600
    """Env steps collected before the first update (the paper's code: batch_size x max_cycles)."""
    update_every: PosInt = 100
    """Env steps between updates of all agents (the paper's code: 100)."""
    hard: bool = False
    """Straight-through Gumbel-softmax (one-hot actions to the env, soft gradients) or soft (the paper's code:
    the env takes the relaxed sample as a continuous action vector)."""
    temperature: PosFloat = 1.0
    """Gumbel-softmax temperature T (the paper's code: 1)."""
    logit_reg: NonNegFloat = 1e-3
    """Weight of mean(logits^2) added to each actor loss (the paper's code: 1e-3)."""
    grad_clip: PosFloat = 0.5
    """Max gradient norm of every actor and critic step (the paper's code: 0.5)."""
    scale: Scale = "team_sum"
    """Scale of reported returns (`_marl`): team_sum (sum over the team's agents and steps) or per_agent."""
    eval_policy: Literal["sample", "greedy"] = "sample"
    """How evaluations act: `sample`, each actor's Gumbel-softmax sample as in training (the policy the paper's
    curves measure; its noise is drawn from the seed alone, the same for every arm and evaluation), or `greedy`, the
    one-hot argmax of each actor's logits."""
    eval_every: PosInt = 1000
    """Training episodes between evaluations."""
    eval_episodes: PosInt = 20
    """Episodes per evaluation (indices 10^6, 10^6 + 1, ...: the same episodes for every arm)."""
    final_episodes: PosInt = 100
    """Episodes of the final evaluation, the returned `<arm>_return` (the same 10^6, ... episodes)."""
    checkpoint_every: NonNegInt = 2000
    """Training episodes between checkpoints (0: only when `run.due()` and at the end)."""

    def validate(self) -> None:
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms:
            raise SeminalError(f"arms={','.join(self.arms)}: choose from {', '.join(ARMS)}")
        if self.task == "simple_speaker_listener" and any("_vs_" in a for a in self.arms):
            raise SeminalError("arms X_vs_Y need a competitive task: task=simple_adversary or task=simple_tag")


PRESETS = {
    # cooperative communication on one CPU core: 1/10 of the paper's episodes, updates every 50 steps on batches
    # of 256 from step 2500 (notes, deviations 2-3; tuned on seeds 100-102)
    "quick": Config(episodes=2500, batch_size=256, learning_starts=2500, update_every=50, eval_every=250,
                    checkpoint_every=500),
    # §5: 25,000 episodes, the paper's code's settings
    "full": Config(eval_every=1000, checkpoint_every=2500),
    # physical deception (§5, Fig. 7): MADDPG good agents vs DDPG adversary, and the reverse; not run here
    "deception": Config(task="simple_adversary", arms=("maddpg_vs_ddpg", "ddpg_vs_maddpg"), eval_every=1000,
                        checkpoint_every=2500),
}

_FIG4 = ("MADDPG learns to communicate the goal; DDPG's listener learns to ignore the speaker and moves to the "
         "middle of the landmarks",
         "sanity: the direction of §5, Fig. 4 (cooperative communication)")
_COMM = [
    Claim("MADDPG's team return on simple_speaker_listener beats independent DDPG's at the same budget "
          "(team_sum; mean of the paired gaps)", "comm/maddpg_minus_ddpg", ">", 0.0, *_FIG4, aggregate="mean",
          bar="sanity", paired=("comm/maddpg_return", "comm/ddpg_return")),
    Claim("MADDPG's team return beats the uniform-random policy on every seed (team_sum)",
          "comm/maddpg_over_random", ">", 0.0, "learning at all", "sanity", aggregate="all", bar="sanity",
          paired=("comm/maddpg_return", "comm/random_return")),
]
CLAIMS = {
    "quick": _COMM,
    "full": _COMM,
    "deception": [
        Claim("Good agents score more as MADDPG against a DDPG adversary than as DDPG against a MADDPG adversary "
              "(good agents' team_sum)", "deception/maddpg_vs_ddpg_minus_ddpg_vs_maddpg", ">", 0.0,
              "MADDPG agents deceive a DDPG adversary, DDPG agents are fooled by a MADDPG one",
              "sanity: the direction of §5, Fig. 7 (physical deception)", aggregate="mean", bar="sanity",
              paired=("deception/maddpg_vs_ddpg_return", "deception/ddpg_vs_maddpg_return")),
    ],
}
PREFIX = {"simple_speaker_listener": "comm/", "simple_adversary": "deception/", "simple_tag": "tag/"}


# ---- the paper's math: pure functions ------------------------------------------------------------------------
def gumbel_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """g = -log(-log U), U ~ Uniform(0, 1): standard Gumbel noise, float32."""
    u = rng.uniform(np.finfo(np.float64).tiny, 1.0, size=shape)
    return torch.as_tensor(-np.log(-np.log(u)), dtype=torch.float32)


def gumbel_softmax(logits: torch.Tensor, noise: torch.Tensor, temperature: float, hard: bool) -> torch.Tensor:
    """y = softmax((logits + g) / T) (§5, the Gumbel-softmax); `hard`: the one-hot of argmax y in the forward pass
    with y's gradient (straight-through). logits, noise (B, A) -> (B, A)."""
    y = torch.softmax((logits + noise) / temperature, dim=-1)
    if not hard:
        return y
    one_hot = torch.nn.functional.one_hot(y.argmax(-1), y.shape[-1]).to(y.dtype)
    return one_hot + y - y.detach()  # straight-through: forward one_hot, backward dy


def critic_inputs(obs: list[torch.Tensor], acts: list[torch.Tensor], i: int, centralised: bool) -> torch.Tensor:
    """Q_i's input (§4.1): every observation and every action (x, a_1..a_N) for MADDPG, or agent i's own
    (o_i, a_i) for DDPG. obs[j] (B, D_j), acts[j] (B, A_j) -> (B, sum D + sum A) or (B, D_i + A_i)."""
    if centralised:
        return torch.cat([*obs, *acts], dim=-1)
    return torch.cat([obs[i], acts[i]], dim=-1)


def td_target(reward: torch.Tensor, terminated: torch.Tensor, gamma: float, q_next: torch.Tensor) -> torch.Tensor:
    """y = r_i + gamma (1 - terminated) Q'_i(x', a'_1..a'_N). Eq. (6); MPE episodes end by time limit only, stored
    as not terminated, so y still bootstraps there."""
    return reward + gamma * (1.0 - terminated) * q_next  # Eq. (6)


# ---- networks ------------------------------------------------------------------------------------------------
def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """Linear layers of `sizes` (in, h1, ..., out) with ReLU between them (§5: two hidden layers of 64)."""
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[k], sizes[k + 1])] + ([nn.ReLU()] if k < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class Agent(nn.Module):
    """Agent i's actor mu_i: o_i (B, D_i) -> logits (B, A_i), its critic Q_i: inputs (B, C) -> (B, 1), target
    copies of both, and one Adam optimizer each. `centralised`: whether Q_i sees every agent (MADDPG)."""

    def __init__(self, actor: nn.Sequential, critic_dim: int, centralised: bool, cfg: Config):
        super().__init__()
        self.centralised = centralised
        self.actor, self.critic = actor, mlp((critic_dim, *cfg.hidden, 1))
        self.actor_target, self.critic_target = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)

    def full_state(self) -> dict:
        return {"nets": self.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict()}

    def load_full_state(self, state: dict) -> None:
        self.load_state_dict(state["nets"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])


class FastActor:
    """Acting without autograd or module overhead: agent i's actor as NumPy matmuls on *views* of its live weights
    (in-place optimizer steps and `load_state_dict` show through), and the Gumbel-softmax sample of one step.
    The same numbers as `gumbel_softmax(actor(o), g, T, hard)` (tested); one step costs ~10 us instead of ~100."""

    def __init__(self, actor: nn.Sequential, temperature: float, hard: bool):
        layers = [m for m in actor if isinstance(m, nn.Linear)]
        self.w = [m.weight.detach().numpy() for m in layers]  # views: (out, in)
        self.b = [m.bias.detach().numpy() for m in layers]
        self.temperature, self.hard = temperature, hard

    def logits(self, o: np.ndarray) -> np.ndarray:
        h = o
        for k, (w, b) in enumerate(zip(self.w, self.b)):
            h = w @ h + b
            if k < len(self.w) - 1:
                h = np.maximum(h, 0.0)
        return h

    def sample(self, o: np.ndarray, g: np.ndarray) -> np.ndarray:
        z = (self.logits(o) + g) / self.temperature
        if self.hard:
            return np.eye(len(z), dtype=np.float32)[int(z.argmax())]
        e = np.exp(z - z.max())
        return (e / e.sum()).astype(np.float32)


def make_agents(env: MultiAgentEnv, centralised: list[bool], cfg: Config) -> list[Agent]:
    """Every actor first, then the critics: the actors are the same draw whatever the critics' widths (paired arms)."""
    joint = sum(env.obs_dims) + sum(env.act_dims)
    actors = [mlp((d, *cfg.hidden, a)) for d, a in zip(env.obs_dims, env.act_dims)]
    return [Agent(actor, joint if c else d + a, c, cfg)
            for actor, d, a, c in zip(actors, env.obs_dims, env.act_dims, centralised)]


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, params, clip: float) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


# ---- one update of every agent (Alg. 1, the inner loop) ------------------------------------------------------
def maddpg_update(agents: list[Agent], batch: tuple, cfg: Config, noise_next: list[torch.Tensor],
                  noise_pi: list[torch.Tensor]) -> dict[str, list[float]]:
    """For each agent i: a critic step on Eq. (6), an actor step along Eq. (5); then every target by Polyak.

    batch = (obs, acts, rewards, next_obs, terminated): obs[j], next_obs[j] (B, D_j), acts[j] (B, A_j) as stored
    (one-hot or relaxed), rewards (B, N), terminated (B,). noise_next[j], noise_pi[j] (B, A_j): the Gumbel noise
    of the target actors' a'_j and of agent j's own relaxed action mu_j(o_j), drawn by the caller."""
    obs, acts, rewards, next_obs, terminated = batch
    with torch.no_grad():  # Eq. (6): a'_j = mu'_j(o'_j), every agent's *target* actor
        next_acts = [gumbel_softmax(ag.actor_target(o), g, cfg.temperature, cfg.hard)
                     for ag, o, g in zip(agents, next_obs, noise_next)]
    out: dict[str, list[float]] = {"critic_loss": [], "actor_loss": [], "q": []}
    for i, ag in enumerate(agents):
        with torch.no_grad():
            q_next = ag.critic_target(critic_inputs(next_obs, next_acts, i, ag.centralised))[:, 0]  # (B,)
            y = td_target(rewards[:, i], terminated, cfg.gamma, q_next)  # Eq. (6)
        q = ag.critic(critic_inputs(obs, acts, i, ag.centralised))[:, 0]  # Q_i(x, a_1..a_N), (B,)
        critic_loss = ((q - y) ** 2).mean()  # Eq. (6)
        _step(ag.critic_opt, critic_loss, ag.critic.parameters(), cfg.grad_clip)
        logits = ag.actor(obs[i])  # (B, A_i)
        mine = list(acts)
        mine[i] = gumbel_softmax(logits, noise_pi[i], cfg.temperature, cfg.hard)  # Eq. (5): a_i = mu_i(o_i)
        q_pi = ag.critic(critic_inputs(obs, mine, i, ag.centralised))[:, 0]  # a_j (j != i) from the buffer
        actor_loss = -q_pi.mean() + cfg.logit_reg * (logits**2).mean()  # Eq. (5), ascent on Q_i
        _step(ag.actor_opt, actor_loss, ag.actor.parameters(), cfg.grad_clip)
        for k, v in (("critic_loss", critic_loss), ("actor_loss", actor_loss), ("q", q.mean())):
            out[k].append(v.item())
    for ag in agents:  # §4.1: theta' <- tau theta + (1 - tau) theta'
        polyak_update(list(ag.actor_target.parameters()), list(ag.actor.parameters()), cfg.tau)
        polyak_update(list(ag.critic_target.parameters()), list(ag.critic.parameters()), cfg.tau)
    return out


# ---- replay of joint transitions -------------------------------------------------------------------------------
class JointReplay:
    """A ring buffer of joint transitions: every agent's observation and action (concatenated in agent order),
    the reward vector (N,), every next observation, and terminated."""

    KEYS = ("obs", "acts", "rew", "next_obs", "term")

    def __init__(self, capacity: int, obs_dims: list[int], act_dims: list[int]):
        self.capacity, self.obs_dims, self.act_dims, self.pos, self.n = capacity, obs_dims, act_dims, 0, 0
        widths = {"obs": sum(obs_dims), "acts": sum(act_dims), "rew": len(obs_dims), "next_obs": sum(obs_dims),
                  "term": 1}
        self.data = {k: np.zeros((capacity, w), np.float32) for k, w in widths.items()}

    def add(self, obs, acts, rew, next_obs, term: bool) -> None:
        for k, v in zip(self.KEYS, (np.concatenate(obs), np.concatenate(acts), rew, np.concatenate(next_obs),
                                    [float(term)])):
            self.data[k][self.pos] = v
        self.pos, self.n = (self.pos + 1) % self.capacity, min(self.n + 1, self.capacity)

    def sample(self, rng: np.random.Generator, batch: int) -> tuple:
        idx = rng.integers(0, self.n, size=batch)
        t = {k: torch.from_numpy(v[idx]) for k, v in self.data.items()}
        split = lambda x, dims: list(torch.split(x, dims, dim=-1))  # noqa: E731 - per-agent column blocks
        return (split(t["obs"], self.obs_dims), split(t["acts"], self.act_dims), t["rew"],
                split(t["next_obs"], self.obs_dims), t["term"][:, 0])

    def state(self) -> dict:
        return {"pos": self.pos, "n": self.n, **{k: v[: self.n].copy() for k, v in self.data.items()}}

    def load(self, state: dict) -> None:
        self.pos, self.n = int(state["pos"]), int(state["n"])
        for k in self.KEYS:
            self.data[k][: self.n] = state[k]


# ---- the loop ------------------------------------------------------------------------------------------------
def centralised_flags(arm: str, agents: list[str]) -> list[bool]:
    """Which agents' critics are centralised in `arm` (the adversaries are the agents named adversary_*)."""
    if arm in ("maddpg", "ddpg"):
        return [arm == "maddpg"] * len(agents)
    good, bad = arm.split("_vs_")
    return [(bad if name.startswith("adversary") else good) == "maddpg" for name in agents]


def team(env: MultiAgentEnv, task: str) -> list[int]:
    """The agents whose return is reported: all of them (cooperative), the good agents (competitive tasks)."""
    if task == "simple_speaker_listener":
        return list(range(env.n))
    return [i for i, name in enumerate(env.agents) if not name.startswith("adversary")]


def evaluate(env: MultiAgentEnv, fast: list[FastActor], cfg: Config, episodes: int, seed: int, keep: list[int]
             ) -> float:
    """The team's mean return over `episodes` fixed episodes (10^6, 10^6 + 1, ...). `greedy`: the argmax action
    of each actor (one-hot in a continuous env); `sample`: its Gumbel-softmax sample, the noise from `seed`."""
    rng = np.random.default_rng([seed, 24])  # the same noise for every arm and every evaluation

    def act(obs, state):
        if cfg.eval_policy == "greedy":
            picks = [int(f.logits(o).argmax()) for f, o in zip(fast, obs)]
            return picks if not env.continuous else [np.eye(d, dtype=np.float32)[k]
                                                      for k, d in zip(picks, env.act_dims)]
        out = [f.sample(o, gumbel_noise(rng, (d,)).numpy()) for f, o, d in zip(fast, obs, env.act_dims)]
        return [int(a.argmax()) for a in out] if not env.continuous else out

    return rollout_return(env, act, episodes, 10**6, cfg.scale, keep)


def train_arm(arm: str, cfg: Config, run: Run, state: dict | None, save) -> dict:
    """Train one arm; resume from `state` (its part of a checkpoint); `save(arm_state)` checkpoints."""
    env = MultiAgentEnv(cfg.task, seed=run.seed, max_cycles=cfg.max_cycles, continuous=not cfg.hard)
    test_env = MultiAgentEnv(cfg.task, seed=run.seed, max_cycles=cfg.max_cycles, continuous=not cfg.hard)
    keep, prefix = team(env, cfg.task), PREFIX[cfg.task]
    with torch.random.fork_rng(devices=[]):  # every arm starts from the same actors (paired)
        torch.manual_seed(run.seed)
        agents = make_agents(env, centralised_flags(arm, env.agents), cfg)
    memory = JointReplay(min(cfg.buffer_size, cfg.episodes * cfg.max_cycles), env.obs_dims, env.act_dims)
    rng = np.random.default_rng([run.seed, 23])  # Gumbel noise and minibatches: the same stream for every arm
    s = {"episode": 0, "steps": 0, "evals": [], "train": []}
    if state is not None:
        for ag, st in zip(agents, state["agents"]):
            ag.load_full_state(st)
        memory.load(state["memory"])
        rng.bit_generator.state = json.loads(state["rng"])
        s = {k: state[k] for k in s}
    fast = [FastActor(ag.actor, cfg.temperature, cfg.hard) for ag in agents]
    bar = run.progress(range(s["episode"], cfg.episodes), total=cfg.episodes, initial=s["episode"],
                       desc=f"maddpg {arm}", unit="episode")
    for ep in bar:
        obs, done, ret = env.reset(ep), False, 0.0
        ep_noise = [gumbel_noise(rng, (cfg.max_cycles, d)).numpy() for d in env.act_dims]  # this episode's
        while not done:  # exploration: a Gumbel-softmax sample of each agent's own policy
            acts = [f.sample(o, g[env.t]) for f, o, g in zip(fast, obs, ep_noise)]
            next_obs, rew, done, terminal = env.step([int(a.argmax()) for a in acts] if cfg.hard else acts)
            memory.add(obs, acts, rew, next_obs, terminal)
            obs, ret, s["steps"] = next_obs, ret + float(rew[keep].sum()), s["steps"] + 1
            if s["steps"] >= cfg.learning_starts and s["steps"] % cfg.update_every == 0:
                b = cfg.batch_size
                batch = memory.sample(rng, b)
                noise = [[gumbel_noise(rng, (b, d)) for d in env.act_dims] for _ in range(2)]
                losses = maddpg_update(agents, batch, cfg, *noise)
                if s["steps"] % (20 * cfg.update_every) == 0:
                    run.check_finite(sum(losses["critic_loss"]), s["steps"], hint="lr")
                    run.log({f"{prefix}{arm}/{k}_{env.agents[i]}": v for k, vs in losses.items()
                             for i, v in enumerate(vs)}, step=s["steps"])
        s["train"].append([ep + 1, ret])
        if (ep + 1) % cfg.eval_every == 0 or ep + 1 == cfg.episodes:
            last = ep + 1 == cfg.episodes
            value = evaluate(test_env, fast, cfg, cfg.final_episodes if last else cfg.eval_episodes, run.seed, keep)
            s["evals"].append([ep + 1, value])
            run.log({f"{prefix}{arm}/eval_return": value, f"{prefix}{arm}/env_steps": s["steps"]}, step=ep + 1)
        s["episode"] = ep + 1
        if (cfg.checkpoint_every and (ep + 1) % cfg.checkpoint_every == 0) or run.due() or ep + 1 == cfg.episodes:
            save({**s, "agents": [ag.full_state() for ag in agents], "memory": memory.state(),
                  "rng": json.dumps(rng.bit_generator.state)})
    return {"return": float(s["evals"][-1][1]), "evals": s["evals"], "train": s["train"]}


def smooth(values: list[float], window: int) -> np.ndarray:
    """Trailing moving average (shorter at the start)."""
    c = np.cumsum(np.insert(np.asarray(values, dtype=np.float64), 0, 0.0))
    lo = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (c[1:] - c[lo]) / (np.arange(1, len(values) + 1) - lo)


def train(cfg: Config, run: Run) -> dict[str, float]:
    cfg.validate()
    with one_torch_thread():
        return _train(cfg, run)


def _train(cfg: Config, run: Run) -> dict[str, float]:
    """The arms one after the other (a checkpoint holds the finished arms' results), then metrics and plots."""
    prefix = PREFIX[cfg.task]
    done = arms_in_turn(cfg.arms, run, lambda arm, resume, save: train_arm(arm, cfg, run, resume, save))
    env = MultiAgentEnv(cfg.task, seed=run.seed, max_cycles=cfg.max_cycles)
    baseline = random_team(env, cfg)
    metrics = {f"{prefix}random_return": baseline}
    for arm in cfg.arms:
        metrics[f"{prefix}{arm}_return"] = done[arm]["return"]
        metrics[f"{prefix}{arm}_over_random"] = done[arm]["return"] - baseline
    for a, b in (("maddpg", "ddpg"), ("maddpg_vs_ddpg", "ddpg_vs_maddpg")):
        if a in done and b in done:
            metrics[f"{prefix}{a}_minus_{b}"] = done[a]["return"] - done[b]["return"]
    label = f"return ({cfg.scale})"
    line_plot(run.plots_dir / "eval_return.png",
              {arm.upper(): ([e[0] for e in done[arm]["evals"]], [e[1] for e in done[arm]["evals"]])
               for arm in cfg.arms}, xlabel="training episodes", ylabel=f"evaluation ({cfg.eval_policy}) {label}",
              title=f"MADDPG vs DDPG on {cfg.task}", hline=baseline, hline_label="uniform-random policy")
    window = max(1, cfg.episodes // 50)
    line_plot(run.plots_dir / "train_return.png",
              {arm.upper(): ([t[0] for t in done[arm]["train"]], smooth([t[1] for t in done[arm]["train"]], window))
               for arm in cfg.arms}, xlabel="training episodes", ylabel=f"exploring {label}, mean of {window}",
              title=f"Training episodes on {cfg.task}", hline=baseline, hline_label="uniform-random policy")
    return metrics


def random_team(env: MultiAgentEnv, cfg: Config) -> float:
    """The uniform-random policy's return of the reported team, on the final evaluation's episodes (as
    `_marl.random_baseline`, restricted to the team of a competitive task)."""
    rng = np.random.default_rng(env.seed)
    return rollout_return(env, lambda obs, state: [int(rng.integers(d)) for d in env.act_dims], cfg.final_episodes,
                          10**6, cfg.scale, team(env, cfg.task))
