"""Benchmark: how fast, and how cleanly, ``train.py`` refuses each bad input.

Every case runs ``python train.py <overrides> hydra.run.dir=<tmp>/run paths.cache_dir=<tmp>/cache``
as its own process with an empty cache folder (a cold baseline cache), one case at a time, and
records: wall time of the whole process (Python start-up and imports included), exit status, the
``error:`` line on stderr, and whether anything was written: a file in the cache folder (a
``baseline-*.pt`` above all) or a file in the run folder other than Hydra's own ``.hydra/`` and
``train.log`` (``metrics.json`` above all). It prints a markdown table and exits 1 if any case did
not exit with status 2 on exactly one ``error: `` line, or wrote something.

    python bench/bench_refusals.py            # every case
    python bench/bench_refusals.py -k merge   # the cases whose name contains "merge"

Run it by hand on an otherwise idle machine; it is not a test (``tests/test_bad_input.py`` checks
the same cases without timing them). ``method=foo`` (an unknown config group option) is left out:
Hydra refuses it before our code runs, with its own message and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HYDRA_OWN = {".hydra", "train.log"}
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
CORRUPT = "<corrupt vendored copy>"  # placeholder: replaced by overrides pointing at a damaged copy

CASES: dict[str, list[str]] = {
    # types and ranges
    "class_out_of_range": ["method.stages=[[3],[12]]"],
    "negative_class": ["method.stages=[[-1],[4]]"],
    "class_twice": ["method.stages=[[3],[3,4]]"],
    "empty_stage": ["method.stages=[[3],[]]"],
    "no_stages": ["method.stages=[]"],
    "negative_epochs": ["method.epochs_per_stage=-1"],
    "negative_pretrain_epochs": ["pretrain.epochs=-1"],
    "zero_batch": ["method.batch_size=0"],
    "negative_pretrain_batch": ["pretrain.batch_size=-5"],
    "zero_samples_per_task": ["data.samples_per_task=0"],
    "negative_calibration": ["data.calibration_size=-1"],
    "unknown_method_name": ["method.name=foo"],
    "seed_not_int": ["seed=abc"],
    "negative_seed": ["seed=-1"],
    "epochs_not_int": ["method.epochs_per_stage=ten"],
    "samples_not_int": ["data.samples_per_task=many"],
    "class_not_int": ["method.stages=[[3],[x]]"],
    # optimizers and accelerator
    "method_lr": ["method.optimizer.lr=-1"],
    "pretrain_lr": ["pretrain.optimizer.lr=-1"],
    "gpu_without_cuda": ["trainer=gpu"],
    # merging and negation
    "merge_retention": ["method=task_arithmetic", "retention=ewc"],
    "merge_no_calibration": ["method=task_arithmetic", "data.calibration_size=0"],
    "merge_empty_grid": ["method=task_arithmetic", "method.lambda_grid=[]"],
    "merge_bad_vector": ["method=task_arithmetic", "method.vectors=[5]"],
    "merge_old_select_metric": ["method=task_arithmetic", "+method.select_metric=acc"],
    "bad_selection_rule": ["selection.rule=foo"],
    "test_objective": ["optimized_metric=test/acc"],
    "ties_keep_fraction": ["method=ties", "method.merger.keep_fraction=2"],
    "negation_no_forget": ["method=task_negation", "method.forget=[]"],
    "negation_ratio": ["method=task_negation", "method.min_retained_ratio=2"],
    # data
    "too_many_samples": ["data.samples_per_task=100000", "trainer=cpu"],
    "corrupt_file": [CORRUPT],
}


def cuda_available() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True)
    return probe.stdout.strip() == "True"


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def corrupt_copy(dest: Path) -> Path:
    """Copies of the vendored archives with ``train-labels`` truncated to half its size."""
    dest.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(ROOT / "data" / "mnist" / f"{name}.gz", dest / f"{name}.gz")
    bad = dest / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    return dest


def run_case(work: Path, overrides: list[str]) -> dict:
    run_dir, cache_dir = work / "run", work / "cache"
    if overrides == [CORRUPT]:
        overrides = [f"data.vendored_dir={corrupt_copy(work / 'vendored')}", f"paths.data_dir={work / 'data'}", "trainer=cpu"]
    cmd = [sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}", f"paths.cache_dir={cache_dir}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    written = files_under(cache_dir) + [f"run/{f}" for f in files_under(run_dir) if Path(f).parts[0] not in HYDRA_OWN]
    return {
        "wall_s": wall,
        "code": proc.returncode,
        "error": error_lines[0] if len(error_lines) == 1 else f"<{len(error_lines)} error lines> {proc.stderr.strip().splitlines()[-1:]}",
        "baseline": bool(list(cache_dir.glob("baseline-*.pt"))),
        "metrics": (run_dir / "metrics.json").exists(),
        "written": written,
        "ok": proc.returncode == 2 and len(error_lines) == 1 and not written,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="run only the cases whose name contains this")
    args = parser.parse_args()
    cases = {name: o for name, o in CASES.items() if args.k in name}
    skipped = []
    if "gpu_without_cuda" in cases and cuda_available():
        skipped.append("gpu_without_cuda (this machine has CUDA)")
        del cases["gpu_without_cuda"]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_refusals_") as tmp:
        for name, overrides in cases.items():
            results[name] = run_case(Path(tmp) / name, overrides)
            r = results[name]
            print(f"{name}: exit {r['code']}, {r['wall_s']:.2f} s", file=sys.stderr, flush=True)

    print("| case | overrides | wall (s) | exit | baseline cached | metrics.json | other files written | error line |")
    print("|---|---|---:|---:|---|---|---|---|")
    for name, r in results.items():
        error = r["error"].replace("|", "\\|")
        others = ", ".join(f for f in r["written"] if not f.endswith("metrics.json") and "baseline-" not in f) or "-"
        print(
            f"| {name}{'' if r['ok'] else ' **FAIL**'} | `{' '.join(CASES[name])}` | {r['wall_s']:.2f} | {r['code']} "
            f"| {'yes' if r['baseline'] else 'no'} | {'yes' if r['metrics'] else 'no'} | {others} | {error} |"
        )
    walls = sorted(r["wall_s"] for r in results.values())
    if walls:
        print(f"\n{len(walls)} cases; wall time min {walls[0]:.2f} s, median {walls[len(walls) // 2]:.2f} s, max {walls[-1]:.2f} s")
    for line in skipped:
        print(f"skipped: {line}")
    failed = [name for name, r in results.items() if not r["ok"]]
    if failed:
        print(f"FAILED (exit status not 2, not exactly one `error: ` line, or something written): {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
