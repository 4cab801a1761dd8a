"""Domain randomization — Tobin et al. 2017 (arXiv:1703.06907), with its dynamics twin, Peng et al. 2018
("Sim-to-Real Transfer of Robotic Control with Dynamics Randomization", arXiv:1710.06537).

The idea: a simulator is never the real system, so do not train on one simulator; train on a family of
them. Draw the simulator's parameters mu afresh from a broad distribution rho_mu at every episode and
maximise the expected return over that distribution. If the family is wide enough, the real system looks
like one more member of it, and the policy transfers without real data. Tobin randomized rendering
(textures, lights, camera) for a vision model; Peng randomized dynamics (masses, damping, friction, gains,
latency, observation noise) for a control policy. We reproduce the dynamics version on a problem a CPU can
train in minutes: the same PPO policy is trained twice, on the nominal physics and with physics randomized
per episode, and both are then scored, deterministically, on a held-out grid of "real" physics shifted
away from nominal (inside the training ranges, and outside them to probe extrapolation).

Equation map (Peng et al. 2018, §IV):
  mu ~ rho_mu: each parameter = nominal x s, log s ~ U[log lo, log hi]  -> `sample_physics`
  the simulator with parameters mu, set and its derived terms updated  -> `set_physics`
  a new mu at every episode (reset), held for the whole episode         -> `DynamicsRandomization.reset`
  observation noise o_t = s_t + N(0, sigma^2), sigma ~ U[0, sigma_max] -> `DynamicsRandomization.step`
  action latency: a_t is applied d steps late, d ~ U{0..d_max}          -> `DynamicsRandomization.step`
  actuator gain: the applied action is (mu_k / nominal_k) a_t (GAINS)   -> `DynamicsRandomization.step`
  objective  max_pi E_{mu ~ rho_mu} [ E_{tau ~ p(tau | pi, mu)} sum_t r_t ]  (Eq. 1)  -> `train`
  held-out "real" settings mu_real off nominal, one axis at a time      -> `heldout_settings`, `evaluate_grid`

The learner is PPO (Schulman et al. 2017) from `seminal.papers.rl.ppo`, imported, not copied.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import gymnasium
import numpy as np

from seminal.core.claims import Claim
from seminal.core.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Range
from seminal.core.errors import SeminalError
from seminal.core.rl import evaluate, make_env
from seminal.core.run import Run

# Physical parameters we randomize, as attributes of the unwrapped env, with what each one is.
PHYSICS: dict[str, dict[str, str]] = {
    "CartPole-v1": {"length": "half pole length (m)", "masspole": "pole mass (kg)", "masscart": "cart mass (kg)",
                    "force_mag": "actuator force, the gain of the bang-bang action (N)",
                    "gravity": "gravity (m/s^2)"},
    "Pendulum-v1": {"m": "mass (kg)", "l": "length (m)", "g": "gravity (m/s^2)",
                    "max_torque": "actuator gain and torque limit: the action (in nominal N m) is scaled by "
                                  "max_torque / nominal (N m)"},
}
# Parameters that scale the actuator: the policy's action space is fixed when the vector env is built, so the
# wrapper multiplies each action by value / nominal (Peng et al.'s randomized controller gains). CartPole's
# force_mag needs no such term: its action is a direction and force_mag is already the gain.
GAINS: dict[str, str] = {"Pendulum-v1": "max_torque"}
Scales = Annotated[tuple[float, ...], Range(gt=0)]


@dataclass(frozen=True)
class Config:
    env_id: str = "CartPole-v1"
    """Environment: CartPole-v1 (PPO) or Pendulum-v1 (PPO, continuous actions); see PHYSICS."""
    randomize: tuple[str, ...] = ("length", "masspole", "masscart", "force_mag", "gravity")
    """Physical parameters randomized in training (names in PHYSICS[env_id]); rho_mu."""
    scale_low: PosFloat = 0.5
    """Lower end of each parameter's training range, as a multiple of its nominal value."""
    scale_high: PosFloat = 2.0
    """Upper end of each parameter's training range, as a multiple of nominal; sampled log-uniformly."""
    obs_noise_max: NonNegFloat = 0.02
    """Per-episode observation-noise std sigma ~ U[0, obs_noise_max] in training (obs units)."""
    delay_max: NonNegInt = 1
    """Per-episode action latency d ~ U{0, ..., delay_max} steps in training."""
    eval_scales_inside: Scales = (0.5, 2.0)
    """Held-out scales of each parameter that lie inside the training range (interpolation)."""
    eval_scales_outside: Scales = (0.25, 4.0)
    """Held-out scales outside the training range (extrapolation)."""
    eval_obs_noise: Annotated[tuple[float, ...], Range(ge=0)] = (0.01, 0.04)
    """Held-out observation-noise stds (the first inside the training range, the second outside)."""
    eval_delays: Annotated[tuple[int, ...], Range(ge=0)] = (1, 2)
    """Held-out action latencies in steps (the first inside the training range, the second outside)."""
    eval_episodes: PosInt = 10
    """Deterministic evaluation episodes per held-out setting (same start states for both policies)."""
    total_steps: PosInt = 100_000
    """Environment steps of PPO training for each of the two policies (150k before the budget cut; notes)."""
    ppo_overrides: tuple[str, ...] = ("n_steps=128", "epochs=10", "minibatch=256")
    """`key=value` settings on top of PPO's quick preset (SB3 zoo's CartPole settings) for CartPole, its full
    preset otherwise. Quick: batches of 8 x 128 steps, 10 epochs (zoo: 8 x 32, 20 epochs), see notes."""

    def validate(self) -> None:
        if self.scale_low > self.scale_high:
            raise SeminalError(f"scale_low={self.scale_low} > scale_high={self.scale_high}: the range is empty")
        for name, scales, want in (("eval_scales_inside", self.eval_scales_inside, True),
                                   ("eval_scales_outside", self.eval_scales_outside, False)):
            wrong = [s for s in scales if (self.scale_low <= s <= self.scale_high) != want]
            if wrong:
                raise SeminalError(f"{name}: {wrong} {'not ' if want else ''}inside the training range "
                                   f"[{self.scale_low:g}, {self.scale_high:g}]")


