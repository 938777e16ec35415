"""Sweeps at scale: interrupted runs, resume, the shared baseline cache, parallel launchers.

Every test drives ``train.py`` as a real subprocess (the way a sweep runs it) on the tiny
synthetic data set, on the CPU, writing only into pytest's temporary directories:

* SIGKILL after stage 1 leaves nothing complete-looking; ``resume=true`` then finishes the run and
  its ``metrics.json`` equals that of an uninterrupted run with the same seed.
* ``resume=true`` skips a complete run with the same config and reruns one whose config changed.
* Two processes that need the same uncached baseline train it once (one miss, one hit).
* A truncated cached baseline is detected and retrained.
* Two-job sweeps through the joblib launcher and through submitit (``submitit_local``).
* SIGINT (Ctrl-C) stops a run with a nonzero status and no ``metrics.json``.

Most of the time is process start-up (importing torch and Lightning), so the independent
processes all start together, once per module (:func:`jobs`), and each test waits for its own.
Only the processes the selected tests need are started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Tiny and quick: synthetic blobs (no files), one pretraining epoch, no progress bar/logger/callbacks.
COMMON = [
    "data=synthetic",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "callbacks=none",
    "logger=none",
    "pretrain.epochs=1",
]
# Long enough that stages 2-3 take far longer than the 10 ms polling interval (a signal sent right
# after stage 1 lands mid-run), short enough for the test budget.
LONG_STAGES = "method.epochs_per_stage=60"
SHORT_STAGES = "method.epochs_per_stage=1"
# Files that only a finished run writes (metrics.json last of all).
COMPLETE_MARKERS = ("metrics.json", "run_info.json", "curves.csv", "checkpoints/final.pt")
TIMEOUT_S = 240


def _env() -> dict:
    env = dict(os.environ)
    # One intra-op thread per process: parallel test processes do not oversubscribe the cores,
    # and every run of the same config computes with the same thread count (bitwise equal).
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _restore_sigint() -> None:
    # A shell may start background jobs with SIGINT ignored; then Python would never see Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Proc:
    """``train.py`` with ``overrides`` as a subprocess; stdout and stderr go to ``log``.

    With ``signal_after_stage_1``, a watcher thread sends that signal as soon as
    ``<run_dir>/confusion/stage_1.csv`` exists, i.e. right after the first fine-tuning stage.
    """

    def __init__(self, log: Path, *overrides: str, multirun: bool = False, run_dir: Path | None = None, signal_after_stage_1: int | None = None):
        self.log = log
        self.signalled_at_stage_1 = False
        cmd = [sys.executable, "train.py", *(["-m"] if multirun else []), *COMMON, *overrides]
        with open(log, "wb") as handle:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=handle, stderr=subprocess.STDOUT, preexec_fn=_restore_sigint)
        self.watcher = None
        if signal_after_stage_1 is not None:
            self.watcher = threading.Thread(target=self._signal_after, args=(run_dir / "confusion" / "stage_1.csv", signal_after_stage_1), daemon=True)
            self.watcher.start()

    def _signal_after(self, path: Path, signum: int) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            if path.exists():
                self.proc.send_signal(signum)
                self.signalled_at_stage_1 = True
                return
            time.sleep(0.01)

    def wait(self) -> tuple[int, str]:
        try:
            rc = self.proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"timed out after {TIMEOUT_S} s:\n{self.output()[-4000:]}")
        if self.watcher is not None:
            self.watcher.join()
        return rc, self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def succeed(self) -> str:
        """Wait; assert exit status 0; return the output."""
        rc, out = self.wait()
        assert rc == 0, f"exit status {rc}:\n{out[-4000:]}"
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run(log: Path, *overrides: str) -> str:
    return Proc(log, *overrides).succeed()


def assert_nothing_complete(run_dir: Path) -> None:
    present = [name for name in COMPLETE_MARKERS if (run_dir / name).exists()]
    assert not present, f"an interrupted run left complete-looking files: {present}"


def load_net(run_dir: Path, checkpoint: Path):
    """Load ``checkpoint``'s state dict strictly into an MLP built from ``run_dir``'s model config."""
    import torch
    from omegaconf import OmegaConf

    from seqft_lightning.models.components import MLP

    model_cfg = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml").model, resolve=True)
    model_cfg.pop("_target_")
    net = MLP(**model_cfg)
    entry = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net.load_state_dict(entry["state_dict"], strict=True)
    return net, entry


# --------------------------------------------------------------------------- the module's processes

LAUNCHERS = {
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"],
}


def _truncated_baseline(tmp: Path, overrides: list[str]) -> Path:
    """Put a real checkpoint of the right net, cut off halfway, where ``overrides``' baseline goes."""
    import torch

    from seqft_lightning.baseline import BaselineCache, baseline_key
    from seqft_lightning.models.components import MLP
    from conftest import compose_train_config

    cfg = compose_train_config([*COMMON, *overrides], tmp / "unused")
    path = BaselineCache(tmp / "cache").path(baseline_key(cfg))
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": MLP().state_dict(), "history": [], "steps": 1}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a crash mid-copy, a full disk
    return path


