"""The RLlib comparison (papers/distributed_rl/rllib.py).

In the main venv (no RLlib): the mapping of our quick presets onto RLlib's keys against values written out by hand,
the missing-extra and config errors (one line each), seconds/steps to the target read off each arm's own curve and
their ratio (ours over RLlib), and seminal's arm alone. With RLlib (`.venv-rllib`, `make rllib`): our protocol's
greedy action equals the argmax of RLlib's logits (and tanh(mean), unsquashed, for SAC), computed here apart from
the module's own path, and a tiny paired run through the harness."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from seminal.core import runner
from seminal.core.config import apply_overrides
from seminal.core.errors import SeminalError
from seminal.core.run import Run
from seminal.papers.distributed_rl import rllib
from seminal.papers.distributed_rl.rllib import Config, rllib_config


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **kw: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- the mapping, by hand from the presets (ppo.py, impala.py, sac.py quick) ---------------------------------
def test_ppo_mapping_is_our_quick_preset():
    got = rllib_config(Config(), seed=7)
    assert got["environment"] == {"env": "CartPole-v1"}
    assert got["env_runners"] == {"num_env_runners": 0, "num_envs_per_env_runner": 8, "rollout_fragment_length": 64}
    assert got["learners"] == {"num_learners": 0}
    assert got["debugging"] == {"seed": 7}
    assert got["training"] == {
        "train_batch_size_per_learner": 512, "num_epochs": 10, "minibatch_size": 256,
        "lr": [[0, 1e-3], [100_000, 0.0]], "gamma": 0.98, "lambda_": 0.8, "clip_param": 0.2, "vf_loss_coeff": 0.5,
        "entropy_coeff": 0.0, "grad_clip": 0.5, "grad_clip_by": "global_norm", "use_kl_loss": False,
        "vf_clip_param": 1e9}
    assert got["rl_module"] == {"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh", "vf_share_layers": False}


def test_impala_mapping_is_our_quick_preset():
    got = rllib_config(Config(algo="impala"))
    assert got["env_runners"] == {"num_env_runners": 2, "num_envs_per_env_runner": 8, "rollout_fragment_length": 20}
    assert got["training"] == {
        "train_batch_size_per_learner": 640, "lr": [[0, 5e-4], [200_000, 0.0]], "gamma": 0.99,
        "vtrace_clip_rho_threshold": 1.0, "vtrace_clip_pg_rho_threshold": 1.0, "vf_loss_coeff": 0.5,
        "entropy_coeff": 0.01, "grad_clip": 40.0, "grad_clip_by": "global_norm", "broadcast_interval": 1}
    assert got["rl_module"] == {"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh", "vf_share_layers": False}


def test_sac_mapping_is_our_quick_preset():
    got = rllib_config(Config(algo="sac"))
    assert got["environment"] == {"env": "Pendulum-v1"}
    assert got["env_runners"] == {"num_env_runners": 0, "num_envs_per_env_runner": 1, "rollout_fragment_length": 1}
    assert got["training"] == {
        "actor_lr": 1e-3, "critic_lr": 1e-3, "alpha_lr": 1e-3, "gamma": 0.99, "tau": 0.005,
        "train_batch_size_per_learner": 128, "num_steps_sampled_before_learning_starts": 1000, "initial_alpha": 0.2,
        "target_entropy": "auto", "twin_q": True, "n_step": 1, "training_intensity": 128.0,
        "replay_buffer_config": {"type": "EpisodeReplayBuffer", "capacity": 1_000_000}}
    assert got["rl_module"] == {"fcnet_hiddens": [64, 64], "fcnet_activation": "relu"}
    assert got["reporting"] == {"min_time_s_per_iteration": 0.0, "min_sample_timesteps_per_iteration": 1}


def test_overrides_reach_both_arms_and_defaults_set_no_hyperparameters():
    cfg = Config(ours=("n_envs=4", "lr=0.002", "anneal_lr=false", "hidden=32"), total_steps=50_000)
    got, ours = rllib_config(cfg), rllib.our_config(cfg)
    assert (ours.n_envs, ours.lr, ours.total_steps, ours.hidden, ours.ablation) == (4, 0.002, 50_000, (32,), False)
    assert got["training"]["train_batch_size_per_learner"] == 256 and got["training"]["lr"] == 0.002
    assert got["env_runners"]["num_envs_per_env_runner"] == 4 and got["rl_module"]["fcnet_hiddens"] == [32]
    plain = rllib_config(Config(settings="defaults"))
    assert plain["training"] == {} and plain["rl_module"] == {} and plain["env_runners"] == {} == plain["learners"]
    assert rllib_config(Config(settings="defaults", num_env_runners=1))["env_runners"] == {"num_env_runners": 1}


# ---- errors: one line each --------------------------------------------------------------------------------
def test_missing_rllib_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray.rllib", None)  # import ray.rllib now raises ImportError
    with pytest.raises(SeminalError) as e:
        rllib.train(Config(), Run(tmp_path, "rllib", 0, None, progress=False, tensorboard=False))
    text = str(e.value)
    assert "\n" not in text and "make rllib" in text and "pip install -e '.[rllib]'" in text
    assert "which is not installed" in text  # what the contract tests skip on


@pytest.mark.parametrize("overrides, words", [
    (["algo=dqn"], "algo"),
    (["arms=rllib,foo"], "arms"),
    (["algo=sac", "env_id=CartPole-v1"], "does not fit"),
    (["env_id=Acrobot-v1"], "target_return"),
    (["eval_episodes=0"], "eval_episodes"),
])
def test_config_errors_are_one_line(overrides, words):
    with pytest.raises(SeminalError) as e:
        apply_overrides(rllib.PRESETS["quick"], overrides).validate()
    assert "\n" not in str(e.value) and words in str(e.value)


# ---- seconds to the target, per arm, and the ratio ----------------------------------------------------------
def test_to_target_is_the_first_evaluation_at_or_above_it():
    evals = [[1000, 100.0, 2.0], [2000, 480.0, 5.0], [3000, 300.0, 7.0], [4000, 500.0, 9.0]]
    assert rllib.to_target(evals, 475.0) == (2000.0, 5.0)
    assert rllib.to_target(evals, 480.0) == (2000.0, 5.0)  # at or above
    assert all(math.isnan(x) for x in rllib.to_target(evals, 501.0))


def test_each_arm_reads_its_own_curve_and_the_ratio_is_ours_over_rllib(monkeypatch, tmp_path):
    arms = {"rllib": {"evals": [[4096, 200.0, 30.0], [8192, 490.0, 60.0]], "steps": 8192, "seconds": 64.0},
            "ours": {"evals": [[4096, 476.0, 3.0], [8192, 500.0, 6.0]], "steps": 8192, "seconds": 6.4}}
    monkeypatch.setattr(rllib, "require_rllib", lambda: None)
    monkeypatch.setattr(rllib, "train_rllib", lambda cfg, run: arms["rllib"])
    monkeypatch.setattr(rllib, "train_ours", lambda cfg, run: arms["ours"])
    m = rllib.train(Config(), Run(tmp_path, "rllib", 0, None, progress=False, tensorboard=False))
    assert m["rllib/seconds_to_target"] == 60.0 and m["rllib/steps_to_target"] == 8192
    assert m["ours/seconds_to_target"] == 3.0 and m["ours/steps_to_target"] == 4096
    assert m["ours_over_rllib/seconds_to_target"] == pytest.approx(0.05)
    assert m["rllib/steps_per_second"] == 128.0 and m["ours/steps_per_second"] == 1280.0
    assert m["ours_over_rllib/steps_per_second"] == pytest.approx(10.0)
    assert m["rllib/reached"] == 1.0 and m["ours/eval_return"] == 500.0


def test_stopwatch_leaves_out_evaluations():
    watch = rllib.Stopwatch()
    with watch.evaluating():
        t = __import__("time").perf_counter()
        while __import__("time").perf_counter() - t < 0.05:
            pass
    assert watch.now() < 0.03 and watch.eval_seconds >= 0.05


def test_our_arm_alone_needs_no_rllib(tmp_path):
    """arms=ours runs in any venv: seminal's PPO through the same stopwatch and evaluations."""
    cfg = Config(arms=("ours",), total_steps=1024, eval_every=512, eval_episodes=1, target_return=1e9,
                 ours=("n_envs=4", "n_steps=64", "epochs=2", "minibatch=128", "hidden=16"))
    m = rllib.train(cfg, Run(tmp_path, "rllib", 3, cfg, progress=False, tensorboard=False))
    assert m["ours/env_steps"] == 1024 and m["ours/reached"] == 0.0 and math.isnan(m["ours/seconds_to_target"])
    assert m["ours/steps_per_second"] > 0 and "rllib/seconds" not in m


