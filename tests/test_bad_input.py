"""Bad input gives one clear line naming the key (or file), a nonzero exit, and writes nothing.

"Nothing written" means: the baseline cache folder holds no file (no ``baseline-*.pt``, no lock)
and the run's output folder does not exist or is empty. Through ``python train.py`` Hydra itself
writes ``.hydra/`` and ``train.log`` before our code runs; those two are allowed, nothing else
(no ``metrics.json``, ``stages.csv``, ``checkpoints/``, ``confusion/``). Every case gets its own
empty cache folder, so a baseline found there can only come from the refused run.

Most cases run in-process through ``train(cfg)``; a few go through ``python train.py`` to check
the exit status and what reaches stderr. The subprocesses start together (module fixture) so
their start-up costs overlap.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from seqft_lightning.errors import ConfigError, DataError
from seqft_lightning.api import train

REPO = Path(__file__).resolve().parents[1]
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def _corrupt_vendored_copy(dest: Path) -> Path:
    """Copies of the vendored archives, with ``train-labels`` truncated to half its size."""
    dest.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(REPO / "data" / "mnist" / f"{name}.gz", dest / f"{name}.gz")
    bad = dest / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    return dest


HYDRA_OWN = {".hydra", "train.log"}  # what Hydra writes into a run folder before train() is called


def _files_under(folder: Path) -> list[str]:
    """Every file below ``folder`` (relative paths, sorted); empty when it does not exist."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _assert_nothing_written(run_dir: Path, cache_dir: Path, hydra_files: bool = False) -> None:
    """No baseline (nor lock) in ``cache_dir``; ``run_dir`` absent or empty (except Hydra's own)."""
    cache_dir, run_dir = Path(cache_dir), Path(run_dir)
    assert not list(cache_dir.glob("baseline-*.pt")), f"a baseline was cached: {_files_under(cache_dir)}"
    assert _files_under(cache_dir) == [], f"the cache folder was written: {_files_under(cache_dir)}"
    written = _files_under(run_dir)
    if hydra_files:
        written = [f for f in written if Path(f).parts[0] not in HYDRA_OWN]
    assert written == [], f"the run folder was written: {written}"


def _assert_refused(cfg, error, *needles, absent=()):
    """``train(cfg)`` raises ``error`` with a one-line message holding every needle (and none of
    ``absent``), and writes nothing."""
    with pytest.raises(error) as info:
        train(cfg)
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    for needle in absent:
        assert needle not in message, (needle, message)
    _assert_nothing_written(Path(cfg.paths.output_dir), Path(cfg.paths.cache_dir))
    return message


# -- in-process --------------------------------------------------------------------------------
INVALID_CONFIGS = [
    (["method.stages=[[3],[12]]"], ConfigError, ["method.stages[1]", "12", "0..9"]),
    (["method.stages=[[-1],[4]]"], ConfigError, ["method.stages[0]", "-1"]),
    (["method.stages=[[3],[3,4]]"], ConfigError, ["method.stages", "class 3", "stage 0", "stage 1"]),
    (["method.stages=[[3],[]]"], ConfigError, ["method.stages[1]", "empty"]),
    (["method.stages=[]"], ConfigError, ["method.stages"]),
    (["method.epochs_per_stage=-1"], ConfigError, ["method.epochs_per_stage=-1", ">= 0"]),
    (["pretrain.epochs=-1"], ConfigError, ["pretrain.epochs=-1", ">= 0"]),
    (["method.batch_size=0"], ConfigError, ["method.batch_size=0", ">= 1"]),
    (["pretrain.batch_size=-5"], ConfigError, ["pretrain.batch_size=-5"]),
    (["data.samples_per_task=0"], ConfigError, ["data.samples_per_task=0"]),
    (["data.calibration_size=-1"], ConfigError, ["data.calibration_size=-1"]),
    (["method.name=foo"], ConfigError, ["method.name='foo'", "sequential", "joint"]),
    (["seed=abc"], ConfigError, ["seed=", "abc", "wrong type"]),
    (["seed=-1"], ConfigError, ["seed=-1"]),
    (["method.epochs_per_stage=ten"], ConfigError, ["method.epochs_per_stage", "ten", "wrong type"]),
    (["data.samples_per_task=many"], ConfigError, ["data.samples_per_task", "wrong type"]),
    (["method.stages=[[3],[x]]"], ConfigError, ["method.stages"]),
    (["seed=1.5"], ConfigError, ["seed=1.5", "wrong type"]),  # not data.split_seed, which interpolates it
    (["retention=ewc", "retention.lambda_=nan"], ConfigError, ["retention.lambda_=nan", "finite"]),
    (["method=task_arithmetic", "method.lambda_grid=[0,nan]"], ConfigError, ["method.lambda_grid=[0, nan]", "finite"]),
    (["method.optimizer.lr=inf"], ConfigError, ["method.optimizer.lr=inf", "finite"]),
    (["retention=l2sp", "retention.alpha=-inf"], ConfigError, ["retention.alpha=-inf", "finite"]),
    (["data.std=0"], ConfigError, ["data.std=0", "> 0"]),
]