def _start(name: str, tmp: Path) -> Proc:
    log, run_dir, cache = tmp / f"{name}.log", tmp / "run", f"paths.cache_dir={tmp / 'cache'}"
    if name in ("sequential", "joint"):  # same cache dir for both: they need the same baseline
        cache = f"paths.cache_dir={tmp.parent / 'shared_cache'}"
        return Proc(log, f"method={name}", LONG_STAGES, cache, f"hydra.run.dir={run_dir}")
    if name == "killed":
        return Proc(log, LONG_STAGES, cache, f"hydra.run.dir={run_dir}", run_dir=run_dir, signal_after_stage_1=signal.SIGKILL)
    if name == "sigint":
        return Proc(log, LONG_STAGES, cache, f"hydra.run.dir={run_dir}", run_dir=run_dir, signal_after_stage_1=signal.SIGINT)
    if name == "truncated":
        _truncated_baseline(tmp, [SHORT_STAGES])
        return Proc(log, SHORT_STAGES, cache, f"hydra.run.dir={run_dir}")
    if name in LAUNCHERS:
        return Proc(log, *LAUNCHERS[name], "method=sequential,joint", SHORT_STAGES, cache, f"hydra.sweep.dir={tmp / 'sweep'}", multirun=True)
    raise KeyError(name)


# The processes each test waits for ("sequential" doubles as the uninterrupted reference run).
NEEDS = {
    "test_sigkill_after_stage_1_leaves_nothing_complete_and_resume_reproduces_the_run": {"killed", "sequential"},
    "test_resume_skips_a_complete_run_and_reruns_when_the_config_changed": {"sequential"},
    "test_sigint_stops_the_run_without_complete_results": {"sigint"},
    "test_two_processes_needing_the_same_baseline_train_it_once": {"sequential", "joint"},
    "test_truncated_cached_baseline_is_retrained": {"truncated"},
    "test_two_job_sweep_through_launcher": set(LAUNCHERS),
}


@pytest.fixture(scope="module")
def jobs(request, tmp_path_factory):
    """Start, all at once, every process the selected tests of this module need; name -> (Proc, dir)."""
    selected = {getattr(item, "originalname", item.name) for item in request.session.items if getattr(item, "module", None) is request.module}
    names = sorted(set().union(*(NEEDS[t] for t in selected if t in NEEDS)))
    base = tmp_path_factory.mktemp("sweeps")
    started = {}
    try:
        for name in names:
            tmp = base / name
            tmp.mkdir()
            started[name] = (_start(name, tmp), tmp)
        yield started
    finally:
        for proc, _ in started.values():
            proc.kill()


# --------------------------------------------------------------------------- interrupted runs, resume

def test_sigkill_after_stage_1_leaves_nothing_complete_and_resume_reproduces_the_run(jobs):
    killed, tmp = jobs["killed"]
    run_dir = tmp / "run"
    rc, out = killed.wait()
    assert killed.signalled_at_stage_1, f"stage 1 never finished:\n{out[-4000:]}"
    assert rc == -signal.SIGKILL, f"the run ended ({rc}) before it could be killed mid-stage:\n{out[-4000:]}"
    assert (run_dir / "confusion" / "stage_1.csv").is_file()
    assert_nothing_complete(run_dir)
    assert not (run_dir / "confusion" / "stage_3.csv").exists()

    # The same command with resume=true, same run dir: incomplete, so it runs again to the end.
    out = run(tmp / "resumed.log", LONG_STAGES, f"paths.cache_dir={tmp / 'cache'}", f"hydra.run.dir={run_dir}", "resume=true")
    assert "skipping" not in out
    assert "baseline cache hit" in out  # the killed run had cached its baseline before stage 1

    reference, ref_tmp = jobs["sequential"]
    reference.succeed()
    ref_dir = ref_tmp / "run"
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads((ref_dir / "metrics.json").read_text())
    assert (run_dir / "metrics.json").read_bytes() == (ref_dir / "metrics.json").read_bytes()
    assert (run_dir / "stages.csv").read_text() == (ref_dir / "stages.csv").read_text()