def test_our_arm_stops_at_the_target(tmp_path):
    cfg = Config(arms=("ours",), total_steps=4096, eval_every=512, eval_episodes=1, target_return=1.0,
                 ours=("n_envs=4", "n_steps=64", "epochs=1", "hidden=8"))
    m = rllib.train(cfg, Run(tmp_path, "rllib", 3, cfg, progress=False, tensorboard=False))
    assert m["ours/steps_to_target"] == 512 and m["ours/env_steps"] == 512  # the first evaluation, then stop


# ---- with RLlib (.venv-rllib) ---------------------------------------------------------------------------------
def _module(algo: str, env_id: str):
    pytest.importorskip("ray.rllib")
    import gymnasium as gym

    env = gym.make(env_id)
    conf = rllib.build_rllib(Config(algo=algo, ours=("hidden=8",)), 0)
    return conf.get_rl_module_spec(env=env).build(), env.action_space, env.observation_space


def test_greedy_action_is_the_argmax_of_rllibs_logits():
    module, space, obs_space = _module("ppo", "CartPole-v1")
    obs = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32) * 2
    with torch.no_grad():
        logits = module.forward_inference({"obs": torch.as_tensor(obs)})["action_dist_inputs"].numpy()
    expected = logits.argmax(axis=1)  # computed here, not by RLlib's distribution
    assert len(set(expected)) == 2, "an untrained module should prefer both actions somewhere"
    act = rllib.rllib_actor(module, space)
    assert [act(o) for o in obs] == expected.tolist()


