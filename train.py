"""Train one configured run (or a sweep with -m). See README.md and conf/train.yaml.

    python train.py method=joint seed=1
    python train.py -m method=sequential,joint seed=0,1,2
"""

import hydra
from omegaconf import DictConfig, open_dict

import seqft_lightning  # noqa: F401  (registers the config resolvers)
from seqft_lightning.api import train
from seqft_lightning.cli import in_sweep, run_or_exit


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    if in_sweep():  # per-epoch bars only for single runs; a sweep shows one line per job
        with open_dict(cfg):
            cfg.trainer.enable_progress_bar = False
    metrics, _ = run_or_exit(lambda: train(cfg))
    # What a sweeper optimises: a calibration metric (validated), never a test one.
    return metrics["final"].get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
