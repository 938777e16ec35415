"""Sweeps at scale: interrupted runs, resume, the shared baseline cache, parallel launchers.

Every test drives ``train.py`` as a real subprocess (the way a sweep runs it) on the tiny
synthetic data set, on the CPU, writing only into pytest's temporary directories:

* SIGKILL after stage 1 leaves nothing complete-looking; ``resume=true`` then finishes the run and
  its ``metrics.json`` equals that of an uninterrupted run with the same seed.
* ``resume=true`` skips a complete run with the same config and reruns one whose config changed.
* Two processes that need the same uncached baseline train it once (one miss, one hit).
* A truncated cached baseline is detected and retrained.
* Two-job sweeps through the joblib launcher and through submitit (``submitit_local``); rerunning
  a sweep with ``resume=true`` redoes only the job whose results are incomplete.
* SIGINT (Ctrl-C) stops a run with a nonzero status and no ``metrics.json``.

Most of the time is process start-up (importing torch and Lightning), so the independent
processes all start together, once per module (:func:`jobs`), and each test waits for its own.
Only the processes the selected tests need are started.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

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
LONG_STAGES = "method.epochs_per_stage=40"
SHORT_STAGES = "method.epochs_per_stage=1"
# Files that only a finished run writes (metrics.json last of all).
COMPLETE_MARKERS = ("metrics.json", "run_info.json", "curves.csv", "checkpoints/final.pt")
TIMEOUT_S = 240


def _env(machine_threads: bool = False) -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if machine_threads:
        # torch's default thread count is then the machine's: only `torch_threads` pins it.
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(name, None)
    else:
        # One intra-op thread per process: parallel test processes do not oversubscribe the cores.
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _restore_sigint() -> None:
    # A shell may start background jobs with SIGINT ignored; then Python would never see Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Proc:
    """``train.py`` with ``overrides`` as a subprocess; stdout and stderr go to ``log``.

    With ``signal_after_stage_1``, a watcher thread sends that signal as soon as
    ``<run_dir>/confusion/stage_1.csv`` exists, i.e. right after the first fine-tuning stage.
    """

    def __init__(self, log: Path, *overrides: str, multirun: bool = False, run_dir: Path | None = None, signal_after_stage_1: int | None = None, machine_threads: bool = False):
        self.log = log
        self.signalled_at_stage_1 = False
        cmd = [sys.executable, "train.py", *(["-m"] if multirun else []), *COMMON, *overrides]
        with open(log, "wb") as handle:
            # Its own process group, so that kill() also ends a launcher's workers and jobs.
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(machine_threads), stdout=handle, stderr=subprocess.STDOUT, preexec_fn=_restore_sigint, start_new_session=True)
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
            self.kill()
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
        """If still running: SIGKILL its process group (it, and any workers or jobs it started)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


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

SWEPT = ["method=sequential,joint", SHORT_STAGES]
LAUNCHERS = {
    "joblib": ["hydra.launcher.n_jobs=2"],  # the default: joblib, one job per baseline first
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"],
}


def _truncated_baseline(tmp: Path, overrides: list[str]) -> Path:
    """Put a real checkpoint of the right net, cut off halfway, where ``overrides``' baseline goes."""
    import torch
    from hydra import compose, initialize_config_dir

    from seqft_lightning.baseline import BaselineCache, baseline_key
    from seqft_lightning.models.components import MLP
    from seqft_lightning.plan import plan_run
    from seqft_lightning.provenance import code_version

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*COMMON, *overrides, f"paths.output_dir={tmp / 'unused'}"])
    path = BaselineCache(tmp / "cache").path(baseline_key(cfg, plan_run(cfg).task_classes, torch.device("cpu"), cfg.torch_threads, code_version()))
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": MLP().state_dict(), "history": [], "steps": 1}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a crash mid-copy, a full disk
    return path