def test_sac_deterministic_action_is_tanh_of_the_mean_unsquashed():
    module, space, _ = _module("sac", "Pendulum-v1")
    obs = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    with torch.no_grad():
        out = module.forward_inference({"obs": torch.as_tensor(obs)})["action_dist_inputs"].numpy()
    mean = out[:, :1]  # (mean, log_std) per action dim
    expected = -2.0 + (np.tanh(mean) + 1.0) * 4.0 / 2.0  # Pendulum's [-2, 2]
    act = rllib.rllib_actor(module, space)
    np.testing.assert_allclose(np.stack([act(o) for o in obs]), expected, rtol=1e-5, atol=1e-6)


def test_a_tiny_paired_run_through_the_harness(tmp_path, capsys):
    pytest.importorskip("ray.rllib")
    overrides = ["total_steps=1024", "eval_every=512", "eval_episodes=1", "target_return=1e9",
                 "ours=n_envs=4,n_steps=64,epochs=2,minibatch=128,hidden=8"]
    summary = runner.execute("rllib", "quick", 5, overrides, tmp_path, progress=False)
    m = summary["metrics"]
    assert m["rllib/env_steps"] >= 1024 and m["ours/env_steps"] == 1024
    assert m["rllib/steps_per_second"] > 0 and m["ours/steps_per_second"] > 0
    run_dir = next(tmp_path.rglob("rllib_config.json")).parent
    saved = json.loads((run_dir / "rllib_config.json").read_text())
    assert saved["gamma"] == 0.98 and saved["lambda"] == 0.8 and saved["num_epochs"] == 2 and saved["seed"] == 5
    assert saved["clip_param"] == 0.2 and saved["use_kl_loss"] is False and saved["minibatch_size"] == 128
    assert saved["_model_config"]["fcnet_hiddens"] == [8] and saved["_model_config"]["fcnet_activation"] == "tanh"
    assert "RLlib PPO config" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "rllib/eval_return" in r]
    assert len(steps) >= 2 and 512 <= steps[0] < 1024  # evaluated every 512 env steps, RLlib's iterations allowing


