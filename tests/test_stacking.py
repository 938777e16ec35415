"""Stacked training: a run's numbers do not depend on what it was stacked with.

* :class:`~seqft_lightning.models.ClassifierModule` over K nets: each net's parameters and curves
  after training in a stack of 3 are bit-identical to the same net trained in a stack of one.
* :class:`~seqft_lightning.lockstep.Lockstep`: requests with equal keys are trained together, each
  job keeps its own random generators and working directory, a failing job leaves the others.
* Whole runs (every method family, synthetic data): each job's ``metrics.json`` is byte-identical
  alone and inside a group whose fits were stacked (pretraining of several seeds included).
* :func:`~seqft_lightning.schedule.stack_groups`: the one grouping rule.
* ``train.py -m`` (subprocesses): a stacked sweep equals the same sweep with ``stack_size=1``; a
  stacked sweep killed once some members of its group finished, then rerun with ``resume=true``,
  redoes only the unfinished members and ends with the uninterrupted sweep's results; a bad
  ``stack_size`` is one line and exit status 2.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seqft_lightning.lockstep import Lockstep, RandomState, TrainRequest, in_lockstep, member_random, train_in_turn
from seqft_lightning.schedule import stack_groups, stack_key

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300


# --------------------------------------------------------------------------- the module, K nets


def _fit(nets, datasets, seeds):
    """Train ``nets`` as one stack for 2 epochs (Adam), net k on ``datasets[k]``, its batches drawn
    from a generator seeded ``seeds[k]``; the curves, one list per net."""
    import lightning.pytorch as pl

    from seqft_lightning.data.loaders import StackedLoader, TensorBatchLoader
    from seqft_lightning.models import ClassifierModule

    module = ClassifierModule(nets)
    module.begin_stage(1, functools.partial(torch.optim.Adam, lr=0.01), step_offsets=[0] * len(nets))
    randoms = []
    for seed in seeds:
        torch.manual_seed(seed)
        randoms.append(RandomState().capture(torch_only=True))
    loader = StackedLoader([TensorBatchLoader(x, y, 16) for x, y in datasets], randoms)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, max_epochs=2)
    trainer.fit(module, train_dataloaders=loader)
    return module.take_curves()


def test_evaluation_batches_are_stacked_once_and_served_again():
    from seqft_lightning.data.loaders import StackedLoader, TensorBatchLoader

    torch.manual_seed(0)
    data = [(torch.randn(50, 4), torch.arange(50) % 3) for _ in range(2)]
    fixed = StackedLoader([TensorBatchLoader(x, y, 20, shuffle=False) for x, y in data])
    first = next(iter(fixed))  # a pass stopped early (Lightning stops at len()) still keeps them all
    passes = [list(fixed), list(fixed)]
    assert [len(p) for p in passes] == [3, 3] and first is passes[0][0]
    assert all(a is b for a, b in zip(*passes))  # kept: the data is copied once per fit, not per epoch
    for k, (x, y) in enumerate(data):
        assert torch.equal(torch.cat([xb[k] for xb, _ in passes[0]]), x)
        assert torch.equal(torch.cat([yb[k] for _, yb in passes[0]]), y)
    shuffled = StackedLoader([TensorBatchLoader(x, y, 50) for x, y in data])
    assert not torch.equal(next(iter(shuffled))[1], next(iter(shuffled))[1])  # a new order every pass


def test_a_net_trained_in_a_stack_of_three_equals_it_trained_alone():
    from seqft_lightning.models import MLP

    def nets():
        out = []
        for k in range(3):
            torch.manual_seed(100 + k)
            out.append(MLP(input_dim=8, hidden_dims=[16], num_classes=3))
        return out

    datasets = []
    for k in range(3):
        g = torch.Generator().manual_seed(k)
        x = torch.randn(80, 8, generator=g)
        datasets.append((x, (x @ torch.randn(8, 3, generator=g)).argmax(1)))
    stacked = nets()
    stacked_curves = _fit(stacked, datasets, seeds=[7, 8, 9])
    for k, alone in enumerate(nets()):
        before = [p.detach().clone() for p in alone.parameters()]
        alone_curves = _fit([alone], [datasets[k]], seeds=[7 + k])
        assert any(not torch.equal(a, b) for a, b in zip(before, alone.parameters()))  # it trained
        for (name, p), q in zip(alone.named_parameters(), stacked[k].parameters()):
            assert torch.equal(p, q), (k, name)
        assert alone_curves[0] == stacked_curves[k]


def test_a_model_a_stack_cannot_run_is_refused_before_any_work():
    from omegaconf import OmegaConf
    from torch import nn

    from seqft_lightning.errors import ConfigError
    from seqft_lightning.models import MLP
    from seqft_lightning.models.stacked import unstackable_layers
    from seqft_lightning.plan import check_model

    assert unstackable_layers(MLP()) == []
    assert unstackable_layers(nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.BatchNorm1d(2))) == [
        "Dropout at 1", "BatchNorm1d at 2"]
    with pytest.raises(ConfigError, match="Dropout at the top.*without dropout or batch norm"):
        check_model(OmegaConf.create({"_target_": "torch.nn.Dropout"}), retention=None)


# --------------------------------------------------------------------------- Lockstep


def _train_sums(requests):
    """A stand-in train function: each request's payload plus a draw from its own generators."""
    out = []
    for request in requests:
        request.random.restore(torch_only=True)
        out.append((request.payload, len(requests), torch.rand(()).item()))
        request.random.capture(torch_only=True)
    return out