@pytest.mark.parametrize("overrides, error, needles", [pytest.param(*case, id=case[0][0]) for case in INVALID_CONFIGS])
def test_invalid_config_is_refused_in_process(compose, overrides, error, needles):
    _assert_refused(compose(overrides), error, *needles)


# Refused before any work (issue 9): optimizer arguments torch rejects, an accelerator that is not
# there, every merging / negation setting. (overrides, needles in the message, needles not in it)
REFUSED_BEFORE_WORK = {
    "method_lr": (["method.optimizer.lr=-1"], ["method.optimizer", "-1"], []),
    "pretrain_lr": (["pretrain.optimizer.lr=-1"], ["pretrain.optimizer", "-1"], []),
    "merge_retention": (["method=task_arithmetic", "retention=ewc"], ["retention=ewc", "retention=none"], []),
    "merge_no_calibration": (["method=task_arithmetic", "data.calibration_size=0"], ["data.calibration_size=0"], []),
    "merge_empty_grid": (["method=task_arithmetic", "method.lambda_grid=[]"], ["method.lambda_grid"], []),
    "merge_bad_vector": (["method=task_arithmetic", "method.vectors=[5]"], ["method.vectors", "5", "0..2"], []),
    "merge_old_select_metric": (["method=task_arithmetic", "+method.select_metric=acc"], ["method.select_metric", "selection.rule"], []),
    "bad_selection_rule": (["selection.rule=foo"], ["selection.rule", "foo", "target_at_retained"], []),
    "test_objective": (["optimized_metric=test/acc"], ["optimized_metric=test/acc", "calibration/"], []),
    "limit_test_batches": (["trainer.limit_test_batches=2"], ["trainer.limit_test_batches", "limit_train_batches"], []),
    "unknown_objective": (["optimized_metric=calibration/accuracy"],
                          ["optimized_metric=calibration/accuracy", "calibration/selection_score"], []),
    "ties_keep_fraction": (["method=ties", "method.merger.keep_fraction=2"], ["method.merger", "keep_fraction", "2"], []),
    "negation_no_forget": (["method=task_negation", "method.forget=[]"], ["method.forget"], ["method.stages"]),
    "negation_ratio": (["method=task_negation", "method.min_retained_ratio=2"], ["method.min_retained_ratio=2"], []),
}


def test_a_file_where_a_folder_belongs_is_refused(compose, tmp_path):
    (tmp_path / "afile").write_text("")
    _assert_refused(compose([f"paths.log_dir={tmp_path / 'afile'}"]), ConfigError, "paths.log_dir=", "is a file")