def test_resume_skips_a_complete_run_and_reruns_when_the_config_changed(jobs, tmp_path):
    reference, ref_tmp = jobs["sequential"]
    reference.succeed()
    cache = f"paths.cache_dir={ref_tmp.parent / 'shared_cache'}"
    # Copies, so the reference stays as it is for the other tests (and a moved run dir still resumes).
    same, changed = tmp_path / "same", tmp_path / "changed"
    for run_dir in (same, changed):
        shutil.copytree(ref_tmp / "run", run_dir)
    before = {d: ((d / "metrics.json").stat().st_mtime_ns, (d / "metrics.json").read_bytes()) for d in (same, changed)}

    # Both reruns at once: the same config (skipped) and a result-relevant change (rerun).
    skip = Proc(tmp_path / "skip.log", "method=sequential", LONG_STAGES, cache, f"hydra.run.dir={same}", "resume=true")
    rerun = Proc(tmp_path / "rerun.log", "method=sequential", "method.epochs_per_stage=2", cache, f"hydra.run.dir={changed}", "resume=true")

    out = skip.succeed()
    assert "resume:" in out and "skipping" in out
    assert "stage 1" not in out and "baseline cache" not in out
    assert ((same / "metrics.json").stat().st_mtime_ns, (same / "metrics.json").read_bytes()) == before[same]

    out = rerun.succeed()
    assert "skipping" not in out and "stage 3" in out
    assert (changed / "metrics.json").stat().st_mtime_ns != before[changed][0]
    assert json.loads((changed / "metrics.json").read_text())["config_hash"] != json.loads(before[changed][1])["config_hash"]


def test_sigint_stops_the_run_without_complete_results(jobs):
    proc, tmp = jobs["sigint"]
    rc, out = proc.wait()
    assert proc.signalled_at_stage_1, f"stage 1 never finished:\n{out[-4000:]}"
    assert rc != 0, f"Ctrl-C must not look like success:\n{out[-4000:]}"
    assert rc != -signal.SIGKILL
    run_dir = tmp / "run"
    assert_nothing_complete(run_dir)
    assert not (run_dir / "confusion" / "stage_3.csv").exists()


# --------------------------------------------------------------------------- the baseline cache

def test_two_processes_needing_the_same_baseline_train_it_once(jobs):
    run_dirs = []
    for method in ("sequential", "joint"):
        proc, tmp = jobs[method]
        proc.succeed()
        run_dirs.append(tmp / "run")
        assert (tmp / "run" / "metrics.json").is_file()
    cache = run_dirs[0].parents[1] / "shared_cache"

    logs = [(run_dir / "train.log").read_text() for run_dir in run_dirs]
    assert sorted(log.count("baseline cache miss") for log in logs) == [0, 1]
    assert sorted(log.count("baseline cache hit") for log in logs) == [0, 1]
    assert not any("unreadable" in log for log in logs)

    cached = list(cache.glob("baseline-*.pt"))
    assert len(cached) == 1, cached
    assert not list(cache.glob("*.tmp"))
    for run_dir in run_dirs:
        _, entry = load_net(run_dir, cached[0])
        assert entry["steps"] > 0 and entry["history"]
        load_net(run_dir, run_dir / "checkpoints" / "final.pt")
    # Both fine-tuned from the same baseline: identical stage-0 results.
    baselines = [json.loads((run_dir / "metrics.json").read_text())["baseline"] for run_dir in run_dirs]
    assert baselines[0] == baselines[1]


def test_truncated_cached_baseline_is_retrained(jobs):
    proc, tmp = jobs["truncated"]
    out = proc.succeed()
    assert "unreadable" in out and "retraining" in out
    assert "baseline cache miss" in out
    assert (tmp / "run" / "metrics.json").is_file()
    cached = list((tmp / "cache").glob("baseline-*.pt"))
    assert len(cached) == 1
    _, entry = load_net(tmp / "run", cached[0])  # replaced by a complete checkpoint
    assert entry["steps"] > 0


# --------------------------------------------------------------------------- launchers

@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_two_job_sweep_through_launcher(launcher, jobs):
    proc, tmp = jobs[launcher]
    proc.succeed()
    sweep = tmp / "sweep"
    # Job dirs are the sanitised override_dirname: sorted task overrides, minus the excluded keys
    # (paths.cache_dir, trainer.enable_progress_bar, callbacks, logger, resume) and hydra.* ones.
    common = ["data=synthetic", SHORT_STAGES, "pretrain.epochs=1", "trainer.accelerator=cpu"]
    expected = {",".join(sorted([*common, f"method={m}"])) for m in ("sequential", "joint")}
    job_dirs = {p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert job_dirs == expected
    assert (sweep / "multirun.yaml").is_file()
    logs = []
    for job in job_dirs:
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert f"method={metrics['method']}" in job.split(",")
        logs.append((sweep / job / "train.log").read_text())
    # The two jobs ran side by side and shared one baseline.
    assert sorted(log.count("baseline cache miss") for log in logs) == [0, 1]
    if launcher == "submitit_local":
        assert (sweep / ".submitit").is_dir()
