"""Do the framework work-arounds issue 17 removed pay for themselves? (item 5: keep one only above 5 %)

``python bench/bench_framework_hacks.py [--pairs 3] [--hacks fx_name nvml gc_freeze] [--jobs JOB ...]``

Each hack is put back from outside, in the ``train.py`` process, without touching the package:

* ``fx_name``: ``ClassifierModule.__setattr__`` writes Lightning's ``_current_fx_name`` (set around every hook,
  dozens of times per optimizer step) with ``object.__setattr__``, skipping ``nn.Module``'s checks;
* ``nvml``: ``PYTORCH_NVML_BASED_CUDA_CHECK``, which Lightning sets at import, is removed again, so that
  ``torch.cuda.is_available()`` (called by torch's optimizers on every step) uses torch's cached answer instead
  of probing NVML on each call;
* ``gc_freeze``: ``gc.freeze()`` at exit, so that the interpreter's final collection skips the objects the imports
  made.

For each job (default: two of the reference study's kinds) it alternates ``plain`` (the package as shipped) and the
hack, ``--pairs`` times after a warm-up that fills the baseline cache, and prints the median ratio hack/plain of
the run's own wall time (``run_info.json`` ``wall_time_s``: from the plan to the result files, what a sweep job
costs inside a reused worker) and of the whole process (start-up and exit included). Both modes run with the CPU
kernels pinned by the environment (the patch imports torch before ``train.py`` could pin them). Run it by hand
on an idle machine; ratios below 0.95 are what would justify a hack.
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
JOBS = ["method=sequential", "method=joint retention=ewc retention.lambda_=30"]
HACKS = {
    "fx_name": """
from seqft_lightning.models.classifier import ClassifierModule
_set = ClassifierModule.__setattr__
def _fast_setattr(self, name, value):
    object.__setattr__(self, name, value) if name == "_current_fx_name" else _set(self, name, value)
ClassifierModule.__setattr__ = _fast_setattr
""",
    "nvml": """
import os, lightning
os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
""",
    "gc_freeze": """
import atexit, gc
atexit.register(gc.freeze)
""",
}
RUN = """
import sys, runpy
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def run(job: str, patch: str, out: Path, cache: Path) -> tuple[float, float]:
    """``(run wall, process wall)`` in seconds of one ``train.py`` job with ``patch`` executed first."""
    args = [*job.split(), f"hydra.run.dir={out}", f"paths.cache_dir={cache}"]
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", patch + RUN, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{job} failed: {done.stderr.strip().splitlines()[-1:]}")
    return float(json.loads((out / "run_info.json").read_text())["wall_time_s"]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--hacks", nargs="+", choices=list(HACKS), default=list(HACKS))
    parser.add_argument("--jobs", nargs="+", default=JOBS, help="one quoted string of overrides per job")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache, n = Path(tmp) / "cache", 0
        for job in args.jobs:
            run(job, "", Path(tmp) / "warm", cache)  # fills the baseline cache
        for hack in args.hacks:
            runs, procs = [], []
            for job in args.jobs:
                for i in range(args.pairs):
                    modes = [("", []), (HACKS[hack], [])][:: 1 if i % 2 == 0 else -1]
                    for patch, times in modes:
                        times.append(run(job, patch, Path(tmp) / f"r{(n := n + 1)}", cache))
                    (plain,), (hacked,) = (t for p, t in sorted(modes, key=lambda m: bool(m[0])))
                    runs.append(hacked[0] / plain[0])
                    procs.append(hacked[1] / plain[1])
            print(f"{hack}: hack/plain over {len(runs)} pairs, run wall median {statistics.median(runs):.3f} "
                  f"({min(runs):.3f}-{max(runs):.3f}), process wall median {statistics.median(procs):.3f} "
                  f"({min(procs):.3f}-{max(procs):.3f})", flush=True)


if __name__ == "__main__":
    main()