class After:
    """Once ``first`` has ended, run ``then()`` in a background thread (it looks at what ``first``
    left and starts the follow-up processes); :meth:`get` waits and returns what ``then`` returned."""

    def __init__(self, first: Proc, then: Callable[[], Any]):
        self.first, self.then, self.value, self.error = first, then, None, None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.first.wait()
            self.value = self.then()
        except BaseException as err:  # re-raised in the test that asks for it
            self.error = err

    def get(self) -> Any:
        self.thread.join(TIMEOUT_S)
        if self.error is not None:
            raise self.error
        assert not self.thread.is_alive(), "follow-up did not start in time"
        return self.value

    def kill(self) -> None:
        self.first.kill()
        self.thread.join(30)
        for proc in (self.value or {}).values():
            if isinstance(proc, Proc):
                proc.kill()


def _files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def _resume_killed(tmp: Path) -> dict:
    """The killed run's files as it left them; then the same command again with resume=true."""
    run_dir = tmp / "run"
    left = _files(run_dir)
    proc = Proc(tmp / "resumed.log", LONG_STAGES, f"paths.cache_dir={tmp / 'cache'}", f"hydra.run.dir={run_dir}", "resume=true")
    return {"left": left, "proc": proc}


def _resume_reference(tmp: Path, ref_tmp: Path) -> dict:
    """Two copies of the finished reference run; rerun one unchanged and one with another config."""
    cache = f"paths.cache_dir={ref_tmp.parent / 'shared_cache'}"
    out = {}
    for name, epochs in (("same", LONG_STAGES), ("changed", "method.epochs_per_stage=2")):
        run_dir = tmp / name  # a copy: the reference stays as it is (and a moved run dir still resumes)
        shutil.copytree(ref_tmp / "run", run_dir)
        out[f"{name}_before"] = ((run_dir / "metrics.json").stat().st_mtime_ns, (run_dir / "metrics.json").read_bytes())
        out[name] = Proc(tmp / f"{name}.log", "method=sequential", epochs, cache, f"hydra.run.dir={run_dir}", "resume=true")
    return out


def _resume_sweep(tmp: Path, sweep_tmp: Path) -> dict:
    """A copy of the finished joblib sweep with one job made incomplete; the sweep again with resume=true."""
    sweep = tmp / "sweep"
    shutil.copytree(sweep_tmp / "sweep", sweep)
    done, lost = (next(sweep.glob(f"*method={m},*")) for m in ("joint", "sequential"))
    for name in COMPLETE_MARKERS:  # as a job killed mid-stage leaves it
        (lost / name).unlink()
    before = (done / "metrics.json").stat().st_mtime_ns
    # The same sweep command as before, plus resume=true, into the same sweep dir.
    proc = Proc(tmp / "resume.log", *LAUNCHERS["joblib"], *SWEPT, f"paths.cache_dir={sweep_tmp / 'cache'}", f"hydra.sweep.dir={sweep}", "resume=true", multirun=True)
    return {"sweep": sweep, "done": done, "lost": lost, "before": before, "proc": proc}


def _start(name: str, tmp: Path, started: dict) -> Proc | After:
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
        return Proc(log, *LAUNCHERS[name], *SWEPT, cache, f"hydra.sweep.dir={tmp / 'sweep'}", multirun=True)
    if name == "resumed":
        return After(started["killed"][0], lambda: _resume_killed(started["killed"][1]))
    if name == "reference_reruns":
        return After(started["sequential"][0], lambda: _resume_reference(tmp, started["sequential"][1]))
    if name == "sweep_resumed":
        return After(started["joblib"][0], lambda: _resume_sweep(tmp, started["joblib"][1]))
    if name == "serial":  # the joblib sweep's jobs, one at a time, threads left to the machine
        return Proc(log, "hydra/launcher=basic", *SWEPT, cache, f"hydra.sweep.dir={tmp / 'sweep'}", multirun=True, machine_threads=True)
    if name == "serial_after_parallel":  # one job again, serially, on the cache the joblib sweep filled
        joblib_tmp = started["joblib"][1]
        return After(started["joblib"][0], lambda: {"proc": Proc(
            log, "method=sequential", SHORT_STAGES, f"paths.cache_dir={joblib_tmp / 'cache'}", f"hydra.run.dir={run_dir}", machine_threads=True)})
    raise KeyError(name)


