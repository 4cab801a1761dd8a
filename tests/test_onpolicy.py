"""The on-policy loop: Ctrl-C stops it within one update (checkpoint on `run.due()`), and a run resumed from
that checkpoint ends exactly where an uninterrupted one does."""

from __future__ import annotations

import dataclasses
import os
import signal

import numpy as np
import pytest

from seminal.core.errors import Interrupted
from seminal.core.run import Run
from seminal.papers.rl import a2c


def test_ctrl_c_checkpoints_within_one_update_and_resumes_exactly(tmp_path):
    # checkpoint_every is far beyond the run: only `run.due()` can make the loop stop and save.
    cfg = dataclasses.replace(a2c.PRESETS["quick"], total_steps=800, n_envs=4, eval_every=0, eval_episodes=1,
                              checkpoint_every=10_000)
    with Run(tmp_path / "a", "a2c", 0, cfg, progress=False, tensorboard=False) as run:
        straight = a2c.train(cfg, run)
        straight_loss = run.history("a2c/loss")[1][-1]

    calls = []
    original = a2c.make_update

    def make_update(*args, **kwargs):
        update = original(*args, **kwargs)

        def wrapped(rollout, progress, rng):
            calls.append(progress)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the run
            return update(rollout, progress, rng)
        return wrapped

    mp = pytest.MonkeyPatch()
    mp.setattr(a2c, "make_update", make_update)
    try:
        with pytest.raises(Interrupted):
            with Run(tmp_path / "b", "a2c", 0, cfg, progress=False, tensorboard=False) as run:
                a2c.train(cfg, run)
    finally:
        mp.undo()
    assert len(calls) == 3  # stopped right after the update in which Ctrl-C came, not at checkpoint_every
    with Run(tmp_path / "b", "a2c", 0, cfg, progress=False, tensorboard=False) as run:
        resumed = a2c.train(cfg, run)
        assert run.history("a2c/loss")[1][-1] == straight_loss  # the last update's loss, bit for bit
    assert resumed["eval/return"] == straight["eval/return"] and np.isfinite(resumed["eval/return"])
