"""Command line: ``python compare.py [SWEEP_DIR] [--outputs DIR]``.

Reads every job dir of a sweep, writes ``<SWEEP_DIR>/compare/`` (summary.csv, summary.md,
hypothesis.md, plots/*.png, report.md, report.html) and logs the report path.
Exit codes: 0 = report written, 2 = bad input (missing folder, no job dirs).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("seqft_lightning.compare")

EXIT_OK = 0
EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """Input the user must fix; reported as one line on stderr with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compare.py",
        description="Compare the jobs of a training sweep (Hydra multirun folder): tables over seeds, "
                    "paired test of 'sequential beats joint', plots, and a self-contained report.")
    parser.add_argument("sweep_dir", nargs="?", type=Path, metavar="SWEEP_DIR",
                        help="sweep folder holding job dirs (default: the newest sweep under outputs/multirun)")
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), metavar="DIR",
                        help="outputs root searched when SWEEP_DIR is omitted: the newest sweep under DIR/multirun "
                             "(default: ./outputs)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _setup_logging(verbose: bool) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    level = logging.DEBUG if verbose else logging.INFO
    log.setLevel(level)
    # third-party chatter (matplotlib font manager, PIL) stays at WARNING
    for noisy in ("matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def resolve_sweep_dir(sweep_dir: Path | None, outputs: Path) -> Path:
    """The sweep folder to compare; raises :class:`BadInput` with a one-line message."""
    from seqft_lightning.compare.load import newest_sweep_dir

    if sweep_dir is not None:
        if not sweep_dir.exists():
            raise BadInput(f"sweep folder does not exist: {sweep_dir}")
        if not sweep_dir.is_dir():
            raise BadInput(f"not a folder: {sweep_dir}")
        return sweep_dir
    if not outputs.is_dir():
        raise BadInput(f"no sweep folder given and outputs folder does not exist: {outputs.resolve()}")
    found = newest_sweep_dir(outputs)
    if found is None:
        raise BadInput(f"no sweep folder given and none found under {outputs.resolve()}")
    log.info("no sweep folder given; using the newest one: %s", found)
    return found


def _remove_stale_plots(plots_dir: Path, keep: set[str]) -> None:
    """Delete PNGs of an earlier comparison run that this run did not redraw."""
    if not plots_dir.is_dir():
        return
    for png in plots_dir.glob("*.png"):
        if png.name not in keep:
            log.info("removing stale plot from an earlier run: %s", png)
            png.unlink()


def run(sweep_dir: Path) -> Path:
    """Analyse ``sweep_dir`` and write its comparison; returns the path of report.md."""
    from seqft_lightning.compare.load import find_job_dirs, load_jobs

    if not find_job_dirs(sweep_dir):
        raise BadInput(f"no job dirs (folders with .hydra/config.yaml) under {sweep_dir}")
    jobs = load_jobs(sweep_dir)

    from seqft_lightning.compare.aggregate import analyse
    from seqft_lightning.compare.plots import make_all_plots
    from seqft_lightning.compare.report import write_outputs

    analysis = analyse(jobs)
    log.info("%d job(s): %d finished, %d failed/unfinished; %d variant(s): %s",
             len(jobs), len(analysis.finished), len(analysis.failed), len(analysis.variants),
             ", ".join(analysis.variants) or "none")
    if not analysis.finished:
        log.warning("no job of %s has finished; the report only lists the failures", sweep_dir)
    out_dir = sweep_dir / "compare"
    plots = make_all_plots(analysis, out_dir / "plots")
    for p in plots:
        if p.path is None:
            log.info("plot %s skipped: %s", p.key, p.note)
    _remove_stale_plots(out_dir / "plots", {Path(p.path).name for p in plots if p.path is not None})
    paths = write_outputs(analysis, sweep_dir, out_dir, plots)
    for line in [r for r in analysis.hypothesis]:
        log.info("hypothesis (%s vs %s, %s): %s", line["variant"], line["reference"], line["metric"], line["verdict"])
    return paths["report.md"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        sweep_dir = resolve_sweep_dir(args.sweep_dir, args.outputs)
        report = run(sweep_dir)
    except BadInput as exc:
        log.error("%s", exc)
        return EXIT_BAD_INPUT
    log.info("report: %s", report)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