PRESETS = {
    "quick": Config(),
    # Pendulum with PPO at SB3-zoo-like settings for it (the paper's robot arm needs MuJoCo and an LSTM).
    "full": Config(env_id="Pendulum-v1", randomize=("m", "l", "g", "max_torque"), obs_noise_max=0.05,
                   eval_obs_noise=(0.02, 0.1), total_steps=1_000_000, eval_episodes=20,
                   ppo_overrides=("n_envs=4", "n_steps=1024", "gamma=0.9", "lam=0.95", "lr=1e-3", "epochs=10",
                                  "minibatch=64", "ent_coef=0.0", "anneal_lr=true")),
}

_PEER = "real-robot pushing success 0.89 (randomized, LSTM) vs 0.00 (no randomization)"
_SOURCE = "Peng et al. 2018, real-robot results (§VI); Tobin et al. 2017 §V"
_OUTSIDE = Claim("Outside the training range, the randomized policy scores more than the nominal one (same seed)",
                 "heldout/outside_gap", ">", 0.0, _PEER, _SOURCE, bar="sanity",
                 paired=("randomized/outside_return", "nominal/outside_return"))
CLAIMS = {
    "quick": [
        _OUTSIDE,
        Claim("The held-out systems outside the range defeat the nominal policy (mean return below solved)",
              "nominal/outside_return", "<", 475.0, "475 (CartPole-v1 reward_threshold)",
              "gymnasium CartPole-v1 registration", bar="sanity"),
        Claim("The nominal baseline is a real solution: it solves nominal CartPole", "nominal/return_at_nominal",
              ">=", 475.0, "475 (CartPole-v1 reward_threshold)", "gymnasium CartPole-v1 registration", bar="peer"),
    ],
    "full": [  # untrained Pendulum policies score about -1200; -250 is a margin under the zoo's agents
        _OUTSIDE,
        Claim("The nominal baseline is a real solution: it swings up and holds nominal Pendulum",
              "nominal/return_at_nominal", ">=", -250.0, "SB3 zoo: A2C -162 +- 99, SAC -202 +- 61 (Pendulum-v0)",
              "rl-baselines3-zoo benchmark.md", bar="peer"),
    ],
}


