"""Benchmark: ``make run``'s sweeps stacked (the default) and unstacked (``stack_size=1``), side by side.

The sweep commands are read from ``make -n run`` (so they are the study's, whatever the Makefile
says today); each mode runs all of them into fresh sweep and cache folders (cold cache), then
``compare.py``. Modes alternate (stacked, unstacked, stacked, ...) for ``--pairs`` pairs, or with
``--interleave`` command by command within a pair (so that a drift of the machine's speed hits both), and the
script prints each mode's wall time, the ratio stacked / unstacked per pair, the peak resident
memory of the largest training process of each mode and of ``compare.py`` (``os.wait4``'s usage of
each command, its worker processes included),
and whether every job's ``metrics.json`` is byte-identical between the modes.

    python bench/bench_stacking.py                     # the whole study, one pair (~20 min on 2 cores)
    python bench/bench_stacking.py --seeds 0,1 --pairs 2 pretrain.epochs=1 method.epochs_per_stage=1
    python bench/bench_stacking.py --interleave         # the same pair, the modes alternating sweep by sweep

Run it by hand on an otherwise idle machine; it is not a test. Extra arguments are overrides added
to every sweep (``trainer.accelerator=gpu`` on a GPU machine). ``--commands FILE`` reads the study's
commands from what ``make -n run SEEDS=@SEEDS@ STUDY_DIR=@STUDY@`` printed (for a machine without
``make``, e.g. the GPU machine: ``bench/gpu_study.sh``). Where the two modes' ``metrics.json`` differ
(expected on CUDA, whose kernels need not round alike in a stack), it prints how much: the jobs that
differ, the largest absolute difference of any number, and of any accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def study_commands(seeds: str, commands_file: str | None = None) -> list[list[str]]:
    """``make -n run``'s ``train.py -m`` and ``compare.py`` commands (or those of ``commands_file``, which holds
    what it printed with ``SEEDS=@SEEDS@``), as argument lists."""
    if commands_file is not None:
        dry = Path(commands_file).read_text().replace("@SEEDS@", seeds)
    else:
        dry = subprocess.run(["make", "-n", "run", f"SEEDS={seeds}", "STUDY_DIR=@STUDY@"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    commands = []
    for line in dry.splitlines():
        words = shlex.split(line)
        if len(words) > 1 and words[1] in ("train.py", "compare.py"):
            commands.append([sys.executable, *words[1:]])
    if not commands:
        raise SystemExit("bench_stacking: `make -n run` printed no train.py command")
    return commands


def run_command(work: Path, command: list[str], extra: list[str]) -> tuple[float, float]:
    """One command of the study into ``work`` (sweep dir, cache): its wall time in seconds, and its peak resident
    memory in MiB (the largest of its processes, workers included)."""
    study, cache = work / "study", work / "cache"
    command = [str(study) if word == "@STUDY@" else word.replace("@STUDY@", str(study)) for word in command]
    if command[1] == "train.py":
        command = [*command, f"paths.cache_dir={cache}", "trainer.enable_progress_bar=false", *extra]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # this command's usage alone (ru_maxrss in KiB)
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        if process.returncode != 0:
            stderr.seek(0)
            raise SystemExit(f"bench_stacking: {shlex.join(command)} failed:\n{stderr.read()[-3000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def run_modes(base: Path, pair: int, modes: dict[str, list[str]], commands: list[list[str]], extra: list[str],
              interleave: bool) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Every command of the study in each mode (into ``base/<mode><pair>``): each mode's wall time in seconds, and the
    peak resident memory (MiB) of its largest ``train.py`` process (workers included) and of ``compare.py``. One
    mode after the other, or with ``interleave`` command by command (the modes' order swapped at every command),
    so that a drift of the machine's speed hits both modes alike."""
    seconds = {mode: 0.0 for mode in modes}
    peaks = {mode: {"train.py": 0.0, "compare.py": 0.0} for mode in modes}
    steps = ([(i, mode) for i in range(len(commands)) for mode in (list(modes) if i % 2 == 0 else list(modes)[::-1])]
             if interleave else [(i, mode) for mode in modes for i in range(len(commands))])
    for i, mode in steps:
        took, peak = run_command(base / f"{mode}{pair}", commands[i], [*modes[mode], *extra])
        seconds[mode] += took
        peaks[mode][commands[i][1]] = max(peaks[mode][commands[i][1]], peak)
        if interleave:
            print(f"pair {pair}, command {i + 1}/{len(commands)}: {mode:9s} {took:7.1f} s", flush=True)
    return seconds, peaks


