"""Compare finished training sweeps: load run folders, aggregate over seeds, test the
study's hypothesis with paired statistics, plot, and write a self-contained report.

Modules (one job each):

- :mod:`~seqft_lightning.compare.load`      read job dirs of a Hydra multirun folder
- :mod:`~seqft_lightning.compare.variants`  pure labelling of method variants (config minus seed)
- :mod:`~seqft_lightning.compare.stats`     pure statistics (t-intervals, paired tests, verdicts)
- :mod:`~seqft_lightning.compare.aggregate` tables built from loaded jobs (pandas)
- :mod:`~seqft_lightning.compare.plots`     PNG figures (matplotlib Agg + seaborn)
- :mod:`~seqft_lightning.compare.report`    markdown / self-contained HTML rendering
- :mod:`~seqft_lightning.compare.fileio`    atomic file writes
- :mod:`~seqft_lightning.compare.cli`       ``main(argv)``, wired to ``python compare.py``

Submodules are imported lazily so that ``python compare.py`` fails fast on bad input.
"""

__all__ = ["aggregate", "cli", "fileio", "load", "plots", "report", "stats", "variants"]