# ---- the simulator's parameters: pure functions --------------------------------------------------------
def get_physics(env: Any, names: tuple[str, ...] | list[str]) -> dict[str, float]:
    """The current values of the named physical parameters of `env` (its unwrapped simulator)."""
    base = env.unwrapped
    return {k: float(getattr(base, k)) for k in names}


def set_physics(env: Any, params: dict[str, float]) -> None:
    """Set physical parameters on the unwrapped simulator, and recompute the terms derived from them."""
    base = env.unwrapped
    for k, v in params.items():
        if not hasattr(base, k):
            raise SeminalError(f"{type(base).__name__} has no physical parameter '{k}'; "
                               f"randomizable: {', '.join(PHYSICS.get(base.spec.id, {})) or 'see PHYSICS'}")
        setattr(base, k, float(v))
    if hasattr(base, "polemass_length"):  # CartPole caches two derived terms in __init__
        base.total_mass = base.masspole + base.masscart
        base.polemass_length = base.masspole * base.length


def sample_physics(rng: np.random.Generator, nominal: dict[str, float],
                   ranges: dict[str, tuple[float, float]]) -> dict[str, float]:
    """mu ~ rho_mu: each parameter is nominal x s with log s ~ U[log lo, log hi] (lo == hi: exactly lo)."""
    out = dict(nominal)
    for k, (lo, hi) in ranges.items():
        s = lo if lo == hi else math.exp(rng.uniform(math.log(lo), math.log(hi)))  # §IV, rho_mu
        out[k] = nominal[k] * s
    return out


class DynamicsRandomization(gymnasium.Wrapper):
    """At every reset, draw new physics mu (held for the episode), a noise std and an action latency.

    `ranges` maps a parameter name to (lo, hi) multiples of its nominal value. `obs_noise` is (lo, hi) of
    the per-episode noise std, `delay` is (lo, hi) of the per-episode latency in steps. Degenerate ranges
    fix a setting, which is how the held-out "real" systems are made. The draws come from the wrapper's own
    generator, reseeded by `reset(seed=...)`, so the env's start states are the unwrapped env's, and the
    same seed gives the same physics. With everything at nominal the wrapper changes nothing.
    """

    def __init__(self, env: Any, ranges: dict[str, tuple[float, float]] | None = None,
                 obs_noise: tuple[float, float] = (0.0, 0.0), delay: tuple[int, int] = (0, 0)):
        super().__init__(env)
        self.ranges = dict(ranges or {})
        self.obs_noise, self.delay = obs_noise, delay
        for k, (lo, hi) in self.ranges.items():
            if not 0 < lo <= hi:
                raise SeminalError(f"range of '{k}' must satisfy 0 < lo <= hi, got ({lo}, {hi})")
        self.nominal = get_physics(env, list(self.ranges))
        spec = getattr(env.unwrapped, "spec", None)
        self.gain_key = GAINS.get(spec.id if spec else "")
        self.gain = 1.0
        self.rng = np.random.default_rng()
        self.physics = dict(self.nominal)
        self.sigma, self.latency = 0.0, 0
        self._queue: deque = deque()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.rng = np.random.default_rng([seed, 1703_06907])  # decorrelated from the env's own stream
        self.physics = sample_physics(self.rng, self.nominal, self.ranges)  # a new mu each episode
        set_physics(self.env, self.physics)
        if self.gain_key in self.ranges:  # the actuator: actions scale with the drawn torque
            self.gain = self.physics[self.gain_key] / self.nominal[self.gain_key]
        lo, hi = self.obs_noise
        self.sigma = lo if lo == hi else float(self.rng.uniform(lo, hi))
        lo, hi = self.delay
        self.latency = lo if lo == hi else int(self.rng.integers(lo, hi + 1))
        self._queue = deque(maxlen=self.latency + 1)
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observe(obs), info | {"physics": dict(self.physics)}

    def step(self, action):
        self._queue.append(action)
        applied = self._queue[0]  # the action chosen `latency` steps ago (the first one until then)
        if self.gain != 1.0:
            applied = np.asarray(applied) * self.gain  # gain x action; the env clips to its scaled max_torque
        obs, reward, terminated, truncated, info = self.env.step(applied)
        return self._observe(obs), reward, terminated, truncated, info

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        if self.sigma == 0.0:
            return obs
        return (obs + self.rng.normal(0.0, self.sigma, size=obs.shape)).astype(obs.dtype)  # o = s + N(0, s^2)


