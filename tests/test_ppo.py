"""PPO: the clipped objective's gradient (autograd), Eq. (7) against its case analysis, the reusable
train_policy, bad input, same-seed determinism and a smoke run of train."""

from __future__ import annotations

import dataclasses

import gymnasium
import numpy as np
import pytest
import torch

from seminal.core.errors import SeminalError
from seminal.core.run import Run
from seminal.papers.rl import ppo
from seminal.papers.rl._onpolicy import ActorCritic
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
    for key in ("eval/return", "noclip/eval_return", "ablation/drop_gap", "ablation/kl_ratio",
                "ablation/last100_gap"):
        assert np.isfinite(metrics[key])
    assert (tmp_path / "plots" / "learning_curve.png").exists()


# ---- one whole update against an independent computation ------------------------------------------------
def naive_gae(ro, gamma, lam):
    """A_t = sum_l (gamma lambda)^l delta_{t+l} by its definition, stopping at the episode's end (Eq. 11-12)."""
    T, N = ro["rewards"].shape
    nv = np.where(ro["terminated"], 0.0, ro["next_values"])
    delta = ro["rewards"] + gamma * nv - ro["values"]
    A = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            for k in range(t, T):
                A[t, n] += (gamma * lam) ** (k - t) * delta[k, n]
                if ro["dones"][k, n]:
                    break
    return A


def hand_loss(model, obs, actions, old_logp, A, targets, cfg):
    """-(L^CLIP - c1 L^VF + c2 H), written per sample with the case analysis of Eq. (7) spelled out."""
    d = torch.distributions.Categorical(logits=model.pi_head(model.pi_body(obs)))
    ratio = torch.exp(d.log_prob(actions) - old_logp)  # pi_theta / pi_old
    terms = []
    for r, a in zip(ratio, A):
        if a >= 0 and r > 1 + cfg.clip:
            terms.append((1 + cfg.clip) * a)  # the clipped term is the min: constant, no gradient
        elif a < 0 and r < 1 - cfg.clip:
            terms.append((1 - cfg.clip) * a)
        else:
            terms.append(r * a)
    l_clip = torch.stack(terms).mean()
    l_vf = 0.5 * ((model.v_head(model.v_body(obs)).squeeze(-1) - targets) ** 2).mean()
    return -(l_clip - cfg.vf_coef * l_vf + cfg.ent_coef * d.entropy().mean()), ratio


def _two_nets_and_a_stale_batch(seed: int):
    """Two equal actor-critics (one for make_update, one for the hand-written reference) and a 6 x 3 batch whose
    pi_old differs from pi_theta (as after earlier epochs): ratios from about 0.55 to 1.8, both sides of the clip.
    Returns the nets, the generator (for the rest of the batch), obs, actions and log pi_old."""
    model = ActorCritic(3, gymnasium.spaces.Discrete(3), hidden=(5,), seed=0)
    with torch.no_grad():
        model.pi_head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
    ref = ActorCritic(3, gymnasium.spaces.Discrete(3), hidden=(5,), seed=0)
    ref.load_state_dict(model.state_dict())
    rng = np.random.default_rng(seed)
    T, N = 6, 3
    obs = rng.normal(size=(T, N, 3)).astype(np.float32)
    actions = rng.integers(3, size=(T, N))
    with torch.no_grad():
        logp_now = model.dist(torch.as_tensor(obs.reshape(-1, 3))).log_prob(torch.as_tensor(actions.reshape(-1)))
    old_logp = logp_now.numpy().reshape(T, N) + rng.uniform(-0.6, 0.6, size=(T, N)).astype(np.float32)
    return model, ref, rng, obs, actions, old_logp


