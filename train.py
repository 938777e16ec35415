"""Train one configured run (or a sweep with -m). See README.md and conf/train.yaml.

    python train.py method=joint seed=1
    python train.py -m method=sequential,joint seed=0,1,2
"""

import contextlib
import signal
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

import seqft_lightning  # noqa: F401  (registers the config resolvers)
from seqft_lightning.api import train, write_config
from seqft_lightning.cli import in_sweep, misspelt_key, run_or_exit
from seqft_lightning.errors import EXIT_USER_ERROR


# conf/hydra/launcher/submitit_local.yaml deliberately takes the name of the submitit plugin's config
# (same keys, our launcher class); Hydra validates it against that schema and notes the deprecation.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/submitit_local' is validated against ConfigStore schema")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    sweep = in_sweep()
    if sweep:  # per-epoch bars only for single runs; a sweep shows one line per job
        with open_dict(cfg):
            cfg.trainer.enable_progress_bar = False
    # In a sweep a refused job is listed as failed and the other jobs run (see README, "Bad input").
    result = run_or_exit(lambda: train(cfg), job_dir=cfg.paths.output_dir if sweep else None)
    if result is None:  # refused: its error.json says why; its config.json labels it in compare
        with contextlib.suppress(Exception):  # an unresolvable config: error.json names what is wrong
            write_config(cfg, cfg.paths.output_dir)
        return None  # a sweeper (Optuna) records the trial as failed (not float-castable) and goes on
    if result[0].get("divergence"):  # left out of compare's means: a search must not choose it either
        return None  # a failed trial, as above
    # What a sweeper optimises: a calibration metric (validated), never a test one.
    return result[0]["final"].get(cfg.optimized_metric)


if __name__ == "__main__":
    # A misspelt key gets one line and exit 2 (Hydra's own refusal exits 1 with a `+key` hint).
    if (typo := misspelt_key(sys.argv[1:], str(Path(__file__).resolve().parent / "conf"))) is not None:
        sys.stderr.write(f"error: {typo}\n")
        sys.exit(EXIT_USER_ERROR)
    # SIGTERM (`kill`, a scheduler's cancel) stops like Ctrl-C: a sweep's launcher then stops its worker
    # processes too, instead of dying alone and leaving them to finish (or not) unwatched.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        main()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: runs without metrics.json did not finish (nothing of theirs is complete); "
                         "run the same command with resume=true to redo only those\n")
        sys.exit(130)