# ---- the held-out "real" systems and their evaluation ---------------------------------------------------
def training_env(cfg: Config, randomized: bool) -> Callable[[], Any]:
    """A factory of training envs: nominal physics, or randomized as cfg says."""
    def make() -> Any:
        env = make_env(cfg.env_id)
        if not randomized:
            return env
        ranges = {k: (cfg.scale_low, cfg.scale_high) for k in cfg.randomize}
        return DynamicsRandomization(env, ranges, obs_noise=(0.0, cfg.obs_noise_max), delay=(0, cfg.delay_max))
    return make


def heldout_settings(cfg: Config) -> list[tuple[str, float, bool, dict]]:
    """(axis, value, inside_training_range, wrapper kwargs) for every held-out setting, one axis shifted."""
    out = []
    for k in cfg.randomize:
        for s in sorted(cfg.eval_scales_inside + cfg.eval_scales_outside):
            out.append((k, s, cfg.scale_low <= s <= cfg.scale_high, {"ranges": {k: (s, s)}}))
    for sigma in cfg.eval_obs_noise:
        out.append(("obs_noise", sigma, sigma <= cfg.obs_noise_max, {"obs_noise": (sigma, sigma)}))
    for d in cfg.eval_delays:
        out.append(("delay", d, d <= cfg.delay_max, {"delay": (d, d)}))
    return out


def evaluate_grid(act: Callable[[np.ndarray], Any], cfg: Config, seed: int = 10_000) -> dict[str, Any]:
    """Mean deterministic return at nominal and at each held-out setting (same start states for all)."""
    at_nominal = float(np.mean(evaluate(act, cfg.env_id, cfg.eval_episodes, seed)))
    grid = []
    for axis, value, inside, kwargs in heldout_settings(cfg):
        env = DynamicsRandomization(make_env(cfg.env_id), **kwargs)
        grid.append((axis, value, inside, float(np.mean(evaluate(act, cfg.env_id, cfg.eval_episodes, seed,
                                                                   env=env)))))
    return {"nominal": at_nominal, "grid": grid}


