"""Every option of every config group composes with ``conf/train.yaml`` and validates.

Options are discovered from ``conf/<group>/*.yaml`` at collection time, so a new yaml file is
tested as soon as it exists.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

import torch

from seqft_lightning.config import validate_config
from seqft_lightning.plan import plan_run
from seqft_lightning.data import TaskDataModule
from seqft_lightning.errors import ConfigError
from seqft_lightning.methods import METHODS
from seqft_lightning.models import CNN, MLP
from seqft_lightning.retention import Retention

CONF = Path(__file__).resolve().parents[1] / "conf"


def _defaults_groups() -> dict[str, str]:
    """``{group: default option}`` from the defaults list of ``conf/train.yaml``."""
    out = {}
    for entry in yaml.safe_load((CONF / "train.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            (key, value), = entry.items()
            out[key.replace("optional ", "").strip()] = value
    return out


DEFAULTS = _defaults_groups()
SKIP_GROUPS = {"hydra"}  # needs Hydra's runtime; covered by the subprocess tests
GROUPS = [g for g in DEFAULTS if g not in SKIP_GROUPS]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


CASES = [pytest.param(group, option, id=f"{group}={option}") for group in GROUPS for option in _options(group)]


def test_expected_groups_and_options_exist():
    # the groups the issue names, with (at least) the options it names
    required = {
        "method": {"sequential", "joint", "baseline"},
        "retention": {"none"},
        "trainer": {"cpu", "gpu", "default", "ddp"},
        "data": {"mnist", "synthetic"},
        "pretrain": {"default", "none"},
        "logger": {"tensorboard", "none"},
        "callbacks": {"default", "none"},
    }
    for group, options in required.items():
        assert group in DEFAULTS, group
        assert options <= set(_options(group)), group
    assert DEFAULTS["method"] == "sequential" and DEFAULTS["data"] == "mnist"


def test_default_config_validates_and_resolves(compose):
    cfg = compose([])
    plan = plan_run(cfg)
    assert plan.stages == [[3], [4], [7]] and plan.task_classes == [3, 4, 7] and plan.retention.name == "none"
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["method"]["stages"] == [[3], [4], [7]]
    assert container["data"]["samples_per_task"] == 1000 and container["data"]["calibration_size"] == 5000
    root = Path(container["paths"]["root_dir"])
    assert (root / "conf" / "train.yaml").is_file()
    assert Path(container["data"]["vendored_dir"]) == root / "data" / "mnist"


@pytest.mark.parametrize("group, option", CASES)
def test_every_option_composes_and_validates(compose, group, option, tmp_path):
    cfg = compose([f"{group}={option}"])
    files_dir = cfg.data.get("files_dir")  # data not vendored with the repository (Fashion-MNIST)
    if files_dir is not None and not Path(files_dir).is_dir():
        pytest.skip(f"data.files_dir={files_dir} is absent (README, Data: how to fetch it)")
    needs_gpu = group == "trainer" and cfg.trainer.accelerator == "gpu"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    wanted = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
    if needs_gpu and gpus < wanted:  # e.g. trainer=ddp (2 GPUs) on a CPU machine or a one-GPU machine
        with pytest.raises(ConfigError, match="no CUDA GPU|trainer.devices"):
            plan_run(cfg)
    else:
        plan_run(cfg)
    # every interpolation resolves (the project_root resolver included)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["paths"]["output_dir"] == str(tmp_path / "run")

    if group == "method":
        assert cfg.method.name in METHODS
        if cfg.method.name in {"sequential", "joint", "baseline"}:
            assert cfg.method.name == option
        optimizer = instantiate(cfg.method.optimizer)
        assert callable(optimizer)
    elif group == "retention":
        assert isinstance(instantiate(cfg.retention), Retention)
    elif group == "data":
        dm = instantiate(cfg.data, task_classes=[3, 4, 7])
        assert isinstance(dm, TaskDataModule) and dm.task_classes == [3, 4, 7]
        if option == "synthetic":
            dm.setup()
            assert len(dm.task_data([3])[1]) == cfg.data.samples_per_task
    elif group == "pretrain":
        assert cfg.pretrain.enabled is (option != "none")
        assert callable(instantiate(cfg.pretrain.optimizer))
    elif group == "trainer":
        assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
        if option in {"cpu", "default"}:  # the others need GPUs to instantiate
            trainer = instantiate(cfg.trainer, logger=False, callbacks=[], max_epochs=1, enable_progress_bar=False)
            assert isinstance(trainer, pl.Trainer)
            if option == "cpu":
                assert type(trainer.accelerator).__name__ == "CPUAccelerator"
        else:
            assert cfg.trainer.accelerator == "gpu"
    elif group == "logger":
        for node in (cfg.logger or {}).values():
            logger = instantiate(node)
            assert Path(logger.save_dir) == tmp_path / "run"
    elif group == "callbacks":
        for node in (cfg.callbacks or {}).values():
            assert isinstance(instantiate(node), pl.Callback)
    elif group == "model":
        net = instantiate(cfg.model)
        assert isinstance(net, (MLP, CNN)) and net.num_classes == cfg.model.num_classes


def test_method_option_changes_the_method(compose):
    assert compose(["method=joint"]).method.name == "joint"
    assert compose(["method=sequential"]).method.name == "sequential"


def _merging_host_method() -> str | None:
    """A method whose defaults pull a ``/merging@merger`` option, if any exists."""
    for path in sorted((CONF / "method").glob("*.yaml")):
        defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
        if any(isinstance(d, dict) and any(str(k).startswith("/merging@") for k in d) for d in defaults):
            return path.stem
    return None


MERGING = _options("merging") if (CONF / "merging").is_dir() else []


@pytest.mark.parametrize("option", MERGING)
def test_every_merging_option_composes(compose, option):
    host = _merging_host_method()
    if host is None:
        pytest.skip("no method selects a merging option")
    host = option if (CONF / "method" / f"{option}.yaml").is_file() else host
    cfg = compose([f"method={host}", f"merging@method.merger={option}"])
    plan_run(cfg)
    merger = instantiate(cfg.method.merger)
    assert type(merger).__name__.lower().replace("_", "") == option.replace("_", "").lower()


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer=cpu", "retention=ewc", "method=joint", "data=synthetic"],
        ["trainer=cpu", "pretrain=none", "logger=none", "callbacks=none"],
        ["method.stages=[[0,1],[2],[9]]", "data.samples_per_task=null", "seed=7"],
    ],
)
def test_option_combinations_validate(compose, overrides):
    plan_run(compose(overrides))


def test_validate_config_can_fail(compose):
    """The validation above is not vacuous: the same composed config with one bad value fails."""
    cfg = compose([])
    cfg.method.epochs_per_stage = -3
    with pytest.raises(ConfigError, match=r"method\.epochs_per_stage=-3"):
        validate_config(cfg, set(METHODS))
    with pytest.raises(ConfigError, match="method.name"):
        validate_config(compose([]), {"joint"})


@pytest.mark.parametrize(
    "overrides, inactive",
    [
        (["experiment=split_mnist", "method=joint", "retention=replay"], True),  # no pool, one stage
        (["experiment=split_mnist", "method=joint", "retention=ewc"], True),
        (["experiment=split_mnist", "method=sequential", "retention=replay"], False),  # earlier stages
        (["experiment=split_mnist", "method=joint", "retention=lwf"], False),  # distils the init
        (["method=joint", "retention=replay"], False),  # the pretraining pool is in memory
        (["method=joint", "retention=ewc"], False),
        (["method=baseline", "retention=l2sp"], True),  # nothing is trained
        (["retention=ewc", "retention.lambda_=0"], True),
        (["retention=none"], False),
    ],
)
def test_a_retention_that_cannot_act_is_named_before_any_work(compose, overrides, inactive, caplog):
    plan = plan_run(compose(overrides))
    assert (plan.retention_inactive is not None) is inactive
    assert ("cannot act" in caplog.text) is inactive
