"""MADDPG (papers/multi_agent/maddpg.py): the Gumbel-softmax by hand, the centralised and decentralised critic
inputs, the TD target, one whole update of every agent against an independent re-derivation (which networks make
the target, which actions the actor loss holds fixed, Polyak), the replay's per-agent columns, the NumPy acting
path, and a tiny deterministic, paired run."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from seminal.core import runner
from seminal.core.errors import SeminalError
from seminal.papers.multi_agent import maddpg
from seminal.papers.multi_agent._marl import MultiAgentEnv

pytestmark = pytest.mark.usefixtures("one_thread_no_plots")


def test_gumbel_softmax_by_hand_and_straight_through_gradient():
    logits = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    g = torch.tensor([[0.3, 1.2, -0.4]])
    z = np.array([0.8, 0.2, 1.6]) / 0.5  # (logits + g) / T, T = 0.5
    want = np.exp(z) / np.exp(z).sum()
    soft = maddpg.gumbel_softmax(logits, g, 0.5, hard=False)
    assert np.allclose(soft.detach().numpy()[0], want, atol=1e-6)
    hard = maddpg.gumbel_softmax(logits, g, 0.5, hard=True)
    assert hard.detach().numpy()[0].tolist() == [0.0, 0.0, 1.0]  # argmax of z
    w = torch.tensor([[1.0, -2.0, 0.5]])
    (gh,) = torch.autograd.grad((hard * w).sum(), logits)
    (gs,) = torch.autograd.grad((maddpg.gumbel_softmax(logits, g, 0.5, False) * w).sum(), logits)
    assert torch.allclose(gh, gs)  # straight-through: the soft sample's gradient
    u = maddpg.gumbel_noise(np.random.default_rng(0), (20000,)).numpy()
    assert abs(u.mean() - 0.5772) < 0.03 and abs(u.var() - np.pi**2 / 6) < 0.08  # Gumbel(0, 1) moments


def test_critic_inputs_hold_every_agent_for_maddpg_and_only_its_own_for_ddpg():
    obs = [torch.full((2, 3), 1.0), torch.full((2, 2), 2.0)]
    acts = [torch.full((2, 4), 3.0), torch.full((2, 5), 4.0)]
    x = maddpg.critic_inputs(obs, acts, 1, centralised=True)
    assert x[0].tolist() == [1.0] * 3 + [2.0] * 2 + [3.0] * 4 + [4.0] * 5  # (o_1, o_2, a_1, a_2), §4.1
    assert maddpg.critic_inputs(obs, acts, 1, centralised=False)[0].tolist() == [2.0] * 2 + [4.0] * 5
    assert maddpg.critic_inputs(obs, acts, 0, centralised=False)[0].tolist() == [1.0] * 3 + [3.0] * 4
    y = maddpg.td_target(torch.tensor([1.0, -2.0]), torch.tensor([0.0, 1.0]), 0.9, torch.tensor([10.0, 10.0]))
    assert y.tolist() == pytest.approx([1.0 + 0.9 * 10.0, -2.0])


def test_centralised_flags_per_arm():
    names = ["adversary_0", "agent_0", "agent_1"]
    assert maddpg.centralised_flags("maddpg", names) == [True] * 3
    assert maddpg.centralised_flags("ddpg", names) == [False] * 3
    assert maddpg.centralised_flags("maddpg_vs_ddpg", names) == [False, True, True]
    assert maddpg.centralised_flags("ddpg_vs_maddpg", names) == [True, False, False]


def _mlp_forward(net, x):
    """The Linear/ReLU stack by hand (an independent forward pass)."""
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    for k, m in enumerate(layers):
        x = x @ m.weight.T + m.bias
        if k < len(layers) - 1:
            x = torch.relu(x)
    return x


@pytest.mark.parametrize("centralised", [True, False])
def test_one_whole_update_equals_an_independent_computation(centralised):
    cfg = replace(maddpg.PRESETS["quick"], hidden=(8,), lr=1e-3, gamma=0.9, tau=0.2, grad_clip=1e9,
                  temperature=0.7, logit_reg=0.01)
    torch.manual_seed(0)
    obs_dims, act_dims = [3, 4], [2, 5]
    joint = sum(obs_dims) + sum(act_dims)
    agents = [maddpg.Agent(maddpg.mlp((d, 8, a)), joint if centralised else d + a, centralised, cfg)
              for d, a in zip(obs_dims, act_dims)]
    lr = 0.05
    for ag in agents:  # plain SGD, so each step reads back as its gradient: (before - after) / lr
        ag.actor_opt, ag.critic_opt = (torch.optim.SGD(ag.actor.parameters(), lr=lr),
                                       torch.optim.SGD(ag.critic.parameters(), lr=lr))
    for ag in agents:  # targets differ from the online nets, so using the wrong one shows
        with torch.no_grad():
            for p in [*ag.actor_target.parameters(), *ag.critic_target.parameters()]:
                p.add_(0.3 * torch.randn_like(p))
    before = copy.deepcopy(agents)
    B = 6
    g = torch.Generator().manual_seed(1)
    obs = [torch.randn(B, d, generator=g) for d in obs_dims]
    nxt = [torch.randn(B, d, generator=g) for d in obs_dims]
    acts = [torch.softmax(torch.randn(B, a, generator=g), -1) for a in act_dims]
    rew, term = torch.randn(B, 2, generator=g), torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    noise_next = [torch.randn(B, a, generator=g) for a in act_dims]
    noise_pi = [torch.randn(B, a, generator=g) for a in act_dims]
    maddpg.maddpg_update(agents, (obs, acts, rew, nxt, term), cfg, noise_next, noise_pi)

    def soft(logits, noise):
        e = torch.exp((logits + noise) / cfg.temperature)
        return e / e.sum(-1, keepdim=True)

    def q_in(o, a, i):
        return torch.cat([o[0], o[1], a[0], a[1]], -1) if centralised else torch.cat([o[i], a[i]], -1)

    # Eq. (6): a'_j from every agent's *target* actor on o'_j, Q'_i the target critic, y with (1 - terminated)
    next_a = [soft(_mlp_forward(before[j].actor_target, nxt[j]), noise_next[j]).detach() for j in range(2)]
    for i in range(2):
        y = rew[:, i] + cfg.gamma * (1 - term) * _mlp_forward(before[i].critic_target, q_in(nxt, next_a, i))[:, 0]
        critic = copy.deepcopy(before[i].critic)
        loss = ((_mlp_forward(critic, q_in(obs, acts, i))[:, 0] - y.detach()) ** 2).mean()
        grads = torch.autograd.grad(loss, list(critic.parameters()))
        for p, p0, gp in zip(agents[i].critic.parameters(), before[i].critic.parameters(), grads):
            assert torch.allclose((p0 - p) / lr, gp, atol=1e-4), "critic step differs from Eq. (6)"
        # Eq. (5): a_i = mu_i(o_i) relaxed, the other agent's action from the buffer, through the *updated* critic
        actor = copy.deepcopy(before[i].actor)
        logits = _mlp_forward(actor, obs[i])
        mine = [soft(logits, noise_pi[i]) if j == i else acts[j] for j in range(2)]
        q_pi = _mlp_forward(agents[i].critic, q_in(obs, mine, i))[:, 0]
        loss = -q_pi.mean() + cfg.logit_reg * (logits**2).mean()
        grads = torch.autograd.grad(loss, list(actor.parameters()))
        for p, p0, gp in zip(agents[i].actor.parameters(), before[i].actor.parameters(), grads):
            assert torch.allclose((p0 - p) / lr, gp, atol=1e-4), "actor step differs from Eq. (5)"
        # §4.1: theta' <- tau theta + (1 - tau) theta', with the online nets after their step
        for net in ("actor", "critic"):
            pairs = zip(getattr(agents[i], f"{net}_target").parameters(), getattr(agents[i], net).parameters(),
                        getattr(before[i], f"{net}_target").parameters())
            for tgt, online, old in pairs:
                assert torch.allclose(tgt, cfg.tau * online + (1 - cfg.tau) * old, atol=1e-6)
            changed = any(not torch.equal(a, b) for a, b in zip(getattr(agents[i], net).parameters(),
                                                                getattr(before[i], net).parameters()))
            assert changed, f"agent {i}'s {net} was not stepped"


def test_replay_returns_each_agents_columns_as_added():
    mem = maddpg.JointReplay(8, [2, 3], [4, 1])
    for t in range(10):  # wraps: the last 8 stay
        mem.add([np.full(2, t), np.full(3, -t)], [np.full(4, 10 + t), np.full(1, 20 + t)], np.array([t, 2 * t]),
                [np.full(2, t + 0.5), np.full(3, -t - 0.5)], t % 3 == 0)
    assert mem.n == 8
    obs, acts, rew, nxt, term = mem.sample(np.random.default_rng(0), 64)
    t = obs[0][:, 0]
    assert set(t.tolist()) <= set(range(2, 10)) and len(set(t.tolist())) > 4
    assert torch.equal(obs[1], -t[:, None].expand(-1, 3)) and torch.equal(acts[0], (10 + t)[:, None].expand(-1, 4))
    assert torch.equal(acts[1][:, 0], 20 + t) and torch.equal(rew, torch.stack([t, 2 * t], -1))
    assert torch.equal(nxt[0][:, 0], t + 0.5) and torch.equal(nxt[1][:, 0], -t - 0.5)
    assert torch.equal(term, (t % 3 == 0).float())
    fresh = maddpg.JointReplay(8, [2, 3], [4, 1])
    fresh.load(mem.state())
    assert all(np.array_equal(fresh.data[k][: mem.n], mem.data[k][: mem.n]) for k in mem.KEYS)


@pytest.mark.parametrize("hard", [False, True])
def test_numpy_acting_path_equals_the_torch_actor(hard):
    torch.manual_seed(3)
    actor = maddpg.mlp((5, 16, 16, 4))
    fast = maddpg.FastActor(actor, 0.8, hard)
    rng = np.random.default_rng(0)
    for _ in range(5):
        o, g = rng.normal(size=5).astype(np.float32), rng.gumbel(size=4).astype(np.float32)
        want = maddpg.gumbel_softmax(actor(torch.from_numpy(o))[None], torch.from_numpy(g)[None], 0.8, hard)[0]
        assert np.allclose(fast.sample(o, g), want.detach().numpy(), atol=1e-5)
    with torch.no_grad():  # views of the live weights: an optimizer step shows through
        next(actor.parameters()).add_(1.0)
    assert np.allclose(fast.logits(o), actor(torch.from_numpy(o)).detach().numpy(), atol=1e-5)


def test_ddpg_arm_has_decentralised_critics_of_the_right_width():
    env = MultiAgentEnv("simple_speaker_listener", seed=0, continuous=True)
    cfg = maddpg.PRESETS["quick"]
    c = maddpg.make_agents(env, [True, True], cfg)
    d = maddpg.make_agents(env, [False, False], cfg)
    joint = sum(env.obs_dims) + sum(env.act_dims)
    assert [ag.critic[0].in_features for ag in c] == [joint, joint]
    assert [ag.critic[0].in_features for ag in d] == [o + a for o, a in zip(env.obs_dims, env.act_dims)]


_TINY = ["episodes=6", "learning_starts=50", "update_every=10", "batch_size=16", "hidden=8", "eval_every=3",
         "eval_episodes=1", "final_episodes=2", "checkpoint_every=3"]


def test_tiny_run_is_deterministic_paired_and_seed_dependent(tmp_path, monkeypatch):
    a = runner.execute("maddpg", "quick", 7, _TINY, tmp_path / "a", progress=False)["metrics"]
    b = runner.execute("maddpg", "quick", 7, _TINY, tmp_path / "b", progress=False)["metrics"]
    c = runner.execute("maddpg", "quick", 8, _TINY, tmp_path / "c", progress=False)["metrics"]
    assert a == b and a != c
    assert a["comm/maddpg_minus_ddpg"] == pytest.approx(a["comm/maddpg_return"] - a["comm/ddpg_return"])
    starts, flags = [], []  # both arms start from the same actor weights (paired), MADDPG's critics centralised

    def spy(env, centralised, cfg, real=maddpg.make_agents):
        agents = real(env, centralised, cfg)
        starts.append([[p.detach().clone() for p in ag.actor.parameters()] for ag in agents])
        flags.append([ag.centralised for ag in agents])
        return agents

    monkeypatch.setattr(maddpg, "make_agents", spy)
    runner.execute("maddpg", "quick", 7, _TINY, tmp_path / "d", progress=False)
    assert flags == [[True, True], [False, False]]
    for x, y in zip(*starts):
        assert all(torch.equal(p, q) for p, q in zip(x, y))


def test_bad_arms_are_one_line_errors():
    with pytest.raises(SeminalError, match="choose from"):
        replace(maddpg.PRESETS["quick"], arms=("maddpg", "iql")).validate()
    with pytest.raises(SeminalError, match="competitive task"):
        replace(maddpg.PRESETS["quick"], arms=("maddpg_vs_ddpg",)).validate()


def test_competitive_arms_run_and_report_the_good_team(tmp_path):
    env = MultiAgentEnv("simple_adversary", seed=0)
    good = maddpg.team(env, "simple_adversary")
    assert good and all(not env.agents[i].startswith("adversary") for i in good) and len(good) == env.n - 1
    m = runner.execute("maddpg", "deception", 3, _TINY, tmp_path, progress=False)["metrics"]
    gap = m["deception/maddpg_vs_ddpg_minus_ddpg_vs_maddpg"]
    assert gap == pytest.approx(m["deception/maddpg_vs_ddpg_return"] - m["deception/ddpg_vs_maddpg_return"])


def test_every_actor_and_critic_step_is_clipped_to_grad_clip():
    """Plain SGD at lr 1 and a tiny grad_clip: each network's step is exactly grad_clip long (its own gradient
    norm clipped, not another network's)."""
    clip = 1e-4
    cfg = replace(maddpg.PRESETS["quick"], hidden=(8,), grad_clip=clip, tau=0.1)
    torch.manual_seed(4)
    obs_dims, act_dims = [3, 4], [2, 5]
    joint = sum(obs_dims) + sum(act_dims)
    agents = [maddpg.Agent(maddpg.mlp((d, 8, a)), joint, True, cfg) for d, a in zip(obs_dims, act_dims)]
    for ag in agents:
        ag.actor_opt, ag.critic_opt = (torch.optim.SGD(ag.actor.parameters(), lr=1.0),
                                       torch.optim.SGD(ag.critic.parameters(), lr=1.0))
    before = copy.deepcopy(agents)
    B, g = 8, torch.Generator().manual_seed(2)
    obs = [torch.randn(B, d, generator=g) for d in obs_dims]
    nxt = [torch.randn(B, d, generator=g) for d in obs_dims]
    acts = [torch.softmax(torch.randn(B, a, generator=g), -1) for a in act_dims]
    rew = 10 * torch.randn(B, 2, generator=g)  # large errors: every raw gradient norm is far above clip
    noise = [[torch.randn(B, a, generator=g) for a in act_dims] for _ in range(2)]
    maddpg.maddpg_update(agents, (obs, acts, rew, nxt, torch.zeros(B)), cfg, *noise)
    for ag, old in zip(agents, before):
        for net in ("actor", "critic"):
            step = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(getattr(ag, net).parameters(),
                                                                          getattr(old, net).parameters())))
            assert step.item() == pytest.approx(clip, rel=1e-3), net


