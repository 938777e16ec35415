"""Model merging by state-dict algebra: task vectors, task arithmetic, TIES, DARE, averaging.

Sign convention everywhere: ``tau = theta_ft - theta_0``; merged ``theta = theta_0 + lambda * tau``.
"""

from seqft_lightning.merging.methods import (
    Average,
    Dare,
    MergeMethod,
    TaskArithmetic,
    TaskVectorMethod,
    Ties,
    dare_sparsify,
    task_vectors,
    ties_merge,
)
from seqft_lightning.merging.task_vector import TaskVector

__all__ = [
    "Average",
    "Dare",
    "MergeMethod",
    "TaskArithmetic",
    "TaskVector",
    "TaskVectorMethod",
    "Ties",
    "dare_sparsify",
    "task_vectors",
    "ties_merge",
]
