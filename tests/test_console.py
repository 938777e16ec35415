"""What the user sees is what happened (issue 18), through the real entry points on tiny synthetic runs:
a sweep with a refused job, a misspelt key, resume, Optuna's and submitit's consoles, stage numbers,
and "do not fine-tune" as an answer."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

FAST = ["data=synthetic", "pretrain.epochs=1", "method.epochs_per_stage=1", "logger=none", "trainer=cpu"]
ESCAPE = re.compile(r"\x1b\[")


def _run(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _job_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.match(r"\[\d+/\d+\] ", line)]


@pytest.fixture(scope="module")
def bad_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    sweep = tmp_path_factory.mktemp("bad") / "sweep"
    done = _run("train.py", "-m", f"hydra.sweep.dir={sweep}", f"paths.cache_dir={sweep.parent / 'cache'}",
                "method=sequential", "method.epochs_per_stage=1,-1", *FAST[:2], *FAST[3:])
    return sweep, done


def test_a_refused_job_is_listed_and_the_others_run(bad_sweep):
    sweep, done = bad_sweep
    assert done.returncode == 2, done.stderr[-2000:]
    lines = _job_lines(done.stderr)
    assert len(lines) == 2
    failed = [line for line in lines if "FAILED" in line]
    assert len(failed) == 1 and "method.epochs_per_stage=-1 must be >= 0" in failed[0] and "train.log" in failed[0]
    assert "method.epochs_per_stage=-1" in failed[0].split(" · ")[0]  # the job is named
    good = next(p for p in sweep.iterdir() if "epochs_per_stage=1," in p.name)
    assert (good / "metrics.json").is_file()
    bad = next(p for p in sweep.iterdir() if "epochs_per_stage=-1" in p.name)
    assert not (bad / "metrics.json").exists() and json.loads((bad / "error.json").read_text())["exit_status"] == 2
    assert done.stderr.strip().splitlines()[-1].startswith("sweep: 1 of 2 job(s) failed")


def test_resume_marks_skipped_jobs(bad_sweep):
    sweep, _ = bad_sweep
    again = _run("train.py", "-m", f"hydra.sweep.dir={sweep}", f"paths.cache_dir={sweep.parent / 'cache'}",
                 "method=sequential", "method.epochs_per_stage=1,-1", *FAST[:2], *FAST[3:], "resume=true")
    skipped = [line for line in _job_lines(again.stderr) if "skipped" in line]
    assert len(skipped) == 1 and "resume=true" in skipped[0], again.stderr[-2000:]
    assert len(list((sweep / ".sweeps").glob("multirun-*.yaml"))) == 2  # each sweep's config kept


def test_compare_refuses_a_folder_without_finished_jobs_in_one_line(tmp_path):
    sweep = tmp_path / "sweep"
    _run("train.py", "-m", f"hydra.sweep.dir={sweep}", "method.epochs_per_stage=-1,-2", *FAST[:2], *FAST[3:])
    done = _run("compare.py", str(sweep))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert done.stderr.startswith("error: no job of") and "must be >= 0" in done.stderr


@pytest.mark.parametrize("args, key", [(["retention=ewc", "retention.lambda=1000"], "retention.lambda_"),
                                       (["retention=ewc", "+retention.lamda=1000"], "retention.lambda_"),
                                       (["method.epochs_per_stag=3"], "method.epochs_per_stage"),
                                       (["+method.epoch_per_stage=3"], "method.epochs_per_stage")])
def test_a_misspelt_key_gets_one_line_and_the_closest_key(args, key):
    done = _run("train.py", *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"did you mean {key}?" in lines[0]


@pytest.mark.parametrize("args, refused", [(["+pretrain.optimizer.betas=[0.9,0.99]"], False),  # Adam takes it
                                           (["+trainer.check_val_every_n_epoch=2"], False),  # so does the Trainer
                                           (["+experiment=split_mnist"], False),  # a config group
                                           (["+selection.rul=overall"], True),  # nothing reads a new plain key
                                           (["+foo=1"], True)])
def test_a_key_added_with_plus_is_refused_where_nothing_would_read_it(args, refused):
    from seqft_lightning.cli import misspelt_key

    line = misspelt_key(args, str(REPO_ROOT / "conf"))
    assert (line is not None) == refused, line
    if refused:
        assert line.startswith(f"{args[0][1:].split('=')[0]} is not a setting")


@pytest.mark.parametrize("args, replacement", [(["method=task_arithmetic", "method.select_metric=acc"], "selection.rule"),
                                               (["method=dare", "method.merger.scaling_factor=1"], "method.merger.lambda_"),
                                               (["method=ties", "method.merger.top_k=3"], "method.merger.keep_fraction")])
def test_a_retired_key_is_named_with_what_replaced_it(args, replacement):
    from seqft_lightning.cli import misspelt_key

    line = misspelt_key(args, str(REPO_ROOT / "conf"))
    assert line.startswith(f"{args[1].split('=')[0]} is gone: ") and replacement in line


@pytest.mark.parametrize("method", ["task_arithmetic", "task_negation", "dare"])
def test_cfg_job_resolve_works(method):
    done = _run("train.py", f"method={method}", "--cfg", "job", "--resolve")
    assert done.returncode == 0, done.stderr[-1500:]
    assert "lambda_grid:" in done.stdout


def test_optuna_console_counts_trials_and_stays_quiet(tmp_path):
    done = _run("train.py", "-m", "hparams_search=ewc_optuna", "hydra.sweeper.n_trials=3", "method=joint",
                f"hydra.sweep.dir={tmp_path / 'search'}", f"paths.cache_dir={tmp_path / 'cache'}", *FAST)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = _job_lines(done.stderr)
    assert [line.split("]")[0] + "]" for line in lines] == ["[1/3]", "[2/3]", "[3/3]"]
    assert done.stderr.startswith("sweep: 3 trials, 1 at a time")
    assert not ESCAPE.search(done.stderr) and "setup plugin" not in done.stderr
    values = [m for line in lines for m in re.findall(r"(?:lr|lambda_)=([0-9.e+-]+)", line)]
    assert len(values) == 6 and all(float(m) == float(f"{float(m):.3g}") for m in values)  # 3 significant digits
    assert "search: best calibration/selection_score" in done.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_sweep_stops_its_workers_and_says_so_in_one_line(tmp_path, signum):
    """Ctrl-C, or SIGTERM (kill, a scheduler's cancel), to a sweep: its worker processes stop too (a SIGTERM used to
    kill the launcher alone, leaving the workers to run on unwatched), exit 130, one line, no metrics.json."""
    import psutil

    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "train.py", "-m", "method=sequential,joint", "seed=0,1", "pretrain.epochs=3", "logger=none",
           "trainer=cpu", f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal starts it
    try:
        launcher = psutil.Process(proc.pid)
        for _ in range(600):  # until the workers run their jobs (each writes config.json first)
            if len(list(sweep.glob("*/config.json"))) >= 2:
                break
            time.sleep(0.05)
        workers = launcher.children(recursive=True)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert workers and proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: ") and "Traceback" not in err
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [" ".join(p.cmdline()) for p in alive]
    assert not list(sweep.glob("*/metrics.json"))


def test_submitit_local_console_has_one_line_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    done = _run("train.py", "-m", "hydra/launcher=submitit_local", "method=sequential,joint", "seed=0,1",
                f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'cache'}", *FAST)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(line.split(" ")[0] for line in _job_lines(done.stderr)) == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert done.stderr.startswith("sweep: 4 jobs, 2 at a time")  # one process per stacked group (the seeds)
    assert not ESCAPE.search(done.stderr) and "Warning" not in done.stderr
    assert not list(sweep.rglob("%j"))  # no folder named after an unsubstituted job id


def test_merged_stages_keep_their_numbers(compose_cfg, tmp_path):
    from seqft_lightning.api import train

    metrics, _ = train(compose_cfg(["method=task_arithmetic", "method.vectors=[0,2]", "method.lambda_grid=[0,0.5]", *FAST],
                                   tmp_path / "run", tmp_path / "cache"))
    with open(tmp_path / "run" / "stages.csv", newline="") as handle:
        stages = sorted({int(row["stage"]) for row in csv.DictReader(handle)})
    assert stages == [0, 1, 3, 4]  # the experts of method.stages[0] and [2], the merge is stage T + 1 = 4
    assert sorted(p.name for p in (tmp_path / "run" / "confusion").iterdir()) == [f"stage_{k}.csv" for k in (0, 1, 3, 4)]


def test_do_not_fine_tune_is_the_answer_when_every_method_forgets(tmp_path):
    sweep = tmp_path / "sweep"
    done = _run("train.py", "-m", "method=sequential,joint", "seed=0,1", f"hydra.sweep.dir={sweep}",
                f"paths.cache_dir={tmp_path / 'cache'}", *FAST)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _run("compare.py", str(sweep)).returncode == 0
    report = (sweep / "compare" / "report.md").read_text()
    assert "**Best method under the selection rule: do not fine-tune (`baseline (pretrained)`)**" in report
