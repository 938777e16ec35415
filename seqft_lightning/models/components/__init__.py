from seqft_lightning.models.components.mlp import MLP

__all__ = ["MLP"]