def test_two_epochs_of_the_update_equal_hand_written_sgd_steps():
    """ppo.make_update (the closure `train_policy` runs) for K = 2 full-batch epochs, with SGD in place of Adam
    so the expected parameters are theta - lr grad, against Eq. (7)/(9) written by hand on GAE by definition."""
    cfg = dataclasses.replace(ppo.PRESETS["quick"], epochs=2, minibatch=10_000, lr=0.2, anneal_lr=True, gamma=0.9,
                              lam=0.7, clip=0.2, vf_coef=0.5, ent_coef=0.05, max_grad_norm=0.0, norm_adv=True)
    model, ref, rng, obs, actions, old_logp = _two_nets_and_a_stale_batch(seed=2)
    T, N = obs.shape[:2]
    ro = {"obs": obs, "actions": actions, "logp": old_logp, "rewards": rng.normal(1.0, 1.0, (T, N)),
          "values": rng.normal(size=(T, N)), "next_values": rng.normal(2.0, 1.0, (T, N)),
          "terminated": np.zeros((T, N), bool), "dones": np.zeros((T, N), bool)}
    ro["terminated"][2, 0] = ro["dones"][2, 0] = True
    ro["dones"][3, 1] = True

    A = naive_gae(ro, cfg.gamma, cfg.lam)
    targets = torch.as_tensor((A + ro["values"]).reshape(-1), dtype=torch.float32)  # lambda-returns
    A = A.reshape(-1)
    A = torch.as_tensor((A - A.mean()) / (A.std(ddof=1) + 1e-8), dtype=torch.float32)
    t_obs, t_act = torch.as_tensor(obs.reshape(-1, 3)), torch.as_tensor(actions.reshape(-1))
    t_old = torch.as_tensor(old_logp.reshape(-1))
    lr = cfg.lr * (1 - 0.25)  # annealed: progress 0.25
    clipped_somewhere = False
    for _ in range(cfg.epochs):
        loss, ratio = hand_loss(ref, t_obs, t_act, t_old, A, targets, cfg)
        clipped_somewhere |= bool((((ratio > 1.2) & (A > 0)) | ((ratio < 0.8) & (A < 0))).any())
        grads = torch.autograd.grad(loss, list(ref.parameters()))
        with torch.no_grad():
            for p, g in zip(ref.parameters(), grads):
                p -= lr * g
    assert clipped_somewhere  # the fixture exercises the clip

    update = ppo.make_update(model, torch.optim.SGD(model.parameters(), lr=cfg.lr), cfg)
    update(ro, 0.25, np.random.default_rng(0))
    for (name, p), p_ref in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), p_ref.detach(), rtol=1e-5, atol=1e-6, msg=name)


def test_gae_by_definition():
    from seminal.papers.rl.gae import gae

    rng = np.random.default_rng(7)
    T, N = 7, 4
    ro = {"rewards": rng.normal(size=(T, N)), "values": rng.normal(size=(T, N)),
          "next_values": rng.normal(size=(T, N)), "terminated": rng.random((T, N)) < 0.15}
    ro["dones"] = ro["terminated"] | (rng.random((T, N)) < 0.15)
    got = gae(ro["rewards"], ro["values"], ro["next_values"], ro["terminated"], ro["dones"], 0.95, 0.8)
    np.testing.assert_allclose(got, naive_gae(ro, 0.95, 0.8), rtol=1e-10)


@pytest.mark.parametrize("ratio, adv, moves", [
    (0.81, -1.0, True), (0.79, -1.0, False), (1.19, 1.0, True), (1.21, 1.0, False),  # just inside / outside 1 +- eps
    (0.79, 1.0, True), (1.21, -1.0, True),
])
def test_clip_range_is_one_plus_minus_eps(ratio, adv, moves):
    """The clip's edges are 1 - eps and 1 + eps exactly (Eq. 7), probed 0.01 either side of each."""
    g = grad_of_ratio(ratio, adv, 0.2)
    assert g == (pytest.approx(adv) if moves else 0.0)
    value = clipped_surrogate(torch.tensor([ratio]), torch.tensor([adv]), 0.2).item()
    assert value == pytest.approx(min(ratio * adv, min(max(ratio, 0.8), 1.2) * adv))


def test_ppo_loss_diagnostics_by_hand_and_both_paths_agree():
    r = np.array([1.5, 0.9, 0.7, 1.0])
    old = torch.tensor([-1.0, -0.5, -2.0, -0.3])
    logp = old + torch.tensor(np.log(r), dtype=torch.float32)
    adv, values, targets = torch.tensor([1.0, -2.0, 0.5, 3.0]), torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.zeros(4)
    ent = torch.tensor([0.4, 0.6, 0.8, 1.0])
    loss, d = ppo.ppo_loss(logp, old, adv, values, targets, ent, clip=0.2, vf_coef=0.5, ent_coef=0.1)
    fast, _ = ppo.ppo_loss(logp, old, adv, values, targets, ent, clip=0.2, vf_coef=0.5, ent_coef=0.1,
                           diagnostics=False)
    # per sample min(rA, clip(r)A): (1.2, -1.8, 0.35, 3.0) -> mean 0.6875; 0.5 mean V^2 = 1.75; mean H = 0.7
    assert d["l_clip"].item() == pytest.approx(0.6875, rel=1e-5)
    assert d["v_loss"].item() == pytest.approx(1.75) and d["entropy"].item() == pytest.approx(0.7)
    assert loss.item() == pytest.approx(-(0.6875 - 0.5 * 1.75 + 0.1 * 0.7), rel=1e-5)
    assert fast.item() == pytest.approx(loss.item(), rel=1e-6)
    # k3 estimator of KL(old || new): mean of (r - 1) - log r, each term >= 0
    assert d["approx_kl"].item() == pytest.approx(np.mean((r - 1) - np.log(r)), rel=1e-4)
    assert d["clip_frac"].item() == pytest.approx(0.5)  # r = 1.5 and 0.7 lie outside [0.8, 1.2]


