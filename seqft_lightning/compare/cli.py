"""Command line: ``python compare.py [SWEEP_DIR] [--outputs DIR] [--rule RULE] [--delta D] [--include-diverged]``.

Writes ``<SWEEP_DIR>/compare/`` (summary.csv, tuned.csv, summary.md, hypothesis.md, plots/*.png, report.md,
report.html). Knobs are chosen per seed on the selection part of the calibration split by the jobs' selection rule
(which must agree), or by ``--rule``/``--delta``. Runs that diverged are left out of every statistic unless
``--include-diverged``. Exit status 0 = report written; bad input (:class:`~seqft_lightning.errors.SeqftError`)
gives one line ``error: ...`` on stderr and exit :data:`~seqft_lightning.errors.EXIT_USER_ERROR` (2).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from seqft_lightning.cli import ConsoleFilter, run_or_exit
from seqft_lightning.contract import CONFIG_FILE
from seqft_lightning.errors import SeqftError
from seqft_lightning.selection import RULES

log = logging.getLogger("seqft_lightning.compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compare.py", description="Compare the jobs of a training sweep (Hydra "
                                     "multirun folder): tables over seeds, paired test of 'sequential beats joint', "
                                     "plots, and a self-contained report.")
    parser.add_argument("sweep_dir", nargs="?", type=Path, metavar="SWEEP_DIR",
                        help="sweep folder holding job dirs (default: the newest sweep under outputs/multirun)")
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), metavar="DIR",
                        help="outputs root searched when SWEEP_DIR is omitted: the newest sweep under DIR/multirun "
                             "(default: ./outputs)")
    parser.add_argument("--rule", choices=RULES, default=None,
                        help="selection rule for the tuned variants and the best method (default: the jobs' "
                             "selection.rule, which must agree across jobs)")
    parser.add_argument("--delta", type=float, default=None, metavar="D",
                        help="the rule's tolerance on calibration retained accuracy, a fraction (0.01 = 1 pp; "
                             "default: the jobs' selection.delta)")
    parser.add_argument("--include-diverged", action="store_true",
                        help="let runs whose metrics.json records a divergence into every mean, CI, choice and verdict "
                             "(default: they are listed in the report and kept in summary.csv only)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (one line per job read)")
    return parser


def _setup_logging(verbose: bool) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(ConsoleFilter())  # run_or_exit writes the error line itself
        root.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def resolve_sweep_dir(sweep_dir: Path | None, outputs: Path) -> Path:
    """The sweep folder to compare; raises :class:`SeqftError` with a one-line message."""
    from seqft_lightning.compare.load import newest_sweep_dir

    if sweep_dir is not None:
        if not sweep_dir.is_dir():
            raise SeqftError(f"sweep folder {sweep_dir} does not exist or is not a folder: pass a Hydra "
                             "multirun folder, e.g. outputs/multirun/reference_study")
        return sweep_dir
    found = newest_sweep_dir(outputs)
    if found is None:
        raise SeqftError(f"no sweep folder given and none found under {outputs.resolve()}: pass SWEEP_DIR "
                         "or --outputs DIR")
    log.info("no sweep folder given; using the newest one: %s", found)
    return found


def run(sweep_dir: Path, rule: str | None = None, delta: float | None = None, include_diverged: bool = False) -> Path:
    """Analyse ``sweep_dir`` and write its comparison; returns the path of report.md. ``rule``/``delta``
    override the jobs' selection rule (:func:`~.aggregate.selection_rule`); ``include_diverged`` lets diverged runs
    into the statistics."""
    from seqft_lightning.compare.load import find_job_dirs, load_jobs, report_jobs

    if not find_job_dirs(sweep_dir):
        raise SeqftError(f"no job dirs (folders with {CONFIG_FILE}) under {sweep_dir}: pass a sweep folder")
    jobs = load_jobs(sweep_dir, report=False)
    if not any(job.ok for job in jobs):  # one line, not one warning per failed job first
        failed = "; ".join(f"{j.rel}: {j.reason}" for j in jobs[:2])
        raise SeqftError(f"no job of {sweep_dir} has finished, nothing to compare ({len(jobs)} job(s), e.g. {failed}); "
                         "fix and rerun the sweep (resume=true redoes only the unfinished jobs)")
    report_jobs(jobs)
    from seqft_lightning.compare.aggregate import analyse
    from seqft_lightning.compare.plots import make_all_plots
    from seqft_lightning.compare.report import write_outputs

    analysis = analyse(jobs, rule, delta, include_diverged)
    if analysis.diverged:
        log.warning("%d run(s) diverged; %s", len(analysis.diverged), "included (--include-diverged)"
                    if include_diverged else "left out of every statistic (--include-diverged lets them in)")
    log.info("%d variant(s), %d tuned on calibration (%s)", len(analysis.variants), len(analysis.tuned),
             analysis.selection.short())
    if not analysis.finished:
        log.warning("every finished job of %s diverged; the report only lists them (--include-diverged "
                    "compares them)", sweep_dir)
    out_dir = sweep_dir / "compare"
    plots = make_all_plots(analysis, out_dir / "plots")
    for p in plots:
        if p.path is None:
            log.info("plot %s skipped: %s", p.key, p.note)
    drawn = {Path(p.path).name for p in plots if p.path is not None}
    for png in (out_dir / "plots").glob("*.png"):
        if png.name not in drawn:  # drawn by an earlier run
            log.info("removing stale plot from an earlier run: %s", png)
            png.unlink()
    paths = write_outputs(analysis, sweep_dir, out_dir, plots)
    verdicts: dict[tuple[str, str], list[str]] = {}  # one console line per compared pair
    for r in [*analysis.hypothesis, *analysis.tuned_hypothesis]:
        verdicts.setdefault((r["variant"], r["reference"]), []).append(f"{r['metric']} {r['verdict']}")
    for (variant, reference), texts in verdicts.items():
        log.info("hypothesis (%s vs %s): %s", variant, reference, ", ".join(texts))
    if analysis.best is not None:
        estimate = analysis.best["estimate"]
        log.info("best method under the selection rule: %s%s; estimate on the estimation part: target %.2f %%, "
                 "retained %.2f %%", analysis.best["variant"], " (fallback)" if analysis.best["fallback"] else "",
                 100 * estimate["acc_target"], 100 * estimate["acc_retained"])
    return paths["report.md"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0, or exits with status 2 and one ``error: ...`` line on bad input."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    report = run_or_exit(lambda: run(resolve_sweep_dir(args.sweep_dir, args.outputs), args.rule, args.delta,
                                     args.include_diverged))
    log.info("report: %s", report)
    return 0