def test_lockstep_stacks_equal_keys_and_keeps_each_jobs_process_state(tmp_path):
    def job(k: int, key: str, fail: bool = False):
        assert in_lockstep() and member_random() is not None
        folder = tmp_path / f"job{k}"
        folder.mkdir()
        os.chdir(folder)
        random.seed(k)
        torch.manual_seed(k)
        first = train_in_turn(TrainRequest(key, k), _train_sums)
        if fail:
            raise ValueError(f"job {k} fails")
        second = train_in_turn(TrainRequest(key, -k), _train_sums)
        return first, second, random.random(), Path.cwd().name

    def alone(k: int):
        random.seed(k)
        torch.manual_seed(k)
        state = RandomState().capture()
        first = _train_sums([TrainRequest("", k, state)])[0]
        second = _train_sums([TrainRequest("", -k, state)])[0]
        state.restore()
        return first[::2], second[::2], random.random()

    cwd = Path.cwd()
    lockstep = Lockstep(_train_sums)
    outcomes = lockstep.run([functools.partial(job, 0, "a"), functools.partial(job, 1, "b"), functools.partial(job, 2, "a"),
                             functools.partial(job, 3, "a", fail=True)])
    assert Path.cwd() == cwd and not in_lockstep()
    assert outcomes[3][0] is False and "job 3 fails" in str(outcomes[3][1])
    assert sorted(lockstep.stacks) == [1, 1, 2, 3]  # "a" x3 then x2 (job 3 failed), "b" alone twice
    for k in (0, 1, 2):
        ok, (first, second, draw, folder) = outcomes[k]
        assert ok and folder == f"job{k}"
        assert (first[0], first[2]) + (second[0], second[2]) + (draw,) == sum(alone(k)[:2], ()) + (alone(k)[2],)


# --------------------------------------------------------------------------- whole runs

FAST = ["data=synthetic", "trainer=cpu", "pretrain.epochs=1", "method.epochs_per_stage=2", "trainer.enable_progress_bar=false",
        "callbacks=none"]
GROUP = [
    ["method=sequential", "seed=0"],
    ["method=sequential", "seed=1"],
    ["method=sequential", "seed=2", "logger=none"],
    ["method=sequential", "retention=ewc", "retention.lambda_=1", "retention.fisher_samples=50"],
    ["method=sequential", "retention=ewc", "retention.lambda_=10", "retention.fisher_samples=50"],
    ["method=sequential", "retention=replay", "retention.memory_per_class=10", "retention.replay_share=0.25", "seed=1"],
    ["method=sequential", "retention=replay", "retention.memory_per_class=10", "retention.replay_share=0.5", "seed=1"],
    ["method=sequential", "retention=lwf", "retention.alpha=1", "seed=2"],
    ["method=sequential", "retention=freeze", "retention.trainable=[output]"],
    ["method=joint", "seed=0"],
    ["method=joint", "seed=1", "method.reset_optimizer=false"],
    ["method=task_arithmetic", "seed=0"],
    ["method=task_arithmetic", "seed=2"],
]