def reference_update(model, ro, cfg, progress, seed):
    """Algorithm 1 by hand: K epochs over the batch in the order of `rng.permutation` (the loop's generator, as the
    update's contract says), minibatches of M (the last one shorter), advantages normalised within each minibatch,
    Eq. (7)/(9) per sample, the gradient rescaled as one vector to max_grad_norm, then an SGD step."""
    rng = np.random.default_rng(seed)
    A_all = naive_gae(ro, cfg.gamma, cfg.lam)
    targets = torch.as_tensor((A_all + ro["values"]).reshape(-1), dtype=torch.float32)
    A_all = A_all.reshape(-1)
    obs, act = torch.as_tensor(ro["obs"].reshape(-1, 3)), torch.as_tensor(ro["actions"].reshape(-1))
    old = torch.as_tensor(ro["logp"].reshape(-1))
    lr, B, clipped = cfg.lr * (1 - progress), len(A_all), 0
    for _ in range(cfg.epochs):
        order = rng.permutation(B)
        for start in range(0, B, cfg.minibatch):
            mb = order[start:start + cfg.minibatch]
            a = A_all[mb]
            a = torch.as_tensor((a - a.mean()) / (a.std(ddof=1) + 1e-8), dtype=torch.float32)
            loss, _ = hand_loss(model, obs[mb], act[mb], old[mb], a, targets[mb], cfg)
            grads = torch.autograd.grad(loss, list(model.parameters()))
            norm = torch.sqrt(sum((g**2).sum() for g in grads))
            scale = min(1.0, cfg.max_grad_norm / (norm.item() + 1e-6)) if cfg.max_grad_norm else 1.0
            clipped += scale < 1.0
            with torch.no_grad():
                for p, g in zip(model.parameters(), grads):
                    p -= lr * scale * g
    return clipped


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.3])
def test_minibatch_epochs_equal_hand_written_sgd_steps(max_grad_norm):
    """make_update with 4 minibatches an epoch (5, 5, 5, 3 samples) for K = 3 epochs, with and without the
    global-norm clip binding, against `reference_update`."""
    cfg = dataclasses.replace(ppo.PRESETS["quick"], epochs=3, minibatch=5, lr=0.1, anneal_lr=True, gamma=0.9,
                              lam=0.7, clip=0.2, vf_coef=0.5, ent_coef=0.05, max_grad_norm=max_grad_norm,
                              norm_adv=True)
    model, ref, rng, obs, actions, old_logp = _two_nets_and_a_stale_batch(seed=3)
    T, N = obs.shape[:2]
    ro = {"obs": obs, "actions": actions, "logp": old_logp,
          "rewards": rng.normal(1.0, 1.0, (T, N)), "values": rng.normal(size=(T, N)),
          "next_values": rng.normal(2.0, 1.0, (T, N)), "terminated": np.zeros((T, N), bool),
          "dones": np.zeros((T, N), bool)}
    ro["terminated"][2, 0] = ro["dones"][2, 0] = True
    ro["dones"][3, 1] = True
    clipped = reference_update(ref, ro, cfg, 0.5, seed=11)
    assert (clipped > 0) == (max_grad_norm > 0)  # the clip binds in the clipped case
    ppo.make_update(model, torch.optim.SGD(model.parameters(), lr=cfg.lr), cfg)(ro, 0.5, np.random.default_rng(11))
    for (name, p), p_ref in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), p_ref.detach(), rtol=1e-5, atol=1e-6, msg=name)


def test_the_no_clipping_surrogate_is_the_plain_importance_weighted_advantage():
    """Table 1's "no clipping or penalty" row: L = E[r_t A_t], by hand; with clipping, Eq. (7) by hand."""
    ratio = torch.tensor([0.5, 1.0, 1.5, 2.0])
    adv = torch.tensor([2.0, -1.0, 1.0, -0.5])
    assert ppo.clipped_surrogate(ratio, adv, None).item() == pytest.approx((1.0 - 1.0 + 1.5 - 1.0) / 4)
    # eps = 0.2: min(r A, clip(r) A) = min(1, 1.6), min(-1, -1), min(1.5, 1.2), min(-1, -0.6)
    assert ppo.clipped_surrogate(ratio, adv, 0.2).item() == pytest.approx((1.0 - 1.0 + 1.2 - 1.0) / 4)
