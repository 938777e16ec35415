"""Benchmark: what pinning the CPU kernel path costs (``cpu_kernels=avx2`` vs ``native``).

One reference-study job (default: ``method=joint seed=0``, real MNIST, pretraining included, cold
baseline cache) run as typed (``python train.py ...``), the two settings alternating (A B A B ...)
so that drift of the machine's speed hits both alike. Prints each run's wall time, the median of
each setting, the median of the per-pair ratios avx2/native, and the final test accuracy of each
setting (the pinned path gives other bits than the native one on an AVX-512 machine).

    python bench/bench_kernels.py                       # 5 pairs, method=joint seed=0
    python bench/bench_kernels.py --pairs 3 method=sequential

Run it by hand on an otherwise idle machine; it is not a test.
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
SETTINGS = ("avx2", "native")


def run_job(kernels: str, work: Path, extra: list[str]) -> tuple[float, float, str]:
    """Wall seconds, final test accuracy and the kernel path torch reported, of one job."""
    run_dir = Path(tempfile.mkdtemp(dir=work))
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    cmd = [sys.executable, "train.py", f"cpu_kernels={kernels}", "logger=none", "callbacks=none", "trainer=cpu",
           "pretrain.cache=false", f"hydra.run.dir={run_dir}", *extra]
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    metrics = json.loads((run_dir / "metrics.json").read_text())
    info = json.loads((run_dir / "run_info.json").read_text())
    return wall, metrics["final"]["test/acc"], info["cpu_capability"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    args, extra = parser.parse_known_args()
    extra = extra or ["method=joint", "seed=0"]
    times: dict[str, list[float]] = {k: [] for k in SETTINGS}
    accuracy, path = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs + 1):  # the first pair warms the file cache and is not counted
            for kernels in SETTINGS:
                wall, acc, capability = run_job(kernels, Path(tmp), extra)
                if i:
                    times[kernels].append(wall)
                    print(f"pair {i} {kernels:6s} {wall:6.2f} s  test acc {100 * acc:.2f} %  ({capability})", flush=True)
                accuracy[kernels], path[kernels] = acc, capability
    ratios = [a / n for a, n in zip(times["avx2"], times["native"])]
    for kernels in SETTINGS:
        print(f"{kernels:6s} median {statistics.median(times[kernels]):.2f} s, test acc {100 * accuracy[kernels]:.2f} % "
              f"({path[kernels]})")
    print(f"avx2/native wall time, median of {len(ratios)} pair ratios: {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
