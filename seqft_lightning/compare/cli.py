"""``python compare.py [SWEEP_DIR] [--outputs DIR] [--rule RULE] [--delta D] [--include-diverged] [-v]``.

Writes ``<SWEEP_DIR>/compare/``: summary.csv, tuned.csv, summary.md, hypothesis.md, plots/*.png, report.md and
report.html. Exit status 0: report written; bad input: one line ``error: ...`` on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import logging
from itertools import groupby
from collections.abc import Sequence
from pathlib import Path

from seqft_lightning.cli import ConsoleFilter, run_or_exit
from seqft_lightning.errors import SeqftError
from seqft_lightning.selection import RULES

log = logging.getLogger("seqft_lightning.compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compare.py", description="Compare the jobs of a training sweep (a Hydra "
                                     "multirun folder): tables over seeds, paired tests, plots and a report.")
    parser.add_argument("sweep_dir", nargs="?", type=Path, metavar="SWEEP_DIR",
                        help="sweep folder holding job dirs (default: the newest sweep under --outputs)")
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), metavar="DIR",
                        help="searched for the newest sweep (DIR/multirun) without SWEEP_DIR (default: ./outputs)")
    parser.add_argument("--rule", choices=RULES, help="selection rule of the tuned variants and the best method "
                        "(default: the jobs' selection.rule, which must agree)")
    parser.add_argument("--delta", type=float, metavar="D", help="the rule's tolerance on calibration retained "
                        "accuracy, a fraction (0.01 = 1 pp; default: the jobs' selection.delta)")
    parser.add_argument("--include-diverged", action="store_true", help="let runs whose metrics.json records a "
                        "divergence into every statistic (default: listed in the report, kept in summary.csv only)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def resolve_sweep_dir(sweep_dir: Path | None, outputs: Path) -> Path:
    """The sweep folder to compare; raises :class:`SeqftError` with a one-line message."""
    from seqft_lightning.compare.load import newest_sweep_dir

    if sweep_dir is not None and not sweep_dir.is_dir():
        raise SeqftError(f"sweep folder {sweep_dir} does not exist or is not a folder: pass a Hydra multirun folder, "
                         "e.g. outputs/multirun/reference_study")
    if sweep_dir is None:
        if (sweep_dir := newest_sweep_dir(outputs)) is None:
            raise SeqftError(f"no sweep folder given and none found under {outputs.resolve()}: pass SWEEP_DIR or "
                             "--outputs DIR")
        log.info("no sweep folder given; using the newest one: %s", sweep_dir)
    return sweep_dir


def run(sweep_dir: Path, rule: str | None = None, delta: float | None = None, include_diverged: bool = False) -> Path:
    """Analyse ``sweep_dir`` and write its comparison; returns report.md's path."""
    from seqft_lightning.compare.load import load_jobs

    jobs = load_jobs(sweep_dir)  # refuses a folder without finished jobs before the heavy imports
    from seqft_lightning.compare.aggregate import analyse
    from seqft_lightning.compare.plots import make_all_plots
    from seqft_lightning.compare.report import write_outputs

    analysis = analyse(jobs, rule, delta, include_diverged)
    if analysis.diverged:
        log.warning("%d run(s) diverged; %s", len(analysis.diverged), "included (--include-diverged)"
                    if include_diverged else "left out of every statistic (--include-diverged lets them in)")
    log.info("%d variant(s), %d tuned on calibration (%s)", len(analysis.variants), len(analysis.tuned),
             analysis.selection.short())
    plots = make_all_plots(analysis, sweep_dir / "compare" / "plots")
    for png in (sweep_dir / "compare" / "plots").glob("*.png"):
        if png.name not in {Path(p.path).name for p in plots if p.path is not None}:
            png.unlink()  # drawn by an earlier run
    paths = write_outputs(analysis, sweep_dir, sweep_dir / "compare", plots)
    for (variant, reference), tests in groupby([*analysis.hypothesis, *analysis.tuned_hypothesis],
                                              key=lambda r: (r["variant"], r["reference"])):  # one line per pair
        log.info("hypothesis (%s vs %s): %s", variant, reference,
                 ", ".join(f"{r['metric']} {r['verdict']}" for r in tests))
    if (best := analysis.best) is not None:
        log.info("best method under the selection rule: %s%s; estimate on the estimation part: target %.2f %%, "
                 "retained %.2f %%", best["variant"], " (fallback)" if best["fallback"] else "",
                 100 * best["estimate"]["acc_target"], 100 * best["estimate"]["acc_retained"])
    return paths["report.md"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0, or exits with status 2 and one ``error: ...`` line on bad input."""
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()  # stderr
    handler.addFilter(ConsoleFilter())  # run_or_exit writes the error line itself
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", handlers=[handler])  # unless configured
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    for noisy in ("matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    report = run_or_exit(lambda: run(resolve_sweep_dir(args.sweep_dir, args.outputs), args.rule, args.delta,
                                     args.include_diverged))
    log.info("report: %s", report)
    return 0