def _configs(compose_cfg, root: Path) -> list:
    return [compose_cfg([*FAST, *overrides], root / str(i), root / "cache") for i, overrides in enumerate(GROUP)]


def test_each_run_writes_the_same_metrics_alone_and_in_a_stacked_group(tmp_path, compose_cfg):
    from seqft_lightning.api import train
    from seqft_lightning.runner import train_stack

    for cfg in _configs(compose_cfg, tmp_path / "alone"):
        train(cfg)
    lockstep = Lockstep(train_stack)
    outcomes = lockstep.run([functools.partial(train, cfg) for cfg in _configs(compose_cfg, tmp_path / "group")])
    assert all(ok for ok, _ in outcomes), [value for ok, value in outcomes if not ok]
    # Fits were stacked: pretraining of seeds 0-2 (one baseline each, shared by the runs of a seed),
    # and the alike fine-tuning stages.
    assert max(lockstep.stacks) >= 5, lockstep.stacks
    for i in range(len(GROUP)):
        alone, grouped = tmp_path / "alone" / str(i), tmp_path / "group" / str(i)
        for name in ("metrics.json", "stages.csv", "curves.csv"):
            assert (alone / name).read_bytes() == (grouped / name).read_bytes(), (GROUP[i], name)
        if "logger=none" not in GROUP[i]:  # each run its own TensorBoard events
            assert list(grouped.rglob("events.out.tfevents.*")), GROUP[i]
    assert len(list((tmp_path / "group" / "cache").glob("baseline-*.pt"))) == 3


def test_a_failing_run_in_a_group_leaves_the_others(tmp_path, compose_cfg):
    from seqft_lightning.api import train
    from seqft_lightning.runner import train_stack

    good = [compose_cfg([*FAST, "pretrain.epochs=1", f"seed={s}"], tmp_path / str(s), tmp_path / "cache") for s in (0, 1)]
    bad = compose_cfg([*FAST, "seed=2", "method.stages=[[3],[11]]"], tmp_path / "bad", tmp_path / "cache")
    outcomes = Lockstep(train_stack).run([functools.partial(train, good[0]), functools.partial(train, bad), functools.partial(train, good[1])])
    assert [ok for ok, _ in outcomes] == [True, False, True]
    assert "11" in str(outcomes[1][1])
    assert (tmp_path / "0" / "metrics.json").is_file() and (tmp_path / "1" / "metrics.json").is_file()
    assert not (tmp_path / "bad" / "metrics.json").exists()


# --------------------------------------------------------------------------- the grouping rule


def test_stack_groups_group_by_everything_but_seeds_and_numbers():
    jobs = [[f"method={m}", f"retention.lambda_={lam}", f"seed={s}"] for m in ("sequential", "joint") for lam in (1, 10) for s in (0, 1, 2)]
    assert stack_key(jobs[0]) == stack_key(jobs[5]) == ("method=sequential",)
    assert stack_key(["retention=ewc", "data.split_seed=3"]) == ("retention=ewc",)
    assert stack_key(["+retention.trainable=[output]"]) != stack_key(["retention.trainable=[1,output]"])
    groups = stack_groups(jobs, stack_size=25)
    assert groups == [list(range(6)), list(range(6, 12))]
    # Cut into even, interleaved parts of at most stack_size.
    assert stack_groups(jobs, stack_size=4) == [[0, 2, 4], [1, 3, 5], [6, 8, 10], [7, 9, 11]]
    assert stack_groups(jobs, stack_size=1) == [[i] for i in range(12)]
    # With several workers, a first group of one job per baseline (a sweep that starts by pretraining)
    # is cut by baseline, one share per worker; a first group with several jobs per baseline is not.
    starts = [[f"method={m}", f"seed={s}"] for m in ("baseline", "joint") for s in range(5)]
    assert stack_groups(starts, stack_size=25, workers=2) == [[0, 2, 4], [1, 3], list(range(5, 10))]
    assert stack_groups(jobs, stack_size=25, workers=2) == groups
    halved = stack_groups(jobs[:6], stack_size=25, workers=4)
    assert len(halved) == 4 and sorted(i for g in halved for i in g) == list(range(6))
    assert len(stack_groups(jobs[:2], stack_size=25, workers=8)) == 2
    with pytest.raises(ValueError, match="stack_size"):
        stack_groups(jobs, stack_size=0)