def metrics(work: Path) -> dict[str, bytes]:
    return {str(p.parent.relative_to(work)): p.read_bytes() for p in sorted((work / "study").glob("*/metrics.json"))}


def numbers(tree: object, path: str = "") -> dict[str, float]:
    """Every number of a parsed JSON tree, by its path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in numbers(sub, f"{path}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in numbers(sub, f"{path}[{i}]").items()}
    return {path: float(tree)} if isinstance(tree, (int, float)) and not isinstance(tree, bool) else {}


def differences(a: dict[str, bytes], b: dict[str, bytes]) -> str:
    """How the ``metrics.json`` of two runs of the study differ: jobs, largest absolute difference of any number
    and of any accuracy (a fraction: 1e-4 is one test image in 10,000), ``code_version`` aside."""
    jobs = [job for job in a if job in b and a[job] != b[job]]
    worst, worst_acc = (0.0, ""), (0.0, "")
    for job in jobs:
        old, new = (numbers({k: v for k, v in json.loads(m[job]).items() if k != "code_version"}) for m in (a, b))
        for key in old.keys() & new.keys():
            diff = abs(old[key] - new[key])
            worst = max(worst, (diff, f"{job}{key}"))
            if "/acc" in key:
                worst_acc = max(worst_acc, (diff, f"{job}{key}"))
    return (f"{len(jobs)} of {len(a)} jobs differ; largest difference {worst[0]:.3g} ({worst[1]}); "
            f"largest accuracy difference {worst_acc[0]:.3g} ({worst_acc[1] or 'none'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the run folders (their path is printed)")
    parser.add_argument("--commands", help="a file with what `make -n run SEEDS=@SEEDS@ STUDY_DIR=@STUDY@` printed")
    parser.add_argument("--stacked-only", action="store_true", help="time the stacked study alone (no pair)")
    parser.add_argument("--interleave", action="store_true",
                        help="alternate the modes command by command, not study by study (for a machine whose speed drifts)")
    args, extra = parser.parse_known_args()
    commands = study_commands(args.seeds, args.commands)
    base = Path(tempfile.mkdtemp(prefix="bench_stacking_"))
    modes = {"stacked": [], "unstacked": ["stack_size=1"]}
    if args.stacked_only:
        del modes["unstacked"]
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    peaks: dict[str, dict[str, float]] = {}
    identical = True
    try:
        for pair in range(args.pairs):
            seconds, peaks = run_modes(base, pair, modes, commands, extra, args.interleave)
            results = {}
            for mode in modes:
                times[mode].append(seconds[mode])
                results[mode] = metrics(base / f"{mode}{pair}")
                print(f"pair {pair}: {mode:9s} {times[mode][-1]:8.1f} s  ({len(results[mode])} jobs)", flush=True)
            if args.stacked_only:
                continue
            same = results["stacked"] == results["unstacked"] and len(results["stacked"]) > 0
            identical &= same
            print(f"pair {pair}: ratio stacked/unstacked {times['stacked'][-1] / times['unstacked'][-1]:.3f}; "
                  f"metrics.json {'byte-identical' if same else 'DIFFER'} over {len(results['stacked'])} jobs", flush=True)
            if not same:
                print(f"pair {pair}: {differences(results['unstacked'], results['stacked'])}", flush=True)
    finally:
        if args.keep:
            print(f"run folders: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nstacked   {' '.join(f'{t:.1f}' for t in times['stacked'])} s")
    for mode, peak in peaks.items():
        print(f"peak resident memory, {mode}: largest train.py process or worker {peak['train.py']:.0f} MiB, "
              f"compare.py {peak['compare.py']:.0f} MiB")
    if args.stacked_only:
        return
    ratios = [s / u for s, u in zip(times["stacked"], times["unstacked"])]
    print(f"unstacked {' '.join(f'{t:.1f}' for t in times['unstacked'])} s")
    print(f"ratio per pair {' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"every job's metrics.json identical stacked and unstacked: {identical}")
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
