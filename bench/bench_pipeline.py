"""Benchmark: the default sequential + joint study through the pipeline vs a plain PyTorch loop.

Both run as whole processes (imports, data loading, pretraining with a cold baseline cache,
fine-tuning, evaluation), on the CPU, ``--repeats`` times each in alternation; the script prints
the median wall times and their ratio (target: pipeline <= 1.5x plain). The pipeline runs as a
user types it (``train.py -m``: the default joblib launcher, one job per core); the plain loop is
one serial process. Both pin the same intra-op thread count and optimizer, and perform as many
optimizer steps. It prints both runs' final test accuracies; they no longer agree (the plain loop has
not followed the pipeline's split and seeding since issue 16: README, Tests and benchmarks), so it is
a timing reference only.

    python bench/bench_pipeline.py [--repeats 3] [--threads 1] [--no-fused]

Run it by hand on an idle machine; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def pipeline_cmd(work: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable, "train.py", "-m", "method=sequential,joint", "seed=0", "trainer.accelerator=cpu",
        f"paths.cache_dir={work / 'cache'}", f"hydra.sweep.dir={work / 'sweep'}", *extra,
    ]


def final_accuracies(sweep: Path) -> dict[str, float]:
    out = {}
    for path in sweep.glob("*/metrics.json"):
        metrics = json.loads(path.read_text())
        out[metrics["method"]] = metrics["final"]["test/acc"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="pipeline vs plain-loop wall time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both (the pipeline's default: 1)")
    parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=True, help="fused Adam for both (default)")
    parser.add_argument("extra", nargs="*", help="extra Hydra overrides for the pipeline run")
    args = parser.parse_args()
    env = dict(os.environ)
    fused = str(args.fused).lower()
    args.extra = [f"torch_threads={args.threads}", f"method.optimizer.fused={fused}", f"pretrain.optimizer.fused={fused}", *args.extra]
    plain_flags = [f"--threads={args.threads}", "--fused" if args.fused else "--no-fused"]

    times: dict[str, list[float]] = {"pipeline": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        # Unpack and verify the data once, outside the timings (both would do it identically).
        subprocess.run([sys.executable, "-c", "from seqft_lightning.data.mnist_files import ensure_mnist_raw as e; e('data/mnist', 'data/cache')"], cwd=ROOT, check=True)
        for i in range(args.repeats):
            work = Path(tmp) / f"run{i}"  # fresh cache dir: pretraining included every time
            times["pipeline"].append(timed(pipeline_cmd(work, args.extra), env))
            times["plain"].append(timed([sys.executable, "bench/plain_loop.py", "--out", str(work / "plain.json"), *plain_flags], env))
            print(f"repeat {i}: pipeline {times['pipeline'][-1]:.2f} s, plain {times['plain'][-1]:.2f} s", flush=True)
        pipeline_acc = final_accuracies(Path(tmp) / "run0" / "sweep")
        plain = json.loads((Path(tmp) / "run0" / "plain.json").read_text())

    pipe_t, plain_t = statistics.median(times["pipeline"]), statistics.median(times["plain"])
    print(f"pipeline (train.py -m method=sequential,joint, cold cache): median {pipe_t:.2f} s over {args.repeats}")
    print(f"plain PyTorch loop, same optimizer steps:                  median {plain_t:.2f} s over {args.repeats}")
    print(f"ratio pipeline / plain: {pipe_t / plain_t:.3f}  (target <= 1.5)")
    # Each repeat runs the two back to back, so their ratio cancels slow drifts of the machine.
    paired = sorted(p / q for p, q in zip(times["pipeline"], times["plain"]))
    print(f"paired ratios per repeat: {', '.join(f'{r:.2f}' for r in paired)} (median {statistics.median(paired):.3f})")
    for method in ("sequential", "joint"):
        print(f"final test acc {method}: pipeline {pipeline_acc.get(method, float('nan')):.4f}, plain {plain[method]['acc']:.4f}")


if __name__ == "__main__":
    main()
