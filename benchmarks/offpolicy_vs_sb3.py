"""Our SAC against Stable-Baselines3's SAC: same env, step budget, seeds and machine; one process, one thread each.

    python benchmarks/offpolicy_vs_sb3.py --steps 20000 --seeds 0          # ours, then SB3, one after the other
    python benchmarks/offpolicy_vs_sb3.py --parallel                        # both at once (needs 2 free cores)
    python benchmarks/offpolicy_vs_sb3.py --device cuda --sides ours,ours-eager,sb3   # GPU: graph vs eager

On a GPU, "ours" replays each update as one captured CUDA graph (`Config.cuda_graph`); "ours-eager" is the
same code with the graph off, launching each kernel from Python as SB3 does. On a CPU the two are the same.

Same update-to-data ratio on both sides: one gradient step per env step, batch 256, 256x256 actor and
critics, Adam 3e-4, tau 0.005, gamma 0.99, 1000 uniform-random warm-up steps, automatic temperature. The
only remaining difference is SB3's initial temperature (its default, 1.0) against ours (0.2, as the
authors' code). For each side it prints env steps/s over the whole run, wall seconds (model construction
included) and the final deterministic return: 10 episodes of `seminal.core.rl.evaluate`, the same starts.
SB3 is the `bench` extra (`pip install -e ".[bench]"`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time


def run_one(side: str, env_id: str, steps: int, seed: int, device: str) -> dict:
    """Train one side in this process (1 torch thread) and return its numbers."""
    import numpy as np
    import torch

    from seminal.core.rl import evaluate, make_env
    from seminal.core.run import seed_everything

    torch.set_num_threads(1)
    seed_everything(seed)
    t0 = time.perf_counter()
    if side in ("ours", "ours-eager"):
        from seminal.papers.rl import sac

        cfg = dataclasses.replace(sac.PRESETS["pendulum"], env_id=env_id, total_steps=steps, cuda_graph=side == "ours")
        policy = sac.train_sac(make_env(env_id), cfg, seed=seed, device=device)
        seconds = time.perf_counter() - t0
        act = policy
    else:
        from stable_baselines3 import SAC

        model = SAC("MlpPolicy", make_env(env_id), learning_starts=1000, batch_size=256, train_freq=1,
                    gradient_steps=1, seed=seed, device=device, verbose=0)
        model.learn(total_timesteps=steps)
        seconds = time.perf_counter() - t0

        def act(obs):
            return model.predict(obs, deterministic=True)[0]
    returns = evaluate(act, env_id, episodes=10)
    return {"side": side, "seed": seed, "steps": steps, "seconds": round(seconds, 1),
            "steps_per_s": round(steps / seconds, 1), "final_return": round(float(np.mean(returns)), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Pendulum-v1")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--sides", default="ours,sb3")
    p.add_argument("--device", default="cpu")
    p.add_argument("--parallel", action="store_true", help="run all (side, seed) processes at once")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: side:seed, run in this process
    args = p.parse_args()
    if args.one:
        side, seed = args.one.split(":")
        print(json.dumps(run_one(side, args.env, args.steps, int(seed), args.device)), flush=True)
        return
    jobs = [(side, int(seed)) for seed in args.seeds.split(",") for side in args.sides.split(",")]
    base = [sys.executable, __file__, "--env", args.env, "--steps", str(args.steps), "--device", args.device]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = []
    results = []
    for side, seed in jobs:
        cmd = base + ["--one", f"{side}:{seed}"]
        if args.parallel:
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env))
        else:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, check=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    for proc in procs:
        out, _ = proc.communicate()
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    print(f"\nSAC on {args.env}, {args.steps} env steps, 1 gradient step each, one thread per process "
          f"({'in parallel' if args.parallel else 'one after the other'})")
    print(f"{'side':10} {'seed':>4} {'steps/s':>8} {'seconds':>8} {'final return':>13}")
    for r in results:
        print(f"{r['side']:10} {r['seed']:>4} {r['steps_per_s']:>8} {r['seconds']:>8} {r['final_return']:>13}")
    by = {s: [r for r in results if r["side"] == s] for s in ("ours", "ours-eager", "sb3")}
    mean = {s: sum(r["steps_per_s"] for r in v) / len(v) for s, v in by.items() if v}
    ret = {s: sum(r["final_return"] for r in v) / len(v) for s, v in by.items() if v}
    for s in ("ours", "ours-eager"):
        if s in mean and "sb3" in mean:
            print(f"speed ratio {s}/sb3: {mean[s] / mean['sb3']:.2f}x; mean final return {s} {ret[s]:.1f}, "
                  f"sb3 {ret['sb3']:.1f}")


if __name__ == "__main__":
    main()
