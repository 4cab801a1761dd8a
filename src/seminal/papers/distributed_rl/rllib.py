"""RLlib: Abstractions for distributed reinforcement learning — Liang, Liaw, Nishihara, Moritz, Fox, Goldberg,
Gonzalez, Jordan & Stoica, ICML 2018 (arXiv:1712.09381).

RLlib's point is an abstraction, not an algorithm: an RL algorithm is a *policy* (model, loss, postprocessing)
plus a *policy optimizer* (how samples are gathered and gradients applied: synchronous sampling, async
gradients, IMPALA-style async sampling, replay), composed under a hierarchical, logically centralised task
model on Ray: a driver holds the algorithm and calls actors (rollout workers, learners) that may themselves
call sub-tasks. Today's RLlib ("new API stack", the default in 2.60) names them Algorithm -> EnvRunnerGroup
(EnvRunner actors) and LearnerGroup (Learner actors), with an RLModule for the networks.

This paper is a peer comparison: RLlib's PPO and IMPALA on CartPole-v1 and its SAC on Pendulum-v1, run
through seminal's harness beside seminal's own PPO (paper 11), IMPALA (16) and SAC (14), on the same seed,
env-step budget, machine and threads, and scored with the same greedy protocol (`seminal.core.rl.evaluate`:
10 episodes from seeds 10000..). The measured number is the wall time each side needs to reach the target
return, and its ratio.

Map:
  our hyperparameters -> RLlib's config keys (a pure function, testable without RLlib) -> `rllib_config`
  RLlib's policy under our protocol (argmax of its logits; tanh(mean) unsquashed)    -> `rllib_actor`
  the module the learner trains (not the driver's EnvRunner copy)                       -> `learner_module`
  the RLlib arm: Algorithm.train() until the target or the budget                       -> `train_rllib`
  the seminal arm: ppo.train_policy / impala.train_arm / sac.train_sac, timed alike     -> `train_ours`
  seconds (and env steps) to the first greedy evaluation at or above the target        -> `to_target`

Needs RLlib (`ray[rllib]`), which pins its own gymnasium: it lives in its own venv (`make rllib` builds
.venv-rllib). Without it the module imports (the mapping and its tests need nothing) but `train` stops with
one line. RLlib is seeded with `debugging(seed=...)` (its env runners and learner seed themselves from it),
but RLlib does not promise reproducible runs: with remote EnvRunners (IMPALA) sampling and learning interleave
through Ray and differ run to run; PPO with its runner in the driver gave equal numbers in the resume contract's
three tiny runs (1024 steps), which is not checked at scale. Seminal's PPO and SAC arms are deterministic for a
seed; its IMPALA (ray mode) is not.
Resume: an RLlib arm is not resumable mid-way (its checkpoints are directories of actor state); the run
checkpoints after each completed arm and a restarted run continues with the next arm.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

import numpy as np

from seminal.core.claims import Claim
from seminal.core.config import NonNegInt, PosFloat, PosInt, Range, apply_overrides
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.rl import evaluate
from seminal.core.run import Run

Algo = Literal["ppo", "impala", "sac"]
DEFAULT_ENV = {"ppo": "CartPole-v1", "impala": "CartPole-v1", "sac": "Pendulum-v1"}
DEFAULT_TARGET = {"CartPole-v1": 475.0, "Pendulum-v1": -200.0}
DEFAULT_EVAL_EVERY = {"ppo": 4096, "impala": 10_240, "sac": 1000}
MISSING = ("paper 20 (rllib) needs ray.rllib, which is not installed: make rllib (RLlib pins its own gymnasium, "
           "so it gets its own venv, .venv-rllib) or pip install -e '.[rllib]'")


@dataclass(frozen=True)
class Config:
    algo: Algo = "ppo"
    """Which pair to run: ppo and impala (CartPole-v1), sac (Pendulum-v1); RLlib's and seminal's, same seed."""
    env_id: str | None = None
    """Environment id; none: CartPole-v1 for ppo and impala, Pendulum-v1 for sac."""
    settings: Literal["ours", "defaults"] = "ours"
    """RLlib's hyperparameters: ours (seminal's quick preset mapped onto RLlib's keys by `rllib_config`) or
    defaults (RLlib's own defaults, only the env, budget, seed and evaluation set)."""
    arms: tuple[str, ...] = ("rllib", "ours")
    """Arms to train, in order, among rllib and ours (the ratio needs both)."""
    total_steps: PosInt | None = None
    """Env-step budget of each arm; none: seminal's quick preset's (ppo 100k, impala 200k, sac 10k)."""
    max_seconds: PosFloat = 900.0
    """Wall-time budget of each arm (checked between RLlib iterations and at our evaluations)."""
    target_return: float | None = None
    """Greedy mean return that counts as reached; none: 475 on CartPole-v1, -200 on Pendulum-v1."""
    stop_at_target: bool = True
    """Stop an arm at its first evaluation at or above the target (else: train the whole budget)."""
    eval_every: NonNegInt | None = None
    """Greedy evaluation every this many env steps, both arms; none: ppo 4096, impala 10240, sac 1000."""
    eval_episodes: PosInt = 10
    """Episodes per evaluation (seeds 10000, 10001, ...: our protocol, the same starts for both arms)."""
    ours: tuple[str, ...] = ()
    """Overrides of seminal's quick preset (key=value, e.g. ours=n_envs=4,hidden=16), seen by both arms through
    the mapping (a value cannot contain a comma: hidden=16 is one layer of 16)."""
    num_env_runners: NonNegInt | None = None
    """RLlib's remote EnvRunner actors; none: with settings=ours 0 for ppo and sac (sampling in the driver, as
    ours) and ours' n_actors (2) for impala, with settings=defaults RLlib's default (2)."""
    num_learners: NonNegInt | None = None
    """RLlib's remote Learner actors; none: 0 with settings=ours (the learner in the driver, as ours), RLlib's
    default with settings=defaults (0 for PPO and SAC, 1 for IMPALA)."""
    min_time_s_per_iteration: Annotated[float, Range(ge=0)] = 0.0
    """RLlib's reporting floor per Algorithm.train() call (its defaults: 1 s for SAC, 10 s for IMPALA; 0: one
    training step per call, so evaluations land near their env step)."""

    @property
    def env(self) -> str:
        return self.env_id or DEFAULT_ENV[self.algo]

    @property
    def target(self) -> float:
        if self.target_return is not None:
            return self.target_return
        if self.env not in DEFAULT_TARGET:
            raise SeminalError(f"no default target return for {self.env}; set target_return=<return>")
        return DEFAULT_TARGET[self.env]

    @property
    def every(self) -> int:
        return DEFAULT_EVAL_EVERY[self.algo] if self.eval_every is None else self.eval_every

    def validate(self) -> None:
        bad = [a for a in self.arms if a not in ("rllib", "ours")]
        if bad or not self.arms or len(set(self.arms)) != len(self.arms):
            raise SeminalError(f"arms must be distinct among rllib, ours, not {','.join(self.arms) or 'nothing'}")
        if self.algo == "sac" and self.env == "CartPole-v1" or self.algo != "sac" and self.env == "Pendulum-v1":
            raise SeminalError(f"algo={self.algo} does not fit {self.env}: ppo and impala here take discrete "
                               "actions (CartPole-v1), sac continuous ones (Pendulum-v1)")
        self.target  # noqa: B018 - a one-line error for an env without a default target


PRESETS = {
    # RLlib's PPO against ours on CartPole-v1, RLlib given our quick preset's hyperparameters.
    "quick": Config(),
    # The same with RLlib's own PPO defaults (the reference: 475 at 72k steps in 112 s).
    "defaults": Config(settings="defaults", total_steps=400_000),
    "impala": Config(algo="impala"),
    "sac": Config(algo="sac"),
    # A longer budget: both arms trained to the end (no early stop), PPO.
    "full": Config(total_steps=200_000, stop_at_target=False, max_seconds=3600.0),
}

_GOAL = ("the issue's goal: ours <= 0.1x RLlib's wall time to the same return, one machine; measured there: RLlib "
         "PPO (defaults) 475 at 72k steps in 112 s, 645 steps/s")
_SOURCE = "seminal issue (paper 20); RLlib 2.60, new API stack"
_RATIO = Claim("seminal reaches the target greedy return in at most 0.1x RLlib's wall time (same algorithm, seed, "
               "env-step budget, machine, threads)", "ours_over_rllib/seconds_to_target", "<=", 0.1, _GOAL,
               _SOURCE, bar="peer", paired=("ours/seconds_to_target", "rllib/seconds_to_target"))
_REACHED = Claim("RLlib's arm reaches the target under our evaluation protocol (the comparison is meaningful)",
                 "rllib/reached", ">=", 1.0, "RLlib PPO 475 at 72k steps (defaults)", _SOURCE, bar="sanity")
CLAIMS = {name: [_RATIO, _REACHED] for name in PRESETS}


# ---- our hyperparameters -> RLlib's ----------------------------------------------------------------------
def our_module(algo: str) -> Any:
    if algo == "ppo":
        from seminal.papers.rl import ppo as mod
    elif algo == "sac":
        from seminal.papers.rl import sac as mod
    else:
        from seminal.papers.distributed_rl import impala as mod
    return mod


def our_config(cfg: Config) -> Any:
    """Seminal's own config for this pair: its quick preset, with `cfg.ours`, the env, the budget and the
    evaluation cadence of the comparison (no PPO clipping ablation, IMPALA's main arm only)."""
    mod = our_module(cfg.algo)
    ours = apply_overrides(mod.PRESETS["quick"], list(cfg.ours))
    common = {"env_id": cfg.env, "eval_episodes": cfg.eval_episodes}
    if cfg.total_steps is not None:
        common["total_steps"] = cfg.total_steps
    if cfg.algo == "ppo":
        return replace(ours, **common, eval_every=cfg.every, ablation=False, solved_return=cfg.target)
    if cfg.algo == "impala":
        return replace(ours, **common, eval_every=cfg.every, ablation=(), solved_return=cfg.target)
    return replace(ours, **common, eval_every=max(cfg.every, 1))


def _lr(lr: float, anneal: bool, total_steps: int) -> float | list[list[float]]:
    """A constant learning rate, or RLlib's piecewise-linear schedule [[env step, lr], ...] down to 0 at the end."""
    return [[0, lr], [total_steps, 0.0]] if anneal else lr


def rllib_config(cfg: Config, seed: int | None = None) -> dict[str, dict[str, Any]]:
    """RLlib's config for the pair, by AlgorithmConfig method: {"environment": {...}, "env_runners": {...},
    "learners": {...}, "training": {...}, "rl_module": {...}, "reporting": {...}, "debugging": {...}}.

    With settings=ours every hyperparameter RLlib has a key for is taken from seminal's quick preset (see the
    notes' table); with settings=defaults only the env, parallelism, seed and reporting are set. The model
    config is given as DefaultModelConfig's fields; `seed` goes to debugging(seed=...). Pure: needs no RLlib.
    """
    ours = our_config(cfg)
    runners, learners = cfg.num_env_runners, cfg.num_learners
    if cfg.settings == "ours":
        runners = (ours.n_actors if cfg.algo == "impala" else 0) if runners is None else runners
        learners = 0 if learners is None else learners
    out: dict[str, dict[str, Any]] = {
        "environment": {"env": cfg.env},
        "env_runners": {} if runners is None else {"num_env_runners": runners},
        "learners": {} if learners is None else {"num_learners": learners},
        "training": {},
        "rl_module": {},
        "reporting": {"min_time_s_per_iteration": cfg.min_time_s_per_iteration},
        "debugging": {"seed": seed},  # the run's seed
    }
    if cfg.algo == "sac":
        out["reporting"]["min_sample_timesteps_per_iteration"] = 1  # one training step a call
    if cfg.settings == "defaults":
        return out
    if cfg.algo == "ppo":
        per_runner = max(1, runners)
        out["env_runners"] |= {"num_envs_per_env_runner": ours.n_envs // per_runner if runners else ours.n_envs,
                               "rollout_fragment_length": ours.n_steps}
        out["training"] = {
            "train_batch_size_per_learner": ours.n_envs * ours.n_steps,  # N x T
            "num_epochs": ours.epochs,  # K
            "minibatch_size": ours.minibatch,  # M
            "lr": _lr(ours.lr, ours.anneal_lr, ours.total_steps),
            "gamma": ours.gamma,
            "lambda_": ours.lam,
            "clip_param": ours.clip if ours.clip is not None else 1e9,  # epsilon of Eq. (7)
            "vf_loss_coeff": ours.vf_coef,  # c1
            "entropy_coeff": ours.ent_coef,  # c2
            "grad_clip": ours.max_grad_norm or None,
            "grad_clip_by": "global_norm",
            "use_kl_loss": False,  # ours has no KL penalty (RLlib's default adds one, kl_coeff 0.2)
            "vf_clip_param": 1e9,  # ours does not clip the value loss (RLlib's default: 10)
        }
        out["rl_module"] = {"fcnet_hiddens": list(ours.hidden), "fcnet_activation": "tanh",
                            "vf_share_layers": ours.shared}
    elif cfg.algo == "impala":
        out["env_runners"] |= {"num_envs_per_env_runner": ours.envs_per_actor,
                               "rollout_fragment_length": ours.unroll_length}
        out["training"] = {
            "train_batch_size_per_learner": ours.steps_per_update,  # batch_unrolls x envs_per_actor x n
            "lr": _lr(ours.lr, ours.anneal_lr, ours.total_steps),
            "gamma": ours.gamma,
            "vtrace_clip_rho_threshold": ours.rho_bar,
            "vtrace_clip_pg_rho_threshold": ours.pg_rho_bar,
            "vf_loss_coeff": ours.baseline_cost,
            "entropy_coeff": ours.entropy_cost,
            "grad_clip": ours.max_grad_norm or None,
            "grad_clip_by": "global_norm",
            "broadcast_interval": ours.broadcast_every,
        }
        out["rl_module"] = {"fcnet_hiddens": list(ours.hidden), "fcnet_activation": "tanh", "vf_share_layers": False}
    else:
        out["env_runners"] |= {"num_envs_per_env_runner": 1, "rollout_fragment_length": 1}
        out["training"] = {
            "actor_lr": ours.lr, "critic_lr": ours.lr, "alpha_lr": ours.lr,
            "gamma": ours.gamma,
            "tau": ours.tau,
            "train_batch_size_per_learner": ours.batch_size,
            "num_steps_sampled_before_learning_starts": ours.start_steps,
            "initial_alpha": ours.alpha,
            "target_entropy": "auto" if ours.target_entropy is None else ours.target_entropy,  # -dim(A)
            "twin_q": True,
            "n_step": 1,
            "training_intensity": float(ours.batch_size),  # replayed / sampled = batch x 1 update a step: UTD 1
            "replay_buffer_config": {"type": "EpisodeReplayBuffer", "capacity": ours.buffer_size},
        }
        out["rl_module"] = {"fcnet_hiddens": list(ours.hidden), "fcnet_activation": "relu"}
    return out


# ---- RLlib ------------------------------------------------------------------------------------------------
def require_rllib() -> Any:
    """The ray.rllib module, or a one-line SeminalError naming `make rllib`."""
    try:
        import ray.rllib
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig  # noqa: F401
    except ImportError as e:
        raise SeminalError(MISSING) from e
    return ray.rllib


def missing() -> str | None:
    """Why this paper cannot run here (RLlib not importable), or None: `reproduce --all` skips it with this line
    instead of failing, since RLlib lives in its own venv."""
    try:
        require_rllib()
    except SeminalError as e:
        return str(e)
    return None


def build_rllib(cfg: Config, seed: int) -> Any:
    """RLlib's AlgorithmConfig (new API stack) from `rllib_config`, seeded with `debugging(seed=...)`."""
    require_rllib()
    from ray.rllib.algorithms.impala import IMPALAConfig
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.algorithms.sac import SACConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    parts = rllib_config(cfg, seed)
    conf = {"ppo": PPOConfig, "impala": IMPALAConfig, "sac": SACConfig}[cfg.algo]().framework("torch")
    conf = conf.environment(**parts["environment"])
    if parts["env_runners"]:
        conf = conf.env_runners(**parts["env_runners"])
    if parts["learners"]:
        conf = conf.learners(**parts["learners"])
    conf = conf.reporting(**parts["reporting"]).debugging(**parts["debugging"])
    if parts["training"]:
        conf = conf.training(**parts["training"])
    if parts["rl_module"]:
        conf = conf.rl_module(model_config=DefaultModelConfig(**parts["rl_module"]))
    return conf


def rllib_actor(module: Any, action_space: Any, normalize_actions: bool = True):
    """obs -> the deterministic action of RLlib's module under our protocol: `forward_inference`, then its
    inference distribution made deterministic (argmax of the logits), or for SAC's squashed Gaussian tanh(mean)
    (RLlib's `to_deterministic` there returns the pre-tanh mean, clipped later by its env runner: not SAC's
    deterministic action); for Box actions RLlib's unsquashing from [-1, 1] to the env's bounds
    (normalize_actions, on by default)."""
    import torch

    dist_cls = module.get_inference_action_dist_cls()
    discrete = type(action_space).__name__ == "Discrete"

    def act(obs: np.ndarray) -> Any:
        with torch.no_grad():
            out = module.forward_inference({"obs": torch.as_tensor(np.asarray(obs, np.float32)[None])})
            dist = dist_cls.from_logits(out["action_dist_inputs"])
            if hasattr(dist, "_squash"):  # SAC: tanh(mean), as ours and the paper; RLlib's own to_deterministic()
                a = dist._squash(dist.loc)[0].numpy()  # gives the pre-tanh mean, which its env runner then clips
            else:
                a = dist.to_deterministic().sample()[0].numpy()  # argmax of the logits (a Gaussian's mean)
        if discrete:
            return int(a)
        if normalize_actions:
            a = action_space.low + (a + 1.0) * (action_space.high - action_space.low) / 2.0
        return np.clip(a, action_space.low, action_space.high)

    return act


def learner_module(algo: Any) -> Any:
    """The RLModule as the learner has it now. `Algorithm.get_module()` returns the driver's EnvRunner's copy,
    which IMPALA never syncs when it samples with remote EnvRunners (it stays at its initial weights)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    group = algo.learner_group
    if group.is_local:
        return group._learner.module[DEFAULT_MODULE_ID]
    module = algo.get_module()  # remote learners: their weights into the driver's copy
    module.set_state(group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID])
    return module


class Stopwatch:
    """Wall clock since `start` minus time spent in evaluations; records (env step, greedy return, seconds)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.eval_seconds = 0.0
        self.evals: list[list[float]] = []

    def now(self) -> float:
        return time.perf_counter() - self.start - self.eval_seconds

    @contextmanager
    def evaluating(self):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.eval_seconds += time.perf_counter() - t

    def record(self, step: int, mean_return: float) -> None:
        self.evals.append([int(step), float(mean_return), self.now()])


def to_target(evals: list[list[float]], target: float) -> tuple[float, float]:
    """(env steps, seconds) at the first evaluation at or above `target`; (nan, nan) if none was."""
    hit = next((e for e in evals if e[1] >= target), None)
    return (float(hit[0]), float(hit[2])) if hit else (math.nan, math.nan)


def _plain(o: Any) -> Any:
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)  # RLlib's DefaultModelConfig
    return o.item() if hasattr(o, "item") else repr(o)


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=_plain))


