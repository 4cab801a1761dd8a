"""PPO: the clipped objective's gradient (autograd), Eq. (7) against its case analysis, the reusable
train_policy, bad input, same-seed determinism and a smoke run of train."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from seminal.core.errors import SeminalError
from seminal.core.run import Run
from seminal.papers.rl import ppo
from seminal.papers.rl.ppo import clipped_surrogate, max_drop

TINY = dataclasses.replace(ppo.PRESETS["quick"], total_steps=1024, n_envs=4, n_steps=64, epochs=2, minibatch=128,
                           eval_every=512, eval_episodes=2)


def grad_of_ratio(ratio: float, adv: float, clip: float | None) -> float:
    r = torch.tensor([ratio], requires_grad=True)
    clipped_surrogate(r, torch.tensor([adv]), clip).backward()
    return r.grad.item()


@pytest.mark.parametrize("ratio, adv, moves", [
    (1.5, 1.0, False),   # A > 0 and r > 1 + eps: already pushed far enough up, no gradient
    (0.5, -1.0, False),  # A < 0 and r < 1 - eps: already pushed far enough down, no gradient
    (1.1, 1.0, True),    # inside the clip range: gradient A
    (0.5, 1.0, True),    # A > 0 but r fell below 1 - eps: the min keeps the unclipped term, gradient A
    (1.5, -1.0, True),   # A < 0 but r rose above 1 + eps: unclipped term, gradient A (pulls back)
])
def test_clipped_objective_gradient(ratio, adv, moves):
    g = grad_of_ratio(ratio, adv, 0.2)
    assert g == (pytest.approx(adv) if moves else 0.0)
    assert grad_of_ratio(ratio, adv, None) == pytest.approx(adv)  # no clipping: always r A


def test_clipped_objective_is_a_pessimistic_bound():
    rng = np.random.default_rng(0)
    r, a = torch.tensor(rng.uniform(0.3, 2.0, 500)), torch.tensor(rng.normal(size=500))
    per_sample = torch.stack([clipped_surrogate(r[i:i + 1], a[i:i + 1], 0.2) for i in range(500)])
    assert torch.all(per_sample <= r * a + 1e-12)  # L^CLIP <= L^CPI (the paper's lower-bound remark)
    inside = (r > 0.8) & (r < 1.2)
    assert torch.allclose(per_sample[inside], (r * a)[inside])  # and equal to it near r = 1


def test_max_drop():
    assert max_drop([(1, 10.0), (2, 50.0), (3, 20.0), (4, 60.0), (5, 55.0)]) == 30.0
    assert max_drop([(1, 1.0), (2, 2.0)]) == 0.0


def test_train_policy_is_deterministic_and_reusable():
    a = ppo.train_policy("CartPole-v1", TINY, seed=3)
    b = ppo.train_policy("CartPole-v1", TINY, seed=3)
    assert a.curve == b.curve and a.evals == b.evals and len(a.curve[1]) > 0
    assert a.steps == 1024 and isinstance(a(np.zeros(4, np.float32)), int)
    c = ppo.train_policy("CartPole-v1", TINY, seed=4)
    assert c.curve != a.curve


def test_train_policy_accepts_a_factory_and_box_actions():
    import gymnasium

    def make():
        return gymnasium.make("Pendulum-v1")

    policy = ppo.train_policy(make, TINY, overrides=["eval_every=0"], seed=0)
    action = policy(np.zeros(3, np.float32))
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0


@pytest.mark.parametrize("env_id, match", [("Blackjack-v1", "flat vector"), ("NoSuchEnv-v0", "unknown env id")])
def test_bad_env_is_a_one_line_error(env_id, match):
    with pytest.raises(SeminalError, match=match):
        ppo.train_policy(env_id, TINY)


def test_smoke_train_runs_both_variants(tmp_path):
    with Run(tmp_path, "ppo", 0, TINY, progress=False, tensorboard=False) as run:
        metrics = ppo.train(TINY, run)
    for key in ("eval/return", "noclip/eval_return", "ablation/drop_gap"):
        assert np.isfinite(metrics[key])
    assert (tmp_path / "plots" / "learning_curve.png").exists()
