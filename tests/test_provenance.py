"""What ties a result to what made it, and what a referee asks of a run, on tiny synthetic runs:

* the code fingerprint: resume and the baseline cache recompute after a change to the training
  code, and reuse after a change to ``compare/`` only;
* the CPU kernel path is pinned before torch loads and recorded;
* every random draw follows the run seed (split, replay memory, Fisher subset, DARE masks);
* the estimation part: metrics on held-out images disjoint from the selection part;
* a diverged run is marked in metrics.json;
* EWC's Fisher: the published (sampled) definition by default, the empirical one on request.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import pytest
import torch

from seqft_lightning.api import train
from seqft_lightning.errors import ConfigError
from seqft_lightning.provenance import code_version, pin_cpu_kernels, training_sources
from tests.conftest import REPO_ROOT

FAST = ["trainer=cpu", "data=synthetic", "pretrain.epochs=1", "method.epochs_per_stage=1", "logger=none", "callbacks=none"]


def test_code_version_follows_training_code_not_compare(tmp_path):
    package = tmp_path / "seqft_lightning"
    shutil.copytree(REPO_ROOT / "seqft_lightning", package, ignore=shutil.ignore_patterns("__pycache__"))
    assert all("compare" not in p.relative_to(package).parts for p in training_sources(package))
    before = code_version(package)
    (package / "compare" / "report.py").write_text((package / "compare" / "report.py").read_text() + "\n# a new comment\n")
    assert code_version.__wrapped__(package) == before
    (package / "runner.py").write_text((package / "runner.py").read_text() + "\n# a changed line\n")
    assert code_version.__wrapped__(package) != before


def test_resume_and_the_baseline_cache_recompute_after_a_training_code_change(compose_cfg, tmp_path, monkeypatch, caplog):
    import seqft_lightning.plan as plan_module

    cfg = compose_cfg([*FAST, "resume=true", "pretrain.cache=true"], tmp_path / "run", tmp_path / "cache")
    first, objects = train(cfg)
    assert objects  # it ran
    again, objects = train(cfg)
    assert not objects and again == first  # same code: skipped
    monkeypatch.setattr(plan_module, "code_version", lambda: "changed-code")
    with caplog.at_level(logging.INFO):
        redone, objects = train(cfg)
    assert objects, "a run from other training code must be recomputed"
    assert "computed by other training code" in caplog.text
    assert "baseline cache miss" in caplog.text  # the baseline is retrained too
    assert redone["code_version"] == "changed-code" and redone["final"] == first["final"]
    assert len(list((tmp_path / "cache").glob("baseline-*.pt"))) == 2


def test_cpu_kernels_are_pinned_and_recorded(compose_cfg, tmp_path):
    metrics, _ = train(compose_cfg(FAST, tmp_path / "run", tmp_path / "cache"))
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["cpu_kernels"] == "avx2" and info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    if info["cpu_capability"].startswith("AVX"):  # an x86-64 machine: the pinned path is in force
        assert info["cpu_capability"] == "AVX2"
    # torch is loaded in this process: a different pin cannot take effect and is refused in one line
    pin_cpu_kernels("native")  # nothing to pin
    with pytest.raises(ConfigError, match="cpu_kernels=avx2"):
        env = dict(__import__("os").environ)
        try:
            __import__("os").environ.pop("ATEN_CPU_CAPABILITY")
            pin_cpu_kernels("avx2")
        finally:
            __import__("os").environ.clear()
            __import__("os").environ.update(env)


def test_a_fresh_process_pins_the_kernels_before_torch_loads(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    code = ("from seqft_lightning.provenance import pin_cpu_kernels; pin_cpu_kernels('avx2'); import torch; "
            "print(torch.backends.cpu.get_cpu_capability())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out in ("AVX2",) or not out.startswith("AVX")


@pytest.mark.parametrize("overrides, key", [(["retention=replay"], "retention.seed"), (["retention=ewc"], "retention.seed"),
                                            (["method=dare"], "method.merger.seed"), ([], "data.split_seed")])
def test_every_random_draw_follows_the_run_seed(compose_cfg, tmp_path, overrides, key):
    from omegaconf import OmegaConf

    cfg = compose_cfg([*overrides, "seed=3"], tmp_path / "run")
    assert OmegaConf.select(cfg, key) == 3
    done = subprocess.run([sys.executable, "train.py", "--cfg", "job", *overrides, "seed=3"], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True)
    section, name = key.rsplit(".", 1)
    assert f"{name}: ${{seed}}" in done.stdout


def test_two_seeds_hold_out_different_images():
    from seqft_lightning.data import SyntheticTaskDataModule

    a, b = (SyntheticTaskDataModule(split_seed=s) for s in (0, 1))
    a.setup(), b.setup()
    assert not torch.equal(a.splits.tasks[3], b.splits.tasks[3])
    assert not torch.equal(a.splits.calibration, b.splits.calibration)


def test_the_estimation_part_is_disjoint_and_recorded(compose_cfg, tmp_path):
    from seqft_lightning.data import SyntheticTaskDataModule

    dm = SyntheticTaskDataModule(calibration_size=100, estimation_size=100)
    dm.setup()
    parts = [set(dm.splits.calibration.tolist()), set(dm.splits.estimation.tolist()), set(dm.splits.pretrain.tolist()),
             *(set(t.tolist()) for t in dm.splits.tasks.values())]
    assert sum(map(len, parts)) == len(set().union(*parts))  # disjoint
    assert len(parts[1]) == 100 and torch.bincount(dm.estim_y, minlength=10).tolist() == [10] * 10  # stratified
    metrics, _ = train(compose_cfg(FAST, tmp_path / "run", tmp_path / "cache"))
    for entry in [metrics["baseline"], metrics["final"], *metrics["per_stage"]]:
        assert {"estimation/acc", "estimation/acc_target", "estimation/acc_retained"} <= set(entry)
        assert {"calibration/acc", "calibration/acc_target", "calibration/acc_retained"} <= set(entry)


def test_a_diverged_run_is_marked(compose_cfg, tmp_path):
    ok, _ = train(compose_cfg(FAST, tmp_path / "ok", tmp_path / "cache"))
    assert ok["divergence"] is None
    bad, _ = train(compose_cfg([*FAST, "method.optimizer.lr=1000000.0"], tmp_path / "bad", tmp_path / "cache"))
    assert bad["divergence"] is not None and bad["divergence"]["stage"] >= 1
    assert "training loss" in bad["divergence"]["reason"]


def test_ewc_fisher_definitions_differ_and_are_recorded(compose_cfg, tmp_path):
    from seqft_lightning.retention.ewc import EWC

    assert EWC().settings()["fisher"] == "sampled"  # the published definition is the default
    with pytest.raises(ValueError, match="fisher"):
        EWC(fisher="exact")
    results = {}
    for kind in ("sampled", "empirical"):
        overrides = [*FAST, "retention=ewc", f"retention.fisher={kind}", "retention.lambda_=1000"]
        results[kind], _ = train(compose_cfg(overrides, tmp_path / kind, tmp_path / "cache"))
        assert results[kind]["retention_settings"]["fisher"] == kind
    # on an uncertain net the model's own labels differ from the true ones, and so do the Fishers
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    estimates = {}
    for kind in ("sampled", "empirical"):
        ewc = EWC(fisher_samples=40, seed=1, fisher=kind, normalize=False)
        ewc.anchor = {n: p.detach().clone() for n, p in net.named_parameters()}
        estimates[kind] = ewc._estimate(net, x, y)
    assert not torch.allclose(estimates["sampled"]["0.weight"], estimates["empirical"]["0.weight"])


def test_a_normalised_fisher_averages_one():
    from torch import nn

    from seqft_lightning.retention.ewc import EWC

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    ewc = EWC(fisher_samples=40, seed=1)
    ewc.anchor = {n: p.detach().clone() for n, p in net.named_parameters()}
    fisher = ewc._estimate(net, torch.randn(40, 6), torch.randint(0, 3, (40,)))
    assert torch.cat([f.flatten() for f in fisher.values()]).mean().item() == pytest.approx(1.0)