# What each test needs ("sequential" doubles as the uninterrupted reference run), and what each
# follow-up waits for. Follow-ups start as soon as their process ends, while others still run.
NEEDS = {
    "test_sigkill_after_stage_1_leaves_nothing_complete_and_resume_reproduces_the_run": {"killed", "resumed", "sequential"},
    "test_resume_skips_a_complete_run_and_reruns_when_the_config_changed": {"sequential", "reference_reruns"},
    "test_sigint_stops_the_run_without_complete_results": {"sigint"},
    "test_two_processes_needing_the_same_baseline_train_it_once": {"sequential", "joint"},
    "test_truncated_cached_baseline_is_retrained": {"truncated"},
    "test_two_job_sweep_through_launcher": set(LAUNCHERS),
    "test_rerunning_a_sweep_with_resume_redoes_only_incomplete_jobs": {"joblib", "sweep_resumed"},
    "test_serial_and_parallel_sweeps_give_identical_results_whatever_filled_the_cache": {"joblib", "serial", "serial_after_parallel"},
}
FOLLOW_UPS = ("resumed", "reference_reruns", "sweep_resumed", "serial_after_parallel")  # started after the others


@pytest.fixture(scope="module")
def jobs(request, tmp_path_factory):
    """Start, all at once, every process the selected tests of this module need; name -> (Proc or After, dir)."""
    selected = {getattr(item, "originalname", item.name) for item in request.session.items if getattr(item, "module", None) is request.module}
    needed = set().union(*(NEEDS[t] for t in selected if t in NEEDS))
    base = tmp_path_factory.mktemp("sweeps")
    started: dict = {}
    try:
        for name in sorted(needed - set(FOLLOW_UPS)) + [n for n in FOLLOW_UPS if n in needed]:
            tmp = base / name
            tmp.mkdir()
            started[name] = (_start(name, tmp, started), tmp)
        yield started
    finally:
        for job, _ in reversed(list(started.values())):
            job.kill()


# --------------------------------------------------------------------------- interrupted runs, resume

def test_sigkill_after_stage_1_leaves_nothing_complete_and_resume_reproduces_the_run(jobs):
    killed, tmp = jobs["killed"]
    rc, out = killed.wait()
    assert killed.signalled_at_stage_1, f"stage 1 never finished:\n{out[-4000:]}"
    assert rc == -signal.SIGKILL, f"the run ended ({rc}) before it could be killed mid-stage:\n{out[-4000:]}"
    resumed = jobs["resumed"][0].get()
    left = resumed["left"]  # what the killed run left, before the rerun touched it
    assert "confusion/stage_1.csv" in left
    assert not set(COMPLETE_MARKERS) & left, f"an interrupted run left complete-looking files: {sorted(left)}"
    assert "confusion/stage_3.csv" not in left

    # The same command with resume=true, same run dir: incomplete, so it ran again to the end.
    out = resumed["proc"].succeed()
    assert "skipping" not in out
    assert "baseline cache hit" in out  # the killed run had cached its baseline before stage 1

    run_dir = tmp / "run"
    reference, ref_tmp = jobs["sequential"]
    reference.succeed()
    ref_dir = ref_tmp / "run"
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads((ref_dir / "metrics.json").read_text())
    assert (run_dir / "metrics.json").read_bytes() == (ref_dir / "metrics.json").read_bytes()
    assert (run_dir / "stages.csv").read_text() == (ref_dir / "stages.csv").read_text()


def test_resume_skips_a_complete_run_and_reruns_when_the_config_changed(jobs):
    jobs["sequential"][0].succeed()
    reruns = jobs["reference_reruns"][0].get()
    same, changed = jobs["reference_reruns"][1] / "same", jobs["reference_reruns"][1] / "changed"

    # Same config, complete results: skipped, nothing rewritten.
    out = reruns["same"].succeed()
    assert "resume:" in out and "skipping" in out
    assert "stage 1" not in out and "baseline cache" not in out
    assert ((same / "metrics.json").stat().st_mtime_ns, (same / "metrics.json").read_bytes()) == reruns["same_before"]

    # A result-relevant change (method.epochs_per_stage), same run dir: run again.
    out = reruns["changed"].succeed()
    assert "skipping" not in out and "stage 3" in out
    assert (changed / "metrics.json").stat().st_mtime_ns != reruns["changed_before"][0]
    assert json.loads((changed / "metrics.json").read_text())["config_hash"] != json.loads(reruns["changed_before"][1])["config_hash"]