# ---- the experiment -------------------------------------------------------------------------------------
def train(cfg: Config, run: Run) -> dict[str, float]:
    if cfg.env_id not in PHYSICS:
        raise SeminalError(f"env_id={cfg.env_id}: supported envs are {', '.join(PHYSICS)}")
    unknown = [k for k in cfg.randomize if k not in PHYSICS[cfg.env_id]]
    if unknown:
        raise SeminalError(f"randomize: {unknown} are not parameters of {cfg.env_id}; "
                           f"choose from {', '.join(PHYSICS[cfg.env_id])}")
    from seminal.papers.rl import ppo  # the learner; imported here so the wrapper works without it

    ppo_cfg = ppo.PRESETS["full" if cfg.env_id != "CartPole-v1" else "quick"]
    # PPO's own greedy evaluations and its clipping ablation are not needed: we evaluate on the grid below.
    overrides = [f"env_id={cfg.env_id}", "eval_every=0", "eval_episodes=0", "ablation=false", *cfg.ppo_overrides]
    state = run.restore() or {"results": {}}
    for tag, randomized in (("nominal", False), ("randomized", True)):  # the same PPO, two training worlds
        if tag in state["results"]:
            continue
        outer = {"results": state["results"], "variant": tag}
        policy = ppo.train_policy(training_env(cfg, randomized), ppo_cfg, total_steps=cfg.total_steps,
                                  seed=run.seed, overrides=overrides, run=run, prefix=tag, outer=outer,
                                  resume=state.get("loop") if state.get("variant") == tag else None)
        res = evaluate_grid(policy, cfg)  # Eq. (1)'s policy, scored on the held-out "real" systems
        res["train_seconds"] = policy.seconds
        state = {"results": {**state["results"], tag: res}}
        run.checkpoint(state)

    metrics: dict[str, float] = {}
    for tag, res in state["results"].items():
        grid = [tuple(g) for g in res["grid"]]
        metrics[f"{tag}/train_seconds"] = res["train_seconds"]
        metrics[f"{tag}/return_at_nominal"] = res["nominal"]
        metrics[f"{tag}/heldout_return"] = float(np.mean([r for *_, r in grid]))
        for part, want in (("inside", True), ("outside", False)):
            vals = [r for _, _, inside, r in grid if inside == want]
            metrics[f"{tag}/{part}_return"] = float(np.mean(vals)) if vals else math.nan
        metrics[f"{tag}/drop"] = res["nominal"] - metrics[f"{tag}/heldout_return"]
        run.log({f"{tag}/{axis}={value:g}": r for axis, value, _, r in grid}, step=0)
    for part in ("heldout", "inside", "outside"):
        key = "return_gap" if part == "heldout" else f"{part}_gap"
        src = "heldout_return" if part == "heldout" else f"{part}_return"
        metrics[f"heldout/{key}"] = metrics[f"randomized/{src}"] - metrics[f"nominal/{src}"]
    metrics["heldout/drop_gap"] = metrics["nominal/drop"] - metrics["randomized/drop"]
    run.log(metrics, step=1)
    _plot(run, cfg, state["results"])
    return metrics


def _plot(run: Run, cfg: Config, results: dict[str, dict]) -> None:
    """Return vs shift, one panel per axis, both policies; the nominal point and training range marked."""
    import matplotlib.pyplot as plt

    axes_names = list(dict.fromkeys(g[0] for g in results["nominal"]["grid"]))
    cols = 4
    rows = math.ceil(len(axes_names) / cols)
    fig, axs = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False, sharey=True)
    for ax, name in zip(axs.flat, axes_names):
        scale = name in cfg.randomize
        x0 = 1.0 if scale else 0.0  # the nominal point of this axis
        for tag, style in (("nominal", "o--"), ("randomized", "s-")):
            pts = sorted([(g[1], g[3]) for g in results[tag]["grid"] if g[0] == name] + [(x0, results[tag]["nominal"])])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"trained {tag}")
        if scale:
            ax.set_xscale("log")
            ax.axvspan(cfg.scale_low, cfg.scale_high, color="gray", alpha=0.12, label="training range")
            ticks = sorted({x0, *cfg.eval_scales_inside, *cfg.eval_scales_outside})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_title(f"{name} ({'x nominal' if scale else 'shift'})", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axs.flat)[len(axes_names):]:
        ax.axis("off")
    axs.flat[0].legend(fontsize=7)
    fig.suptitle(f"{cfg.env_id}: return on held-out physics (mean of {cfg.eval_episodes} deterministic episodes)")
    fig.tight_layout()
    run.savefig(fig, "return_vs_shift")
