from seqft_lightning.models.components.cnn import CNN
from seqft_lightning.models.components.mlp import MLP

__all__ = ["CNN", "MLP"]