@pytest.mark.parametrize("override, needle", [("trainer.devices=0", "devices=0"), ("trainer.precision=bogus", "bogus")])
def test_a_trainer_setting_lightning_refuses_is_one_line(compose, override, needle):
    """Lightning checks its own settings when the Trainer is built (the first fit): a one-line ConfigError."""
    with pytest.raises(ConfigError) as info:
        train(compose(["data=synthetic", "pretrain.epochs=1", "logger=none", override]))
    assert str(info.value).startswith("trainer: ") and needle in str(info.value) and "\n" not in str(info.value)


def test_an_optimizer_that_does_not_import_says_why(compose):
    with pytest.raises(ConfigError, match=r"Bogus.*Are you sure"):
        train(compose(["method.optimizer._target_=torch.optim.Bogus"]))


@pytest.mark.parametrize("case", list(REFUSED_BEFORE_WORK))
def test_bad_setting_is_refused_before_any_work(compose, case):
    overrides, needles, absent = REFUSED_BEFORE_WORK[case]
    _assert_refused(compose(overrides), ConfigError, *needles, absent=absent)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: trainer=gpu is valid here")
def test_gpu_trainer_without_cuda_is_refused(compose):
    message = _assert_refused(compose(["trainer=gpu"]), ConfigError, "CUDA", "trainer=cpu", "trainer.accelerator=auto")
    assert "no cuda" in message.lower() or "not available" in message.lower(), message


def test_too_many_samples_per_task_is_refused(compose):
    # passes validation; the split finds only ~5600 images of class 3 after calibration
    message = _assert_refused(compose(["data.samples_per_task=100000", "trainer=cpu"]), DataError, "data.samples_per_task=100000", "class 3")
    assert "calibration" in message


def test_corrupt_data_file_is_refused(compose, tmp_path):
    vendored = _corrupt_vendored_copy(tmp_path / "vendored")
    cfg = compose([f"data.vendored_dir={vendored}", f"paths.data_dir={tmp_path / 'data'}", "trainer=cpu"])
    _assert_refused(cfg, DataError, "train-labels-idx1-ubyte.gz", "corrupt")
    assert not (tmp_path / "data" / "MNIST" / "raw" / "train-labels-idx1-ubyte").exists()


def test_unknown_method_group_option_is_hydras_error(compose):
    with pytest.raises(ConfigCompositionException) as info:
        compose(["method=foo"])
    message = str(info.value)
    assert "method/foo" in message
    for option in ("sequential", "joint", "baseline"):
        assert option in message