def test_sigint_stops_the_run_without_complete_results(jobs):
    proc, tmp = jobs["sigint"]
    rc, out = proc.wait()
    assert proc.signalled_at_stage_1, f"stage 1 never finished:\n{out[-4000:]}"
    assert rc != 0, f"Ctrl-C must not look like success:\n{out[-4000:]}"
    assert rc != -signal.SIGKILL
    run_dir = tmp / "run"
    assert_nothing_complete(run_dir)
    assert not (run_dir / "confusion" / "stage_3.csv").exists()


def test_a_sigint_swallowed_by_a_finalizer_still_stops_the_run():
    """Python only prints a KeyboardInterrupt raised inside ``__del__``: the run must still not write results."""
    from seqft_lightning.interrupts import check_interrupted, watching_interrupts

    class SignalledWhileCollected:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # the handler runs here, inside the finalizer

    with watching_interrupts():
        check_interrupted()  # nothing yet
        SignalledWhileCollected()  # collected at once: "Exception ignored in ... KeyboardInterrupt"
        with pytest.raises(KeyboardInterrupt):
            check_interrupted()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    check_interrupted()  # forgotten once the run is over


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
    # Job dirs name the result-relevant task overrides, sorted (paths.cache_dir,
    # trainer.enable_progress_bar, callbacks, logger, resume and hydra.* do not), glob-safe.
    common = ["data=synthetic", SHORT_STAGES, "pretrain.epochs=1", "trainer.accelerator=cpu"]
    safe = str.maketrans("[]", "()")
    expected = {",".join(sorted([*common, f"method={m}"])).translate(safe) for m in ("sequential", "joint")}
    assert not any(glob.has_magic(name) for name in expected)
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