def test_a_groups_configs_are_those_hydra_composes(tmp_path):
    """A group composes its first job and copies it for the others (their seeds and knobs set): each copy
    is exactly Hydra's composition (every value, key order and type, the hydra node with its
    record of the job's overrides); any other difference is left to Hydra."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.utils import JobRuntime
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from seqft_lightning.sweep_stack import alike_sweep_config

    JobRuntime.instance().set("name", "train")
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(ROOT / "conf")))
    master = loader.load_configuration("train", [f"hydra.sweep.dir={tmp_path}", "hydra.job.config.override_dirname.exclude_keys=[seed]"],
                                       run_mode=RunMode.MULTIRUN)
    first = ["method=sequential", "retention=ewc", "retention.lambda_=1", "data.samples_per_task=100", "seed=0"]
    template = loader.load_sweep_config(master, first)
    for job in (["method=sequential", "retention=ewc", "retention.lambda_=300", "data.samples_per_task=100", "seed=3"],
                ["method=sequential", "retention=ewc", "retention.lambda_=0.5", "data.samples_per_task=100", "seed=0"],
                ["method=sequential", "retention=ewc", "retention.lambda_=1", "data.samples_per_task=50", "seed=4"]):
        copied = alike_sweep_config(template, first, job)
        assert copied is not None, job
        composed = loader.load_sweep_config(master, job)
        assert OmegaConf.to_yaml(copied) == OmegaConf.to_yaml(composed), job
        assert copied.hydra.job.override_dirname == composed.hydra.job.override_dirname and "seed" not in composed.hydra.job.override_dirname
    assert OmegaConf.to_yaml(template) == OmegaConf.to_yaml(loader.load_sweep_config(master, first))  # left as composed
    for other in (["method=joint", "retention=ewc", "retention.lambda_=1", "data.samples_per_task=100", "seed=0"],  # a group
                  ["method=sequential", "retention=ewc", "retention.lambda_=1", "data.samples_per_task=100"],  # fewer overrides
                  ["method=sequential", "retention=ewc", "+retention.lambda_=1", "data.samples_per_task=100", "seed=0"],
                  ["method=sequential", "retention=ewc", "retention.lambda_=1", "data.samples_per_task=100", "seed=[0,1]"],
                  ["method=sequential", "retention=ewc", "retention.lambda_=1", "data.samples_per_task=100", "data=1"],
                  ["method=sequential", "retention=ewc", "retention.lambda_=1", "data.samples_per_task=100", "hydra.job.num=1"],
                  ["method=sequential", "retention=ewc", "retention.lambda_=1", "data.samples_per_task=100", "retention=1"]):
        assert alike_sweep_config(template, first, other) is None, other


def test_the_sweeper_checks_a_group_on_its_first_config_and_still_refuses_what_hydra_refuses(tmp_path):
    """Before a sweep starts, each job's config must compose: one full composition per stack group, a
    copy for its alike jobs, and a job Hydra cannot compose is refused as Hydra refuses it."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.utils import JobRuntime
    from hydra.errors import ConfigCompositionException
    from hydra.types import HydraContext, RunMode

    from hydra_plugins.seqft_launcher import StackingBasicSweeper

    JobRuntime.instance().set("name", "train")
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(ROOT / "conf")))
    composed = []
    compose = loader.load_sweep_config
    loader.load_sweep_config = lambda master_config, sweep_overrides: composed.append(sweep_overrides) or compose(master_config, sweep_overrides)
    sweeper = StackingBasicSweeper(max_batch_size=None, params=None)
    sweeper.config = loader.load_configuration("train", [f"hydra.sweep.dir={tmp_path}"], run_mode=RunMode.MULTIRUN)
    sweeper.hydra_context = HydraContext(config_loader=loader, callbacks=None)
    batch = [[f"method={m}", f"retention.lambda_={l}", "retention=ewc", f"seed={s}"] for m in ("sequential", "joint") for l in (1, 30) for s in (0, 1)]
    sweeper.validate_batch_is_legal(batch)
    assert composed == [batch[0], batch[4]]  # the first of each group
    with pytest.raises(ConfigCompositionException):  # retention=none has no lambda_
        sweeper.validate_batch_is_legal([["retention.lambda_=1", "seed=0"], ["retention.lambda_=2", "seed=1"]])
    with pytest.raises(ConfigCompositionException):  # a job unlike the first of its group is composed, and refused
        sweeper.validate_batch_is_legal([["retention=ewc", "seed=0"], ["retention=ewc", "+seed=1"]])