# -- through train.py ----------------------------------------------------------------------------
# A few cases only: each costs a Python start-up. bench/bench_refusals.py runs every case this way.
SUBPROCESS_CASES = {
    "class_out_of_range": (["method.stages=[[3],[12]]"], 2, "method.stages[1]"),
    "corrupt_file": (None, 2, "train-labels-idx1-ubyte.gz"),  # overrides built from tmp dirs
    "unknown_method": (["method=foo"], 1, "method/foo"),
    "method_lr": (["method.optimizer.lr=-1"], 2, "method.optimizer"),
    "negation_no_forget": (["method=task_negation", "method.forget=[]"], 2, "method.forget"),
}
if not torch.cuda.is_available():
    SUBPROCESS_CASES["gpu_without_cuda"] = (["trainer=gpu"], 2, "trainer=cpu")


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Start every ``train.py`` case at once; return ``{case: (completed process, run dir)}``."""
    base = tmp_path_factory.mktemp("cli")
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    procs = {}
    for case, (overrides, _, _) in SUBPROCESS_CASES.items():
        run_dir = base / case / "run"
        if overrides is None:
            vendored = _corrupt_vendored_copy(base / case / "vendored")
            overrides = [f"data.vendored_dir={vendored}", f"paths.data_dir={base / case / 'data'}", "trainer=cpu"]
        cmd = [sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}", f"paths.cache_dir={base / case / 'cache'}"]
        procs[case] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), run_dir)
    results = {}
    for case, (proc, run_dir) in procs.items():
        try:
            out, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[case] = (subprocess.CompletedProcess(proc.args, proc.returncode, out, err), run_dir)
    return results


def _cache_of(run_dir: Path) -> Path:
    return run_dir.parent / "cache"


@pytest.mark.parametrize("case", [c for c, v in SUBPROCESS_CASES.items() if v[1] == 2])
def test_train_py_prints_one_error_line_and_exits_2(cli_runs, case):
    proc, run_dir = cli_runs[case]
    _, code, needle = SUBPROCESS_CASES[case]
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    _assert_nothing_written(run_dir, _cache_of(run_dir), hydra_files=True)
    mentions = [line for line in proc.stderr.splitlines() if "error: " in line]
    assert len(mentions) == 1 and needle in mentions[0], proc.stderr
    # the contract: the line itself starts with "error:" (no logging prefix)
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert error_lines == mentions, f"expected one stderr line starting with 'error:', got: {mentions}"


def test_train_py_unknown_method_is_hydras_error(cli_runs):
    proc, run_dir = cli_runs["unknown_method"]
    assert proc.returncode == 1
    assert "method/foo" in proc.stderr
    assert "Available options in 'method'" in proc.stderr and "sequential" in proc.stderr
    assert "Traceback" not in proc.stderr
    _assert_nothing_written(run_dir, _cache_of(run_dir))  # composition fails before Hydra writes


# -- refused before torch is imported --------------------------------------------------------------
# plan_run puts the cheap checks first: these refusals cost a Python start-up and Hydra's compose,
# well under a second, instead of torch's and Lightning's imports. A fresh interpreter shows it:
# after each refusal, torch is still not in sys.modules.
WITHOUT_TORCH = {
    "method_lr": ["method.optimizer.lr=-1"],
    "pretrain_lr": ["pretrain.optimizer.lr=-1"],
    "pretrain_betas": ["+pretrain.optimizer.betas=[0.9,1.5]"],
    "ties_keep_fraction": ["method=ties", "method.merger.keep_fraction=2"],
    "merge_renamed_key": ["method=task_arithmetic", "+method.merger.scaling_factor=0.3"],
    "too_many_samples": ["data.samples_per_task=100000", "trainer=cpu"],
    "corrupt_file": None,  # overrides built from a tmp dir
}
# (trainer=gpu is refused by asking torch whether CUDA is there: that refusal imports torch)

_WITHOUT_TORCH_SCRIPT = """
import json, sys
from hydra import compose, initialize_config_dir
import seqft_lightning
from seqft_lightning.api import train
from seqft_lightning.errors import SeqftError
cases, conf_dir = json.loads(sys.argv[1]), sys.argv[2]
out = {}
for name, overrides in cases.items():
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    try:
        train(cfg)
        out[name] = ("not refused", None)
    except SeqftError as err:
        out[name] = (str(err), "torch" in sys.modules)
print(json.dumps(out))
"""


def test_common_refusals_import_no_torch(tmp_path):
    import json

    cases = {}
    for name, overrides in WITHOUT_TORCH.items():
        if overrides is None:
            vendored = _corrupt_vendored_copy(tmp_path / name / "vendored")
            overrides = [f"data.vendored_dir={vendored}", f"paths.data_dir={tmp_path / name / 'data'}", "trainer=cpu"]
        cases[name] = [*overrides, f"paths.output_dir={tmp_path / name / 'run'}", f"paths.cache_dir={tmp_path / name / 'cache'}"]
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TORCH_SCRIPT, json.dumps(cases), str(REPO / "conf")],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (message, torch_imported) in results.items():
        assert torch_imported is False, f"{name}: {message} (torch imported: {torch_imported})"
        _assert_nothing_written(tmp_path / name / "run", tmp_path / name / "cache")
