"""Model merging by state-dict algebra: task vectors and the mergers (task arithmetic, TIES,
DARE, averaging) that ``method.merger`` configs build.

Sign convention everywhere: ``tau = theta_ft - theta_0``; merged ``theta = theta_0 + lambda_ * tau``
(``lambda_`` dimensionless).
"""

from seqft_lightning.merging.mergers import (
    Average,
    Dare,
    Merger,
    TaskArithmetic,
    TaskVectorMerger,
    Ties,
    dare_sparsify,
    task_vectors,
    ties_merge,
)
from seqft_lightning.merging.task_vector import TaskVector

__all__ = [
    "Average",
    "Dare",
    "Merger",
    "TaskArithmetic",
    "TaskVector",
    "TaskVectorMerger",
    "Ties",
    "dare_sparsify",
    "task_vectors",
    "ties_merge",
]
