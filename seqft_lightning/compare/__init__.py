"""Compare finished training sweeps: load run folders, aggregate over seeds, test the study's hypothesis with
paired statistics, plot, and write a self-contained report.

Modules: :mod:`.load` (job dirs of a multirun folder, JSON and CSV only), :mod:`.variants` (labels and families),
:mod:`.stats` (t-intervals, paired tests, verdicts), :mod:`.aggregate` (tables from loaded jobs), :mod:`.plots`
(figures and the data they draw), :mod:`.report` (markdown / HTML from the Jinja2 templates in ``templates/``),
:mod:`.cli` (``main(argv)`` of ``python compare.py``).
"""
