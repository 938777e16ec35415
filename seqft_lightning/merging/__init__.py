"""Model merging by state-dict algebra: task vectors and the mergers (task arithmetic, TIES,
DARE, averaging) that ``method.merger`` configs build.

Sign convention everywhere: ``tau = theta_ft - theta_0``; merged ``theta = theta_0 + lambda_ * tau``
(``lambda_`` dimensionless). Submodules import lazily: building a merger (``mergers``) needs no
torch; the tensor work (``functional``, ``task_vector``) imports it.
"""

_EXPORTS = {
    "Average": "seqft_lightning.merging.mergers",
    "Dare": "seqft_lightning.merging.mergers",
    "Merger": "seqft_lightning.merging.mergers",
    "TaskArithmetic": "seqft_lightning.merging.mergers",
    "TaskVectorMerger": "seqft_lightning.merging.mergers",
    "Ties": "seqft_lightning.merging.mergers",
    "dare_sparsify": "seqft_lightning.merging.functional",
    "task_vectors": "seqft_lightning.merging.functional",
    "ties_merge": "seqft_lightning.merging.functional",
    "TaskVector": "seqft_lightning.merging.task_vector",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)


__all__ = list(_EXPORTS)
