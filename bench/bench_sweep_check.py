"""Benchmark: the sweeper's start-up check of ``make run``'s jobs, Hydra's way and the stacked sweeper's way.

Before a sweep's first job starts, Hydra's basic sweeper composes every job's config to check that it composes
(serially, in the launching process, while every core waits). ``hydra/sweeper=stacked`` composes the first job of each
stack group and checks the others on a copy with their values set (``sweep_stack.alike_sweep_config``). This script
reads the sweeps of ``make -n run``, and times both checks over all their jobs, in this process (seconds of CPU, so
the figure does not depend on what else the machine runs), alternating ``--repeats`` times.

    python bench/bench_sweep_check.py [--repeats 2]

Run it by hand; it is not a test (``tests/test_stacking.py`` checks that the copies are Hydra's configs).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import create_config_search_path
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobRuntime
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, RunMode

import seqft_lightning  # noqa: F401  (registers the project's resolvers)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # hydra_plugins/ beside train.py, as for train.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    JobRuntime.instance().set("name", "train")
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(ROOT / "conf")))
    loader.load_configuration("train", [], run_mode=RunMode.MULTIRUN)  # Hydra finds its plugins (ours among them) first
    from hydra_plugins.seqft_launcher import StackingBasicSweeper

    sweeps = []
    for line in subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines():
        words = shlex.split(line)
        if len(words) > 1 and words[1] == "train.py":
            arguments = [w for w in words[2:] if w != "-m"]
            master = loader.load_configuration("train", [a for a in arguments if a.startswith("hydra.")], run_mode=RunMode.MULTIRUN)
            task = OverridesParser.create().parse_overrides([a for a in arguments if not a.startswith("hydra.")])
            sweeps.append((master, BasicSweeper.split_arguments(task, None)[0]))
    print(f"{len(sweeps)} sweeps, {sum(len(batch) for _, batch in sweeps)} jobs")
    for _ in range(args.repeats):
        for name, check in (("hydra/sweeper=basic", Sweeper.validate_batch_is_legal),
                            ("hydra/sweeper=stacked", StackingBasicSweeper.validate_batch_is_legal)):
            started = time.process_time()
            for master, batch in sweeps:
                sweeper = StackingBasicSweeper(max_batch_size=None, params=None)
                sweeper.config, sweeper.hydra_context = master, HydraContext(config_loader=loader, callbacks=None)
                check(sweeper, batch)
            print(f"{name:22s} {time.process_time() - started:6.1f} s CPU")


if __name__ == "__main__":
    main()
