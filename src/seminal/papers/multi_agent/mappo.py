"""The surprising effectiveness of PPO in cooperative multi-agent games — Yu, Velu, Vinitsky, Gao, Wang, Bayen & Wu,
NeurIPS 2022 (arXiv:2103.01955).

MAPPO is PPO with two multi-agent changes and nothing exotic. One policy network is shared by every agent
(parameter sharing; each agent's input is its own local observation with a one-hot agent id appended), and the
value function is centralised: it sees the global state s (or an agent-specific global state, s with the agent's
own features). At execution time each agent acts from its local observation only. IPPO is the same algorithm with
the value function on each agent's local observation. The paper's contribution is empirical: with a handful of
implementation details (its "factors influential to PPO's performance" and their numbered suggestions) on-policy
PPO matches or beats off-policy MARL on MPE, SMAC, Football and Hanabi.

Equation map (App. A gives the losses for shared actor and critic; B = batch size, n = agents):
  r^i_k = pi_theta(a^i_k | o^i_k) / pi_old(a^i_k | o^i_k), the shared policy   -> `actor_inputs`, `Actor`
  App. A  L(theta) = 1/(Bn) sum_k sum_i m^i_k min(r A, clip(r, 1-eps, 1+eps) A)
                     + sigma 1/(Bn) sum_k sum_i m^i_k S[pi_theta(o^i_k)]          -> `policy_loss`, `update`
  App. A  L(phi) = 1/(Bn) sum_k sum_i max[(V(s^i_k) - R)^2, (clip(V, V_old-eps, V_old+eps) - R)^2], with the
          code's Huber loss in place of the square                               -> `value_loss`, `huber`
  GAE(gamma, lambda) advantages and lambda-returns R                             -> `seminal.papers.rl.gae.gae`
  Sugg. 1  value normalisation: V regresses on returns standardised by running statistics, and is
           de-normalised before GAE (the code's ValueNorm, a debiased running mean/var)  -> `ValueNorm`
  Sugg. 2  the value's input: global state (MAPPO), agent-specific global state, local obs (IPPO) -> `value_inputs`
  Sugg. 3  training data usage: K epochs, M minibatches of each batch             -> `update`
  Sugg. 4  the clip eps (policy, and the value clip)                              -> `policy_loss`, `value_loss`
  Death masking: m^i_k = 0 where agent i is dead or the episode is over. MPE has no deaths, so every mask is 1
  except on padding after an early terminal state (none in simple_spread); the losses take the masks anyway.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.config import NonNegFloat, PosFloat, PosInt, Prob, Range, Sizes
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.run import Run
from seminal.papers.multi_agent._marl import (
    SCALE_TEXT,
    MultiAgentEnv,
    Scale,
    arms_in_turn,
    one_torch_thread,
    random_baseline,
    rollout_return,
)
from seminal.papers.rl.gae import gae

ARMS = ("mappo", "ippo")
ValueInput = Literal["global", "agent_specific", "local"]


@dataclass(frozen=True)
class Config:
    task: Literal["simple_spread", "simple_reference"] = "simple_spread"
    """Cooperative MPE task with identical agents (one shared policy needs equal observation and action sizes)."""
    arms: tuple[str, ...] = ARMS
    """Learners trained one after the other on the same seed from the same initial policy: mappo, ippo."""
    episodes: PosInt = 750
    """Training episodes per arm (each max_cycles = 25 steps of every agent)."""
    episodes_per_update: PosInt = 8
    """Episodes in each PPO batch (the paper's rollout threads x one episode)."""
    epochs: PosInt = 10
    """K: passes over each batch (Sugg. 3; the paper's MPE value is 10)."""
    minibatches: PosInt = 1
    """Minibatches each epoch is split into (Sugg. 3: avoid splitting; 1 in the paper's MPE runs)."""
    lr: PosFloat = 7e-4
    """Adam step size of the shared actor (the paper's MPE value)."""
    critic_lr: PosFloat = 7e-4
    """Adam step size of the value network."""
    gamma: Prob = 0.99
    """Discount gamma."""
    lam: Prob = 0.95
    """GAE lambda."""
    clip: Annotated[float, Range(gt=0)] = 0.2
    """eps: the ratio clip of L(theta) and the value clip of L(phi) (Sugg. 4)."""
    value_clip: bool = True
    """Clip V around its old prediction by eps (L(phi)'s max of clipped and unclipped errors)."""
    huber_delta: Annotated[float | None, Range(gt=0)] = 10.0
    """Huber loss threshold of the value error (the code's 10); none: the squared error."""
    vf_coef: NonNegFloat = 1.0
    """Weight of the value loss."""
    ent_coef: NonNegFloat = 0.01
    """sigma: weight of the entropy bonus S[pi]."""
    max_grad_norm: NonNegFloat = 10.0
    """Clip each network's gradient norm to this (0: off)."""
    norm_adv: bool = True
    """Standardise the advantages over each batch (masked)."""
    value_norm: bool = True
    """Sugg. 1: V learns standardised returns (running statistics), de-normalised for GAE."""
    value_norm_beta: Annotated[float, Range(gt=0, lt=1)] = 0.99999
    """Decay of the running mean/var of returns (the code's 0.99999: almost a plain running average)."""
    state: Literal["global", "agent_specific"] = "global"
    """MAPPO's value input: the global state s, or s with the agent's observation and id (Sugg. 2)."""
    agent_id: bool = True
    """Append a one-hot agent id to the shared policy's input (and to local/agent-specific value inputs)."""
    bootstrap: bool = True
    """Bootstrap from V(s_T) where an episode is cut at max_cycles (true: a time limit is not a terminal state; the
    paper's code treats it as one)."""
    reward: Literal["team", "own"] = "team"
    """What each agent learns from: the team reward (sum over agents, as the paper's MPE) or its own reward."""
    hidden: Sizes = (64, 64)
    """Hidden sizes of the ReLU MLPs of actor and critic (the paper's 64)."""
    eval_episodes: PosInt = 50
    """Evaluation episodes at the end (the same episodes as the random baseline)."""
    eval_greedy: bool = True
    """Evaluate the argmax action (the paper evaluates deterministically); false: sample."""
    scale: Scale = "team_sum"
    """Reward scale of every reported return: team_sum or per_agent."""
    checkpoint_every: PosInt = 25
    """Checkpoint every this many updates (and whenever run.due())."""

    def validate(self) -> None:
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms or len(set(self.arms)) != len(self.arms):
            raise SeminalError(f"arms must be distinct names among {', '.join(ARMS)}, not {','.join(self.arms)}")
        if self.episodes < self.episodes_per_update:
            raise SeminalError("episodes must be at least episodes_per_update (one update)")


PRESETS = {
    # 750 episodes (18,750 env steps) per arm, 8 a batch, 4 minibatches at lr 2e-3, gamma 0.95: ~50 s CPU per seed
    # for both arms (mpe2's step is most of it). Tuned on seeds 100-102 (notes).
    "quick": Config(episodes=750, minibatches=4, lr=2e-3, critic_lr=2e-3, gamma=0.95),
    # The paper's MPE settings: 128 rollout threads x 25 steps, 10M env steps, 10 epochs, 1 minibatch, lr 7e-4.
    "full": Config(episodes=400_000, episodes_per_update=128, eval_episodes=200, checkpoint_every=20),
}

# The reference: MAPPO (the paper's code) on MPE Spread converges near -120 on that code's scale (notes), where
# every agent gets the team's sum of its scenario rewards (-D - 1 - c_i per agent and step: D the sum of landmark
# distances, -1 a self-collision, c_i its collisions). mpe2 with local_ratio 0.5 gives sum_i (-D/2 - c_i/2), so
# team_sum = (R_paper + 75) / 2. mpe2 spawns landmarks in [-1, 1]^2, not [-0.8, 0.8]^2: comparable roughly only.
_PAPER = -22.5  # (-120 + 75) / 2
_SRC = "the paper's code (marlbenchmark/on-policy) converges near -120 on Spread: its issues #49, #112; converted"
CLAIMS = {
    "quick": [
        Claim("MAPPO learns simple_spread in 18,750 env steps: its greedy team return beats a uniform-random policy "
              "on the same 50 episodes by at least 10 team_sum (the paper's converged -22.5 vs random -77 needs "
              "~500x this budget)", "eval/mappo_over_random", ">=", 10.0,
              "-120 on the paper's scale = -22.5 team_sum after 10M steps; random -77.1", _SRC,
              aggregate="mean", bar="sanity", paired=("eval/mappo_return", "eval/random_return")),
        Claim("MAPPO at least as good as IPPO at the same budget (paired; tolerance 5 team_sum, about 10% of the "
              "random-to-paper gap of 55)", "eval/mappo_minus_ippo",
              ">=", -5.0, "MAPPO equal to or above IPPO on MPE Spread", "Yu et al. 2022, MPE results",
              aggregate="mean", bar="sanity", paired=("eval/mappo_return", "eval/ippo_return")),
    ],
    "full": [
        Claim("MAPPO reaches the paper's code's Spread level within 10 team_sum in 10M steps", "eval/mappo_return",
              ">=", _PAPER - 10.0, "-120 on the paper's scale = -22.5 team_sum", _SRC, bar="peer"),
        Claim("MAPPO at least as good as IPPO (paired, tolerance 5 team_sum)", "eval/mappo_minus_ippo", ">=", -5.0,
              "MAPPO equal to or above IPPO on MPE Spread", "Yu et al. 2022, MPE results", bar="sanity",
              paired=("eval/mappo_return", "eval/ippo_return")),
    ],
}


# ---- the paper's math: pure functions --------------------------------------------------------------------
def one_hot_ids(shape: tuple[int, ...], n: int) -> np.ndarray:
    """(..., n, n): agent i's one-hot id, broadcast over the leading dims."""
    return np.broadcast_to(np.eye(n, dtype=np.float32), (*shape, n, n))


def actor_inputs(obs: np.ndarray, agent_id: bool) -> np.ndarray:
    """The shared policy's input (..., n, obs [+ n]): each agent's local observation, with its one-hot id."""
    if not agent_id:
        return obs
    return np.concatenate([obs, one_hot_ids(obs.shape[:-2], obs.shape[-2])], axis=-1)


def value_inputs(obs: np.ndarray, state: np.ndarray, kind: ValueInput, agent_id: bool) -> np.ndarray:
    """The value function's input (..., n, d) for each agent (Sugg. 2). obs (..., n, o), state (..., s).
    global: s for every agent (MAPPO); agent_specific: s, o_i, id_i; local: o_i, id_i (IPPO)."""
    n = obs.shape[-2]
    s = np.broadcast_to(state[..., None, :], (*state.shape[:-1], n, state.shape[-1]))
    if kind == "global":
        return np.ascontiguousarray(s)
    parts = ([s] if kind == "agent_specific" else []) + [obs]
    if agent_id:
        parts.append(one_hot_ids(obs.shape[:-2], n))
    return np.concatenate(parts, axis=-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1/(sum m) sum m x: the mean over live (agent, step) samples only (death masking)."""
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                clip: float) -> torch.Tensor:
    """-L(theta)'s clipped term (App. A), masked mean over agents and steps, to be minimised."""
    ratio = (logp - old_logp).exp()  # r^i_k
    surr = torch.min(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)  # App. A L(theta)
    return -masked_mean(surr, mask)


def huber(err: torch.Tensor, delta: float | None) -> torch.Tensor:
    """Huber loss of an error (quadratic within delta, linear outside); delta None: err^2 / 2."""
    if delta is None:
        return 0.5 * err.pow(2)
    return torch.where(err.abs() <= delta, 0.5 * err.pow(2), delta * (err.abs() - 0.5 * delta))


def value_loss(v: torch.Tensor, old_v: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, clip: float | None,
               delta: float | None) -> torch.Tensor:
    """L(phi) (App. A): max of the errors of V and of V clipped to old_v +- clip; masked mean. clip None: V only."""
    loss = huber(target - v, delta)
    if clip is not None:
        v_clipped = old_v + (v - old_v).clamp(-clip, clip)  # App. A L(phi)
        loss = torch.max(loss, huber(target - v_clipped, delta))
    return masked_mean(loss, mask)


class ValueNorm(nn.Module):
    """Sugg. 1: running, debiased mean and variance of the returns; V's targets are standardised by them and V's
    outputs de-normalised (the paper's code: decay beta, debiasing term like Adam's, variance floored at 1e-2)."""

    def __init__(self, beta: float = 0.99999):
        super().__init__()
        self.beta = beta
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean_sq", torch.zeros((), dtype=torch.float64))
        self.register_buffer("debias", torch.zeros((), dtype=torch.float64))

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double()
        self.mean.mul_(self.beta).add_((1 - self.beta) * x.mean())
        self.mean_sq.mul_(self.beta).add_((1 - self.beta) * x.pow(2).mean())
        self.debias.mul_(self.beta).add_(1 - self.beta)

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean / self.debias.clamp(min=1e-5)
        var = (self.mean_sq / self.debias.clamp(min=1e-5) - mean.pow(2)).clamp(min=1e-2)
        return mean, var

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self.stats()
        return ((x - mean) / var.sqrt()).to(x.dtype)

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        mean, var = self.stats()
        return (y * var.sqrt() + mean).to(y.dtype)


# ---- networks ------------------------------------------------------------------------------------------
def mlp(n_in: int, hidden: tuple[int, ...], n_out: int, out_gain: float, gen: torch.Generator) -> nn.Sequential:
    """ReLU MLP with orthogonal init (gain sqrt 2; out_gain on the last layer: 0.01 gives a near-uniform policy)."""
    sizes, layers = [n_in, *hidden, n_out], []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        nn.init.orthogonal_(lin.weight, out_gain if i == len(hidden) else 2**0.5, generator=gen)
        nn.init.zeros_(lin.bias)
        layers += [lin] if i == len(hidden) else [lin, nn.ReLU()]
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """pi_theta(a | o_i, id_i): one categorical policy for every agent (parameter sharing)."""

    def __init__(self, n_in: int, n_actions: int, hidden: tuple[int, ...], gen: torch.Generator):
        super().__init__()
        self.net = mlp(n_in, hidden, n_actions, 0.01, gen)

    def log_prob_entropy(self, x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp_all = torch.log_softmax(self.net(x), dim=-1)  # (..., A)
        logp = logp_all.gather(-1, a.long().unsqueeze(-1)).squeeze(-1)
        return logp, -(logp_all.exp() * logp_all).sum(-1)


class Critic(nn.Module):
    """V_phi(value input) -> (...,): one value network shared by every agent."""

    def __init__(self, n_in: int, hidden: tuple[int, ...], gen: torch.Generator):
        super().__init__()
        self.net = mlp(n_in, hidden, 1, 1.0, gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def numpy_policy(actor: Actor):
    """The actor's logits in NumPy (for acting: a few matmuls instead of torch's per-op overhead)."""
    layers = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
              for m in actor.net if isinstance(m, nn.Linear)]

    def logits(x: np.ndarray) -> np.ndarray:
        for W, b in layers[:-1]:
            x = np.maximum(x @ W + b, 0.0)
        return x @ layers[-1][0] + layers[-1][1]
    return logits


def sample(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row by the inverse CDF."""
    p = np.exp(logits - logits.max(-1, keepdims=True))
    cdf = np.cumsum(p / p.sum(-1, keepdims=True), axis=-1)
    return np.minimum((rng.random((len(logits), 1)) > cdf).sum(-1), logits.shape[-1] - 1)


# ---- rollouts and the update ---------------------------------------------------------------------------
def collect(env: MultiAgentEnv, actor: Actor, first_episode: int, episodes: int, agent_id: bool,
            rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`episodes` whole episodes (first_episode, ...), as (T, E, ...) arrays; obs and state have T + 1 rows (the
    last: the state after the final step, for the truncation bootstrap). A step after an early terminal is padding:
    mask 0, reward 0."""
    T, E, n = env.max_cycles, episodes, env.n
    logits = numpy_policy(actor)
    b = {"obs": np.zeros((T + 1, E, n, env.obs_dims[0]), np.float32),
         "state": np.zeros((T + 1, E, env.state_dim), np.float32), "actions": np.zeros((T, E, n), np.int64),
         "rewards": np.zeros((T, E, n), np.float32), "mask": np.zeros((T, E, n), np.float32),
         "terminated": np.zeros((T, E), bool), "dones": np.ones((T, E), bool)}
    for e in range(E):
        b["obs"][0, e], b["state"][0, e] = np.stack(env.reset(first_episode + e)), env.state()
        for t in range(T):
            a = sample(logits(actor_inputs(b["obs"][t, e], agent_id)), rng)
            obs, rew, done, terminal = env.step(a)
            b["actions"][t, e], b["rewards"][t, e], b["mask"][t, e] = a, rew, 1.0
            b["obs"][t + 1, e], b["state"][t + 1, e] = np.stack(obs), env.state()
            b["terminated"][t, e], b["dones"][t, e] = terminal, done
            if done:
                break
    return b


def update(actor: Actor, critic: Critic, opt: torch.optim.Optimizer, vnorm: ValueNorm, batch: dict, cfg: Config,
           kind: ValueInput, rng: np.random.Generator) -> dict[str, float]:
    """One PPO update of the shared actor and critic on a batch of whole episodes: GAE, then K epochs of M
    minibatches of App. A's losses (masked means over agents and steps)."""
    T, E, n = batch["actions"].shape
    xa = torch.as_tensor(actor_inputs(batch["obs"][:-1], cfg.agent_id))  # (T, E, n, da)
    xv = torch.as_tensor(value_inputs(batch["obs"], batch["state"], kind, cfg.agent_id))  # (T+1, E, n, dv)
    acts, mask = torch.as_tensor(batch["actions"]), torch.as_tensor(batch["mask"])
    with torch.no_grad():
        old_logp, _ = actor.log_prob_entropy(xa, acts)  # pi_old
        old_v = critic(xv)  # (T+1, E, n); standardised when value_norm
    values = (vnorm.denormalize(old_v) if cfg.value_norm else old_v).numpy()  # Sugg. 1: de-normalised for GAE
    rew = batch["rewards"]
    rew = np.repeat(rew.sum(-1, keepdims=True), n, -1) if cfg.reward == "team" else rew
    flat = (T, E * n)
    term, dones = (np.repeat(batch[k][:, :, None], n, -1).reshape(flat) for k in ("terminated", "dones"))
    term = term if cfg.bootstrap else dones  # no bootstrap: the time limit counts as terminal
    adv = gae(rew.reshape(flat), values[:-1].reshape(flat), values[1:].reshape(flat), term, dones, cfg.gamma,
              cfg.lam).reshape(T, E, n)
    returns = torch.as_tensor(adv + values[:-1], dtype=torch.float32)  # R: the lambda-returns
    adv = torch.as_tensor(adv, dtype=torch.float32)
    if cfg.value_norm:
        vnorm.update(returns[mask > 0])  # Sugg. 1: the statistics follow the returns
        targets = vnorm.normalize(returns)
    else:
        targets = returns
    if cfg.norm_adv:
        mean = masked_mean(adv, mask)
        adv = (adv - mean) / ((masked_mean((adv - mean).pow(2), mask)).sqrt() + 1e-5)
    flat_all = [x.reshape(T * E * n, *x.shape[3:]) for x in (xa, xv[:-1], acts, mask, old_logp, old_v[:-1], adv,
                                                             targets)]
    B = T * E * n
    for _ in range(cfg.epochs):  # Sugg. 3: K epochs of M minibatches
        for mb in np.array_split(rng.permutation(B), cfg.minibatches):
            mb = torch.as_tensor(mb)
            x_a, x_v, a, m, lp_old, v_old, A, R = (x[mb] for x in flat_all)
            logp, entropy = actor.log_prob_entropy(x_a, a)
            pi_loss = policy_loss(logp, lp_old, A, m, cfg.clip)
            v_loss = value_loss(critic(x_v), v_old, R, m, cfg.clip if cfg.value_clip else None, cfg.huber_delta)
            ent = masked_mean(entropy, m)
            loss = pi_loss - cfg.ent_coef * ent + cfg.vf_coef * v_loss  # -L(theta) + L(phi)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm:
                nn.utils.clip_grad_norm_(actor.parameters(), cfg.max_grad_norm)
                nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
            opt.step()
    return {"policy_loss": pi_loss.item(), "value_loss": v_loss.item(), "entropy": ent.item()}


def make_learner(env: MultiAgentEnv, kind: ValueInput, cfg: Config, seed: int):
    """Actor, critic, one Adam over both (two learning rates) and the value normaliser. The actor's initial weights
    depend on the seed only, so every arm of a seed starts from the same policy (paired)."""
    if len(set(env.obs_dims)) != 1 or len(set(env.act_dims)) != 1:
        raise SeminalError(f"task {env.task} has agents of different shapes; a shared policy needs identical agents")
    obs = np.zeros((1, env.n, env.obs_dims[0]), np.float32)
    d_a = actor_inputs(obs, cfg.agent_id).shape[-1]
    d_v = value_inputs(obs, np.zeros((1, env.state_dim), np.float32), kind, cfg.agent_id).shape[-1]
    actor = Actor(d_a, env.act_dims[0], cfg.hidden, torch.Generator().manual_seed(seed))
    critic = Critic(d_v, cfg.hidden, torch.Generator().manual_seed(seed + 1))
    opt = torch.optim.Adam([{"params": actor.parameters(), "lr": cfg.lr},
                            {"params": critic.parameters(), "lr": cfg.critic_lr}], eps=1e-5)
    return actor, critic, opt, ValueNorm(cfg.value_norm_beta)


def evaluate(env: MultiAgentEnv, actor: Actor, cfg: Config) -> float:
    """Mean return of the policy over the evaluation episodes (those of `random_baseline`), on cfg.scale."""
    logits, rng = numpy_policy(actor), np.random.default_rng(0)

    def act(obs, state):
        out = logits(actor_inputs(np.stack(obs), cfg.agent_id))
        return out.argmax(-1) if cfg.eval_greedy else sample(out, rng)
    return rollout_return(env, act, cfg.eval_episodes, 10**6, cfg.scale)


def train_arm(arm: str, cfg: Config, run: Run, state: dict | None, save) -> dict:
    """Train one arm (mappo: the value on cfg.state; ippo: on local observations); resume from `state`."""
    kind: ValueInput = cfg.state if arm == "mappo" else "local"
    env = MultiAgentEnv(cfg.task, seed=run.seed)
    actor, critic, opt, vnorm = make_learner(env, kind, cfg, run.seed)
    rng = np.random.default_rng([run.seed, 25])  # action sampling and minibatch order: the same stream per arm
    s = {"update": 0, "curve": []}
    if state is not None:
        for obj, key in ((actor, "actor"), (critic, "critic"), (opt, "opt"), (vnorm, "vnorm")):
            obj.load_state_dict(state[key])
        rng.bit_generator.state = json.loads(state["rng"])
        s = {"update": int(state["update"]), "curve": [list(c) for c in state["curve"]]}
    E, n_updates = cfg.episodes_per_update, cfg.episodes // cfg.episodes_per_update
    for u in run.progress(range(s["update"], n_updates), total=n_updates, initial=s["update"], desc=f"mappo {arm}",
                          unit="update"):
        batch = collect(env, actor, u * E, E, cfg.agent_id, rng)  # episodes u*E ... : seeded by (seed, episode)
        info = update(actor, critic, opt, vnorm, batch, cfg, kind, rng)
        ret = float(batch["rewards"].sum((0, 2)).mean()) / (1 if cfg.scale == "team_sum" else env.n)  # on scale
        s["curve"].append([(u + 1) * E, ret])
        for key, value in info.items():
            run.check_finite(value, (u + 1) * E, what=key, hint="lr")
        run.log({f"{arm}/train_return": ret, **{f"{arm}/{k}": v for k, v in info.items()}}, step=(u + 1) * E)
        s["update"] = u + 1
        if u + 1 < n_updates and ((u + 1) % cfg.checkpoint_every == 0 or run.due()):  # between episodes
            save({**s, "actor": actor.state_dict(), "critic": critic.state_dict(), "opt": opt.state_dict(),
                  "vnorm": vnorm.state_dict(), "rng": json.dumps(rng.bit_generator.state)})
    return {"return": evaluate(env, actor, cfg), "curve": s["curve"]}


def train(cfg: Config, run: Run) -> dict[str, float]:
    cfg.validate()
    with one_torch_thread():
        return _train(cfg, run)


def _train(cfg: Config, run: Run) -> dict[str, float]:
    """Every arm in turn (a checkpoint between updates and after each arm), then the random baseline and plots."""
    done = arms_in_turn(cfg.arms, run, lambda arm, resume, save: train_arm(arm, cfg, run, resume, save))
    baseline = random_baseline(cfg.task, episodes=cfg.eval_episodes, seed=run.seed, scale=cfg.scale)
    metrics = {"eval/random_return": baseline}
    for arm in cfg.arms:
        metrics[f"eval/{arm}_return"] = done[arm]["return"]
        metrics[f"eval/{arm}_over_random"] = done[arm]["return"] - baseline
    if {"mappo", "ippo"} <= set(done):
        metrics["eval/mappo_minus_ippo"] = done["mappo"]["return"] - done["ippo"]["return"]
    run.log(metrics, step=cfg.episodes)
    line_plot(run.plots_dir / "learning_curve.png",
              {arm.upper(): ([c[0] for c in done[arm]["curve"]], [c[1] for c in done[arm]["curve"]])
               for arm in cfg.arms}, xlabel="training episodes per arm",
              ylabel=f"training return ({SCALE_TEXT[cfg.scale]})", title=f"MAPPO vs IPPO on {cfg.task}",
              hline=baseline, hline_label="uniform-random policy")
    return metrics
