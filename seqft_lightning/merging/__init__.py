"""Model merging by state-dict algebra: task vectors and the mergers (task arithmetic, TIES, DARE,
averaging) that ``method.merger`` configs build. Sign convention: ``tau = theta_ft - theta_0``;
merged ``theta = theta_0 + lambda_ * tau`` (``lambda_`` dimensionless). Submodules import lazily:
building a merger (``mergers``) needs no torch; the tensor work (``functional``, ``task_vector``) does.
"""

from seqft_lightning.lazy import lazy_exports

_EXPORTS = {
    "seqft_lightning.merging.mergers": ["Average", "Dare", "Merger", "TaskArithmetic", "TaskVectorMerger", "Ties"],
    "seqft_lightning.merging.functional": ["dare_sparsify", "task_vectors", "ties_merge"],
    "seqft_lightning.merging.task_vector": ["TaskVector"],
}
__getattr__ = lazy_exports(_EXPORTS)
__all__ = [name for names in _EXPORTS.values() for name in names]
