"""Compare finished training sweeps: load run folders, aggregate over seeds, test the study's hypothesis with
paired statistics, plot, and write a self-contained report.

Modules: :mod:`.load` (job dirs of a Hydra multirun folder), :mod:`.variants` (labels and families of method
variants), :mod:`.stats` (t-intervals, paired tests, verdicts), :mod:`.aggregate` (tables from loaded jobs),
:mod:`.plots` (PNG figures), :mod:`.report` (markdown / HTML outputs), :mod:`.document` (the document model both
renderings share), :mod:`.cli` (``main(argv)`` of ``python compare.py``). Submodules are imported lazily so that
``python compare.py`` fails fast on bad input.
"""

__all__ = ["aggregate", "cli", "document", "load", "plots", "report", "stats", "variants"]