# --------------------------------------------------------------------------- train.py -m

SWEEP = ["data=synthetic", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "callbacks=none", "logger=none",
         "pretrain.epochs=1", "hydra.launcher.n_jobs=1", "method.epochs_per_stage=1,60", "seed=0,1"]


def _sweep(log: Path, sweep_dir: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *SWEEP, f"paths.cache_dir={sweep_dir}_cache", f"hydra.sweep.dir={sweep_dir}", *overrides]
    with open(log, "w") as handle:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen, log: Path) -> None:
    try:
        rc = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"timed out:\n{log.read_text()[-3000:]}")
    assert rc == 0, f"exit status {rc}:\n{log.read_text()[-3000:]}"


def _job_dirs(sweep: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")}


def test_stacked_sweep_equals_unstacked_and_a_killed_group_resumes_only_its_unfinished_members(tmp_path):
    stacked, unstacked, killed = tmp_path / "stacked", tmp_path / "unstacked", tmp_path / "killed"
    procs = [_sweep(tmp_path / "stacked.log", stacked), _sweep(tmp_path / "unstacked.log", unstacked, "stack_size=1")]
    # The killed sweep: one group of four; its two 1-epoch members finish long before the 60-epoch ones.
    victim = _sweep(tmp_path / "killed.log", killed)
    deadline = time.monotonic() + TIMEOUT_S
    short = []
    while len(short) < 2:
        assert victim.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()[-3000:]
        short = [p for p in killed.glob("*epochs_per_stage=1,*/metrics.json")] if killed.is_dir() else []
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    long_done = list(killed.glob("*epochs_per_stage=60,*/metrics.json"))
    assert not long_done, "the long members finished before the kill: lengthen them"
    before = {p.parent.name: p.stat().st_mtime_ns for p in short}
    resumed = _sweep(tmp_path / "resumed.log", killed, "resume=true")
    for proc, name in zip((*procs, resumed), ("stacked", "unstacked", "resumed")):
        _finish(proc, tmp_path / f"{name}.log")

    jobs = _job_dirs(stacked)
    assert len(jobs) == 4 and jobs.keys() == _job_dirs(unstacked).keys() == _job_dirs(killed).keys()
    for name in jobs:
        expected = (unstacked / name / "metrics.json").read_bytes()
        assert (stacked / name / "metrics.json").read_bytes() == expected, name
        assert (killed / name / "metrics.json").read_bytes() == expected, name
        assert (stacked / name / "curves.csv").read_bytes() == (killed / name / "curves.csv").read_bytes(), name
        log = (killed / name / "train.log").read_text()
        if name in before:  # finished before the kill: skipped, untouched
            assert (killed / name / "metrics.json").stat().st_mtime_ns == before[name]
            assert "skipping" in log
        else:
            assert "skipping" not in log.split("resume")[-1]


@pytest.mark.parametrize("value", ["0", "two"])
def test_a_bad_stack_size_is_one_line_and_exit_2(tmp_path, value):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "data=synthetic", f"stack_size={value}",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}", "seed=0,1"], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "stack_size" in lines[0], proc.stderr
    assert not any((tmp_path / "sweep").glob("*/metrics.json"))