def test_replay_samples_only_the_slots_filled_so_far():
    mem = maddpg.JointReplay(100, [1], [1])
    for t in range(5):
        mem.add([np.full(1, t + 1.0)], [np.full(1, 0.5)], np.array([1.0]), [np.full(1, t + 2.0)], False)
    obs, *_ = mem.sample(np.random.default_rng(0), 500)
    assert set(obs[0][:, 0].tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}  # never an empty (zero) slot


def test_training_loop_stores_each_step_as_acted(tmp_path, monkeypatch):
    """No update happens (learning_starts beyond the run), so the actors stay at their initial weights: every stored
    action must be the Gumbel-softmax sample softmax((mu_j(o_j) + g_t) / T) with g_t the t-th row of the episode's
    noise drawn from the arm's generator (seed, 23), every transition chains to the next, and the time-limit end
    of an MPE episode is stored as not terminated (Eq. 6 still bootstraps there)."""
    added, made = [], []
    real_add, real_make = maddpg.JointReplay.add, maddpg.make_agents

    def spy_add(self, obs, acts, rew, next_obs, term):
        added.append(([o.copy() for o in obs], [a.copy() for a in acts], np.array(rew), [o.copy() for o in next_obs],
                      bool(term)))
        real_add(self, obs, acts, rew, next_obs, term)

    def spy_make(env, centralised, cfg):
        agents = real_make(env, centralised, cfg)
        made.append(copy.deepcopy([ag.actor for ag in agents]))
        return agents

    monkeypatch.setattr(maddpg.JointReplay, "add", spy_add)
    monkeypatch.setattr(maddpg, "make_agents", spy_make)
    runner.execute("maddpg", "quick", 5, ["episodes=2", "learning_starts=100000", "hidden=8", "eval_every=2",
                                          "eval_episodes=1", "final_episodes=1", "checkpoint_every=0",
                                          "arms=maddpg"], tmp_path, progress=False)
    T, (actors,) = 25, made
    temperature = maddpg.PRESETS["quick"].temperature
    assert len(added) == 2 * T
    rng = np.random.default_rng([5, 23])
    for ep in range(2):
        noise = [maddpg.gumbel_noise(rng, (T, actor[-1].out_features)) for actor in actors]  # as the loop draws
        for t in range(T):
            obs, acts, rew, nxt, term = added[ep * T + t]
            assert not term  # MPE: a time limit, never a terminal state
            if t + 1 < T:
                assert all(np.array_equal(x, y) for x, y in zip(nxt, added[ep * T + t + 1][0]))
            for j, actor in enumerate(actors):
                with torch.no_grad():
                    want = torch.softmax((actor(torch.from_numpy(obs[j])) + noise[j][t]) / temperature, -1)
                assert np.allclose(acts[j], want.numpy(), atol=1e-5), (ep, t, j)


@pytest.mark.parametrize("policy,want", [("greedy", [1, 2]), ("sample", [0, 0])])
def test_evaluation_acts_greedily_or_by_gumbel_sample_as_configured(policy, want, monkeypatch):
    """`greedy`: each actor's argmax logit; `sample`: its Gumbel-softmax sample (a fake one, never the argmax)."""
    class Fake:
        def __init__(self, logits):
            self._logits = np.array(logits)

        def logits(self, obs):
            return self._logits

        def sample(self, obs, noise):
            assert noise.shape == (3,)
            return np.array([1.0, 0.0, 0.0])

    seen = {}

    def rollout(env, act, episodes, seed, scale, keep):
        seen["actions"] = act([None, None], None)
        return 0.0

    monkeypatch.setattr(maddpg, "rollout_return", rollout)
    env = type("Env", (), {"continuous": False, "act_dims": [3, 3]})()
    cfg = replace(maddpg.PRESETS["quick"], eval_policy=policy)
    maddpg.evaluate(env, [Fake([0.1, 2.0, -1.0]), Fake([0.0, -3.0, 0.5])], cfg, 1, 0, [0, 1])
    assert seen["actions"] == want
