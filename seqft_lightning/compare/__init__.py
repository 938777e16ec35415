"""Compare finished training sweeps: load run folders, aggregate over seeds, test the
study's hypothesis with paired statistics, plot, and write a self-contained report.

Modules (one job each):

- :mod:`~seqft_lightning.compare.load`      read job dirs of a Hydra multirun folder
- :mod:`~seqft_lightning.compare.variants`  pure labelling and families of method variants
- :mod:`~seqft_lightning.compare.stats`     pure statistics (t-intervals, paired tests, verdicts)
- :mod:`~seqft_lightning.compare.aggregate` tables built from loaded jobs (pandas)
- :mod:`~seqft_lightning.compare.plots`     PNG figures (matplotlib Agg + seaborn)
- :mod:`~seqft_lightning.compare.report`    markdown / self-contained HTML rendering
- :mod:`~seqft_lightning.compare.document`  the tiny document model both renderings share
- :mod:`~seqft_lightning.compare.cli`       ``main(argv)``, wired to ``python compare.py``

File names and columns come from :mod:`seqft_lightning.contract`, atomic writes from
:mod:`seqft_lightning.io`. Submodules are imported lazily so that ``python compare.py`` fails fast on bad input.
"""

__all__ = ["aggregate", "cli", "document", "load", "plots", "report", "stats", "variants"]
