"""What decides a result's bits besides its config: the code that computed it and the CPU kernels
(no torch import here: both run before any heavy import).

* :func:`code_version`: a fingerprint of the training code (the package's ``.py`` files but
  ``compare/``). The result hash ``resume`` compares and the baseline cache key include it, so
  results and baselines from other code are never served.
* :func:`pin_cpu_kernels`: torch (ATen) and MKL choose their CPU code path by processor at load
  time, and the paths round differently. ``cpu_kernels=avx2`` (default) pins both to the AVX2 path
  (``ATEN_CPU_CAPABILITY``, ``MKL_CBWR``) before torch loads; ``native`` leaves the choice to them."""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path

from seqft_lightning.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
#: Sub-packages of the package that never change a run's numbers.
NOT_TRAINING_CODE = ("compare",)

#: ``cpu_kernels`` choice -> the environment that pins it (read by torch and MKL when they load).
KERNEL_ENVIRONMENTS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}, "native": {}}


def training_sources(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The package's ``.py`` files that can move a result, sorted (``compare/`` left out)."""
    return sorted(p for p in package_dir.rglob("*.py")
                  if p.relative_to(package_dir).parts[0] not in NOT_TRAINING_CODE and "__pycache__" not in p.parts)


@functools.lru_cache(maxsize=None)
def code_version(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 (first 12 hex digits) of the training code: each file's path and bytes."""
    digest = hashlib.sha256()
    for path in training_sources(package_dir):
        digest.update(str(path.relative_to(package_dir).as_posix()).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def pin_cpu_kernels(choice: str | None) -> None:
    """Pin torch's and MKL's CPU code path to ``choice``: before torch is imported, set the
    environment; after, check the process already runs with it, else refuse (one line, how to fix)."""
    choice = "native" if choice is None else str(choice)
    if choice not in KERNEL_ENVIRONMENTS:
        raise ConfigError(f"cpu_kernels={choice} is unknown; choose one of {sorted(KERNEL_ENVIRONMENTS)}")
    wanted = KERNEL_ENVIRONMENTS[choice]
    if all(os.environ.get(k) == v for k, v in wanted.items()):
        return
    if "torch" in sys.modules:
        settings = " ".join(f"{k}={v}" for k, v in wanted.items())
        raise ConfigError(f"cpu_kernels={choice}: torch was loaded in this process before its CPU kernels could be pinned; "
                          f"start Python with {settings} in the environment, or use cpu_kernels=native")
    os.environ.update(wanted)
