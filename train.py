"""Train one configured run (or a sweep with -m). See README.md and conf/train.yaml.

    python train.py method=joint seed=1
    python train.py -m method=sequential,joint seed=0,1,2
"""

import hydra
from omegaconf import DictConfig

import seqft_lightning  # noqa: F401  (registers the config resolvers)
from seqft_lightning.api import train
from seqft_lightning.cli import run_or_exit


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    metrics, _ = run_or_exit(lambda: train(cfg))
    return metrics["final"]["test/acc"]


if __name__ == "__main__":
    main()