def test_the_evaluated_module_is_the_learners_not_the_drivers_stale_copy():
    """IMPALA with a remote EnvRunner never syncs the driver's EnvRunner module: evaluating `algo.get_module()`
    scored the initial weights (a flat greedy return of 21 over 200k steps, seed 100)."""
    pytest.importorskip("ray.rllib")
    import ray

    cfg = Config(algo="impala", num_env_runners=1, ours=("envs_per_actor=2", "unroll_length=10", "hidden=8"),
                 min_time_s_per_iteration=0.5)
    algo = rllib.build_rllib(cfg, 0).build_algo()
    try:
        first = {k: v.clone() for k, v in rllib.learner_module(algo).state_dict().items()}
        for _ in range(20):
            if algo.train()["env_runners"].get("num_env_steps_sampled_lifetime", 0) >= 400:
                break
        module, learned = rllib.learner_module(algo), algo.learner_group.get_weights()["default_policy"]
        assert all(np.allclose(v.numpy(), learned[k]) for k, v in module.state_dict().items())
        assert any(not torch.equal(first[k], v) for k, v in module.state_dict().items()), "the learner never stepped"
    finally:
        algo.stop()
        ray.shutdown()


def test_reproduce_all_skips_the_comparison_where_rllib_is_missing(monkeypatch, capsys, tmp_path):
    """`make run` (reproduce --all) in .venv, which never holds RLlib: one SKIP line naming the fix, exit 0."""
    if rllib.missing() is None:
        pytest.skip("RLlib is installed here")
    from seminal import cli, syllabus

    monkeypatch.setattr(syllabus, "implemented", lambda: [syllabus.resolve("rllib")])
    code = cli.main(["reproduce", "--all", "--quiet", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0 and "SKIP 20 rllib: paper 20 (rllib) needs ray.rllib" in err and "make rllib" in err


def test_impala_thresholds_and_ppo_envs_per_runner_map_to_their_own_keys():
    """rho_bar and pg_rho_bar set apart (the quick preset has both at 1, where a swap is invisible); PPO's N envs are
    split over remote EnvRunners, N / runners each."""
    got = rllib_config(Config(algo="impala", ours=("rho_bar=1.3", "pg_rho_bar=0.7")))["training"]
    assert (got["vtrace_clip_rho_threshold"], got["vtrace_clip_pg_rho_threshold"]) == (1.3, 0.7)
    runners = rllib_config(Config(num_env_runners=2))["env_runners"]  # ours: N = 8 envs
    assert runners == {"num_env_runners": 2, "num_envs_per_env_runner": 4, "rollout_fragment_length": 64}
    assert rllib_config(Config(ours=("anneal_lr=false",)))["training"]["lr"] == 1e-3


def test_our_arm_stops_at_an_evaluation_equal_to_the_target_or_past_the_wall_time(tmp_path):
    run = Run(tmp_path, "rllib", 0, None, progress=False, tensorboard=False)
    watch = rllib.Stopwatch()
    arm = rllib._ArmRun(run, watch, "ppo/eval_return", Config(target_return=200.0))
    arm.log({"ppo/eval_return": 199.0}, step=512)  # below: goes on
    with pytest.raises(rllib._Reached):
        arm.log({"ppo/eval_return": 200.0}, step=1024)  # at the target: stops
    assert watch.evals[0][:2] == [512, 199.0] and watch.evals[1][:2] == [1024, 200.0]
    late = rllib._ArmRun(run, rllib.Stopwatch(), "ppo/eval_return", Config(target_return=1e9, max_seconds=1e-9))
    with pytest.raises(rllib._Reached):
        late.log({"ppo/loss": 0.0}, step=10)  # past max_seconds: stops, whatever the return


def test_best_eval_return_is_the_highest_evaluation(monkeypatch, tmp_path):
    arm = {"evals": [[100, 50.0, 1.0], [200, 300.0, 2.0], [300, 120.0, 3.0]], "steps": 300, "seconds": 3.0}
    monkeypatch.setattr(rllib, "train_ours", lambda cfg, run: arm)
    m = rllib.train(Config(arms=("ours",)), Run(tmp_path, "rllib", 0, None, progress=False, tensorboard=False))
    assert m["ours/best_eval_return"] == 300.0 and m["ours/eval_return"] == 120.0
    assert m["ours/steps_per_second"] == pytest.approx(100.0)
