"""Model merging by state-dict algebra: task vectors and the mergers (task arithmetic, TIES, DARE,
averaging) that ``method.merger`` configs build. Sign convention: ``tau = theta_ft - theta_0``;
merged ``theta = theta_0 + lambda_ * tau`` (``lambda_`` dimensionless). The names (``__init__.pyi``)
load on first use through ``lazy_loader``: building a merger (``mergers``) needs no torch."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
