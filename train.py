"""Train one configured run (or a sweep with -m). See README.md and conf/train.yaml.

    python train.py method=joint seed=1
    python train.py -m method=sequential,joint seed=0,1,2
"""

import hydra
from omegaconf import DictConfig

import seqft_lightning  # noqa: F401  (registers the config resolvers)
from seqft_lightning.cli import run_or_exit
from seqft_lightning.config import validate_config
from seqft_lightning.methods import METHODS
from seqft_lightning.resume import completed_run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    # Checked before Lightning's slow import: bad configs fail, finished jobs skip, in < 1 s.
    run_or_exit(lambda: validate_config(cfg, set(METHODS)))
    done = completed_run(cfg)
    if done is not None:
        return done["final"]["test/acc"]
    from seqft_lightning.pipeline import train

    metrics, _ = run_or_exit(lambda: train(cfg))
    return metrics["final"]["test/acc"]


if __name__ == "__main__":
    main()