def test_rerunning_a_sweep_with_resume_redoes_only_incomplete_jobs(jobs):
    jobs["joblib"][0].succeed()
    rerun = jobs["sweep_resumed"][0].get()
    rerun["proc"].succeed()
    sweep, done, lost = rerun["sweep"], rerun["done"], rerun["lost"]
    assert {p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")} == {done.name, lost.name}
    # The complete job was skipped; the incomplete one ran again, in its own job dir.
    assert (done / "metrics.json").stat().st_mtime_ns == rerun["before"]
    assert "skipping" in (done / "train.log").read_text()
    assert (lost / "metrics.json").is_file() and (lost / "checkpoints" / "final.pt").is_file()
    assert "skipping" not in (lost / "train.log").read_text()


def test_serial_and_parallel_sweeps_give_identical_results_whatever_filled_the_cache(jobs):
    """torch_threads is pinned by default: the serial sweep (torch's thread default: the
    machine's cores) and the joblib sweep (one job per core) give byte-identical metrics.json;
    a serial run on the cache the joblib sweep filled equals both (a cache hit equals a miss)."""
    jobs["joblib"][0].succeed()
    jobs["serial"][0].succeed()
    parallel, serial = jobs["joblib"][1] / "sweep", jobs["serial"][1] / "sweep"
    names = sorted(p.name for p in parallel.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(names) == 2 and names == sorted(p.name for p in serial.iterdir() if p.is_dir() and not p.name.startswith("."))
    for name in names:
        assert (parallel / name / "metrics.json").read_bytes() == (serial / name / "metrics.json").read_bytes(), name
        assert (parallel / name / "stages.csv").read_bytes() == (serial / name / "stages.csv").read_bytes(), name
    after = jobs["serial_after_parallel"][0].get()
    out = after["proc"].succeed()
    assert "baseline cache hit" in out
    sequential = next(n for n in names if "method=sequential" in n)
    run = jobs["serial_after_parallel"][1] / "run"
    assert json.loads((run / "metrics.json").read_text())["final"] == json.loads((serial / sequential / "metrics.json").read_text())["final"]
    assert json.loads((run / "run_info.json").read_text())["torch_threads"] == 1


def _changed_leaves(cfg, section: str) -> dict[str, object]:
    """``{dotted key: another value}`` for each leaf of ``cfg[section]`` that is a number, a bool or
    a list of ints (``_target_`` and other strings, ``null`` and nested lists left alone)."""
    from omegaconf import OmegaConf

    from seqft_lightning.contract import flatten

    out = {}
    for key, value in flatten(OmegaConf.to_container(cfg[section], resolve=True), f"{section}.").items():
        if isinstance(value, bool):
            out[key] = not value
        elif isinstance(value, (int, float)):
            out[key] = value + 1 if isinstance(value, int) else value * 2 + 0.5
        elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            out[key] = [v + 1 for v in value]
    return out


def test_the_baseline_key_covers_what_changes_the_bits():
    import copy

    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from seqft_lightning.baseline import baseline_key
    from seqft_lightning.contract import affects_results

    def composed(overrides=()):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose(config_name="train", overrides=[*COMMON, *overrides, "paths.output_dir=/tmp/unused"])

    def key(overrides=(), classes=(3, 4, 7), device="cpu", threads=1, code="v1", cfg=None):
        return baseline_key(composed(overrides) if cfg is None else cfg, list(classes), torch.device(device), threads, code)

    def with_value(cfg, dotted, value):
        cfg = copy.deepcopy(cfg)
        OmegaConf.update(cfg, dotted, value, merge=False)
        return cfg

    default = composed()
    cpu1 = key(cfg=default)
    assert cpu1 == key()
    assert cpu1 != key(cfg=default, threads=2)  # CPU sums depend on threads
    assert cpu1 != key(cfg=default, device="cuda")  # a CUDA baseline differs
    assert key(cfg=default, device="cuda", threads=1) == key(cfg=default, device="cuda", threads=8)
    assert cpu1 != key(cfg=default, classes=(3, 4))
    assert cpu1 != key(cfg=default, code="v2")  # other training code
    # Every setting of pretraining and of the model (MLP and CNN) changes the key, but the baseline
    # cache switch, which only says whether the key is looked up.
    for model, cfg in (("mlp", default), ("cnn", composed(["model=cnn"]))):
        reference = key(cfg=cfg)
        assert (reference == cpu1) == (model == "mlp")
        leaves = {**_changed_leaves(cfg, "pretrain"), **_changed_leaves(cfg, "model")}
        assert {"pretrain.epochs", "pretrain.batch_size", "pretrain.optimizer.lr", "model.hidden_dims"} <= set(leaves), leaves
        for dotted, value in leaves.items():
            if affects_results(dotted):
                assert key(cfg=with_value(cfg, dotted, value)) != reference, (model, dotted, value)
            else:
                assert dotted == "pretrain.cache" and key(cfg=with_value(cfg, dotted, value)) == reference
    assert key(["pretrain=none"]) != cpu1
    # the split and the seed: which images pretrain the model, in which order
    for dotted, value in (("data.split_seed", 5), ("data.calibration_size", 90), ("data.samples_per_task", 30), ("seed", 1),
                          ("cpu_kernels", "native")):
        assert key(cfg=with_value(default, dotted, value)) != cpu1, dotted
    # Not the fine-tuning: no setting of any method (the task classes aside, passed as `classes`) or
    # of any retention strategy; nor the accelerator string (the resolved device is in the key),
    # resume, the selection rule.
    checked = set()
    for group, options in (("method", ("sequential", "joint", "task_arithmetic", "ties", "dare", "task_negation")),
                           ("retention", ("ewc", "l2sp", "lwf", "replay", "freeze"))):
        for option in options:
            cfg = default if option == "sequential" else composed([f"{group}={option}"])
            assert key(cfg=cfg) == cpu1, option
            for dotted, value in _changed_leaves(cfg, group).items():
                assert key(cfg=with_value(cfg, dotted, value)) == cpu1, (option, dotted, value)
                checked.add(f"{option}:{dotted}")
    assert {"sequential:method.epochs_per_stage", "sequential:method.optimizer.lr", "dare:method.merger.drop_rate",
            "task_negation:method.forget", "ewc:retention.lambda_", "replay:retention.seed"} <= checked, checked
    assert key(["trainer=cpu"]) == cpu1
    for dotted, value in (("trainer.accelerator", "cpu"), ("resume", True), ("selection.delta", 0.05)):
        assert key(cfg=with_value(default, dotted, value)) == cpu1, dotted