def train_rllib(cfg: Config, run: Run) -> dict[str, Any]:
    """RLlib's arm: build the algorithm (timed, Ray's start included), Algorithm.train() until the target, the
    env-step budget or the wall-time budget; greedy evaluations every `every` env steps through `evaluate`."""
    require_rllib()
    import ray

    from seminal.core.rl import make_env

    budget = our_config(cfg).total_steps
    conf = build_rllib(cfg, run.seed)
    full = _jsonable(conf.to_dict())
    (run.dir / "rllib_config.json").write_text(json.dumps(full, indent=1, sort_keys=True) + "\n")
    shown = {k: v for k, v in rllib_config(cfg, run.seed).items() if v}
    print(f"RLlib {cfg.algo.upper()} config (set here; all {len(full)} keys in {run.dir / 'rllib_config.json'}): "
          + json.dumps(_jsonable(shown)), flush=True)
    started = ray.is_initialized()
    watch = Stopwatch()
    algo = conf.build_algo()
    space = make_env(cfg.env).action_space
    steps, next_eval, train_curve = 0, cfg.every, []
    try:
        bar = run.progress(total=budget, desc=f"rllib {cfg.algo}", unit="step")
        while steps < budget and watch.now() < cfg.max_seconds:
            result = algo.train()
            new = int(result["env_runners"].get("num_env_steps_sampled_lifetime", 0) or
                      result.get("num_env_steps_sampled_lifetime", 0) or 0)
            bar.update(new - steps)
            steps = new
            ret = result["env_runners"].get("episode_return_mean")
            if ret is not None and math.isfinite(ret):
                train_curve.append([steps, float(ret)])
            if steps >= next_eval or steps >= budget:
                with watch.evaluating():
                    act = rllib_actor(learner_module(algo), space, conf.normalize_actions)
                    mean = float(np.mean(evaluate(act, cfg.env, cfg.eval_episodes)))
                watch.record(steps, mean)
                run.log({"rllib/eval_return": mean, "rllib/seconds": watch.evals[-1][2]}, step=steps)
                bar.set_postfix(eval=f"{mean:.0f}", refresh=False)
                next_eval = (steps // cfg.every + 1) * cfg.every if cfg.every else budget
                if cfg.stop_at_target and mean >= cfg.target:
                    break
        bar.close()
        seconds = watch.now()
    finally:
        algo.stop()
        if not started and ray.is_initialized():
            ray.shutdown()  # ours (IMPALA in ray mode) starts its own
    return {"evals": watch.evals, "steps": steps, "seconds": seconds, "train_curve": train_curve}


class _ArmRun:
    """The run as seminal's own trainer sees it inside this paper: its logs renamed to `ours/...`, its
    evaluations recorded on the stopwatch, no checkpoints of its own (this paper checkpoints per arm)."""

    def __init__(self, run: Run, watch: Stopwatch, eval_key: str, cfg: Config):
        self._run, self._watch, self._key, self._cfg = run, watch, eval_key, cfg
        self.seed, self.device, self.dir, self.plots_dir = run.seed, run.device, run.dir, run.plots_dir

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._key in metrics:
            self._watch.record(step, metrics[self._key])
        self._run.log({"ours/" + k.split("/", 1)[-1]: v for k, v in metrics.items()}, step=step)
        if self._key in metrics and self._cfg.stop_at_target and metrics[self._key] >= self._cfg.target:
            raise _Reached
        if self._watch.now() > self._cfg.max_seconds:
            raise _Reached

    def progress(self, *args, **kwargs):
        return self._run.progress(*args, **kwargs)

    check_finite = staticmethod(Run.check_finite)

    def due(self) -> bool:
        return False

    def restore(self) -> None:
        return None

    def checkpoint(self, state: dict) -> None:
        pass

    def history(self, key: str):
        return self._run.history("ours/" + key.split("/", 1)[-1])


class _Reached(Exception):
    """Stops seminal's trainer at the target (or at the wall-time budget)."""


@contextmanager
def _until_target():
    try:
        yield
    except _Reached:
        pass


def train_ours(cfg: Config, run: Run) -> dict[str, Any]:
    """Seminal's arm: its own trainer on its quick preset (`our_config`), the same seed, budget and evaluations;
    the wall time excludes evaluations as RLlib's does, and includes Ray's start for IMPALA."""
    import torch

    ours = our_config(cfg)
    watch = Stopwatch()

    def timed(*args, **kwargs):  # every trainer takes `evaluator=` (evaluate's signature): no patched globals
        with watch.evaluating():
            return evaluate(*args, **kwargs)

    threads = torch.get_num_threads()
    arm = _ArmRun(run, watch, f"{cfg.algo}/eval_return", cfg)
    try:
        if cfg.algo == "ppo":
            from seminal.papers.rl import ppo

            with _until_target():
                ppo.train_policy(cfg.env, ours, seed=run.seed, run=arm, prefix="ppo", evaluator=timed)
        elif cfg.algo == "impala":
            from seminal.papers.distributed_rl import _actors, impala

            torch.set_num_threads(1)  # as impala.train
            with _actors.ray_session(ours.n_actors, ours.ray_address), _until_target():
                impala.train_arm("impala", ours.correction, ours.policy_lag, ours.total_steps, ours, arm, None,
                                 lambda state: None, ours.mode, evaluator=timed)
        else:
            from seminal.core.rl import make_env
            from seminal.papers.rl import sac

            with _until_target():
                sac.train_sac(make_env(cfg.env), ours, seed=run.seed, device=run.device, run=arm, evaluator=timed)
    finally:
        torch.set_num_threads(threads)
    seconds = watch.now()
    steps = watch.evals[-1][0] if watch.evals else 0
    return {"evals": watch.evals, "steps": steps, "seconds": seconds}


# ---- the paired run -----------------------------------------------------------------------------------------
def train(cfg: Config, run: Run) -> dict[str, float]:
    cfg.validate()
    if "rllib" in cfg.arms:
        require_rllib()  # one line, before anything runs
    state = run.restore() or {"done": {}}
    done = dict(state["done"])
    for arm in cfg.arms:
        if arm in done:
            continue
        done[arm] = train_rllib(cfg, run) if arm == "rllib" else train_ours(cfg, run)
        run.checkpoint({"done": done})  # per arm: a restarted run continues with the next arm
    metrics: dict[str, float] = {}
    for arm, res in done.items():
        steps, seconds = to_target(res["evals"], cfg.target)
        metrics |= {f"{arm}/seconds_to_target": seconds, f"{arm}/steps_to_target": steps,
                    f"{arm}/reached": float(math.isfinite(steps)),
                    f"{arm}/eval_return": res["evals"][-1][1] if res["evals"] else math.nan,
                    f"{arm}/best_eval_return": max((e[1] for e in res["evals"]), default=math.nan),
                    f"{arm}/env_steps": float(res["steps"]), f"{arm}/seconds": res["seconds"],
                    f"{arm}/steps_per_second": res["steps"] / max(res["seconds"], 1e-9)}
    if {"rllib", "ours"} <= set(done):
        metrics["ours_over_rllib/seconds_to_target"] = (metrics["ours/seconds_to_target"]
                                                        / metrics["rllib/seconds_to_target"])
        metrics["ours_over_rllib/steps_per_second"] = (metrics["ours/steps_per_second"]
                                                       / metrics["rllib/steps_per_second"])
    run.log(metrics, step=max(int(r["steps"]) for r in done.values()))
    curves = {arm: ([e[0] for e in r["evals"]], [e[1] for e in r["evals"]]) for arm, r in done.items()}
    title = f"{cfg.algo.upper()} on {cfg.env}: RLlib vs seminal ({cfg.settings} settings)"
    line_plot(run.plots_dir / "return_vs_steps.png", curves, xlabel="env steps", ylabel="greedy return",
              title=title, hline=cfg.target)
    line_plot(run.plots_dir / "return_vs_seconds.png",
              {arm: ([e[2] for e in r["evals"]], [e[1] for e in r["evals"]]) for arm, r in done.items()},
              xlabel="wall seconds (evaluations excluded)", ylabel="greedy return", title=title, hline=cfg.target)
    return metrics

