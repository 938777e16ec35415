"""Benchmark: wall time of a methods x seeds sweep of the reference study, three ways.

    (a) serial   basic launcher, baseline cache on  (each seed's baseline trained once, reused)
    (b) serial   basic launcher, pretrain.cache=false (every job pretrains its own baseline)
    (c) parallel the default launcher (joblib, baselines first), n_jobs=2, cache on

Each mode is one ``train.py -m`` process with fresh sweep and cache folders, on the CPU, with the
default (real MNIST) config plus any extra overrides given. After each sweep the script checks
that every job wrote ``metrics.json`` and counts the baselines that were trained; at the end it
prints a table and whether the modes agree on the final test accuracies.

    python bench/bench_sweep.py                                   # 3 methods x 3 seeds (many minutes)
    python bench/bench_sweep.py --seeds 0 --methods sequential pretrain.epochs=1 method.epochs_per_stage=1

Run it by hand on an otherwise idle machine; it is not a test. Every mode pins the same intra-op
thread count (``torch_threads``), so the three agree on every accuracy exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODES = {
    "a": ("serial, cache", ["hydra/launcher=basic"]),
    "b": ("serial, no cache", ["hydra/launcher=basic", "pretrain.cache=false"]),
    "c": ("default n_jobs={n_jobs}, cache", ["hydra.launcher.n_jobs={n_jobs}"]),
}


def sweep_cmd(work: Path, methods: str, seeds: str, mode_overrides: list[str], extra: list[str]) -> list[str]:
    return [
        sys.executable, "train.py", "-m", f"method={methods}", f"seed={seeds}", "trainer.accelerator=cpu",
        f"paths.cache_dir={work / 'cache'}", f"hydra.sweep.dir={work / 'sweep'}", *mode_overrides, *extra,
    ]


def run_mode(work: Path, cmd: list[str], env: dict) -> float:
    work.mkdir(parents=True)
    log = work / "sweep.log"
    start = time.perf_counter()
    with open(log, "wb") as handle:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({proc.returncode}): {' '.join(cmd)}\n{log.read_text(errors='replace')[-4000:]}")
    return elapsed


def summarise(sweep: Path) -> dict:
    """Jobs with metrics.json, baselines trained (cache misses) and final test accuracy per job."""
    jobs = [p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    finals, misses = {}, 0
    for job in jobs:
        metrics_path = job / "metrics.json"
        if metrics_path.is_file():
            metrics = json.loads(metrics_path.read_text())
            finals[(metrics["method"], metrics["seed"])] = metrics["final"]["test/acc"]
        log = job / "train.log"
        if log.is_file():
            misses += log.read_text(errors="replace").count("baseline cache miss")
    return {"jobs": len(jobs), "complete": len(finals), "misses": misses, "finals": finals}


def main() -> None:
    parser = argparse.ArgumentParser(description="sweep wall time: serial with/without baseline cache, parallel (the default)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--methods", default="sequential,joint,task_arithmetic", help="comma-separated methods")
    parser.add_argument("--modes", default="a,b,c", help="which of a (serial+cache), b (serial, no cache), c (parallel+cache)")
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib workers for mode c (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch_threads for every run (default: the config's, 1)")
    parser.add_argument("--keep", action="store_true", help="keep the sweep folders and print where they are")
    parser.add_argument("extra", nargs="*", help="extra Hydra overrides for every sweep, e.g. pretrain.epochs=1")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown mode(s) {sorted(unknown)}; choose from a, b, c")
    env = dict(os.environ)
    if args.threads:
        args.extra.append(f"torch_threads={args.threads}")
    n = len(args.methods.split(",")) * len(args.seeds.split(","))
    print(f"sweep: method={args.methods} x seed={args.seeds} = {n} jobs, CPU, overrides: {' '.join(args.extra) or '(none)'}", flush=True)

    # Unpack and verify MNIST once, outside the timings (every mode would do it identically).
    subprocess.run([sys.executable, "-c", "from seqft_lightning.data.mnist_files import ensure_mnist_raw as e; e('data/mnist', 'data/cache')"], cwd=ROOT, check=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    rows = []
    try:
        for mode in modes:
            label, overrides = MODES[mode]
            label = label.format(n_jobs=args.n_jobs)
            overrides = [o.format(n_jobs=args.n_jobs) for o in overrides]
            work = tmp / mode
            seconds = run_mode(work, sweep_cmd(work, args.methods, args.seeds, overrides, args.extra), env)
            info = summarise(work / "sweep")
            if info["complete"] != n:
                sys.exit(f"mode {mode}: {info['complete']} of {n} jobs wrote metrics.json (see {work})")
            trained = str(info["misses"]) if "pretrain.cache=false" not in overrides else f"{n} (every job)"
            rows.append((mode, label, seconds, trained, info["finals"]))
            print(f"({mode}) {label}: {seconds:.1f} s", flush=True)
    finally:
        if args.keep:
            print(f"sweep folders kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"{'mode':<5} {'launcher, baseline cache':<28} {'wall s':>8} {'s/job':>7} {'baselines trained':>18}")
    for mode, label, seconds, trained, _ in rows:
        print(f"({mode})  {label:<28} {seconds:>8.1f} {seconds / n:>7.1f} {trained:>18}")
    if len(rows) > 1:
        base = rows[0]
        for mode, label, seconds, _, finals in rows[1:]:
            diff = max(abs(finals[k] - base[4][k]) for k in finals)
            print(f"({mode}) vs ({base[0]}): speed-up {base[2] / seconds:.2f}x, max |final test acc difference| {diff:.2e}")


if __name__ == "__main__":
    main()
