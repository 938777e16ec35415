"""The four MNIST IDX files: unpack the vendored ``.gz`` copies and verify every byte.

The repository ships ``data/mnist/*.gz``. ``ensure_mnist_raw`` unpacks them into the layout
torchvision's :class:`~torchvision.datasets.MNIST` reads (``<root>/MNIST/raw/<name>``) and checks
the MD5 of each *unpacked* file against the official sums. Only when a vendored file is missing
does it fall back to torchvision's download (which needs network access).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from pathlib import Path

from seqft_lightning.errors import DataError
from seqft_lightning.io import atomic_write

log = logging.getLogger(__name__)

# MD5 of the official *unpacked* IDX files (the vendored .gz wrapping differs from the official one).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

_RESTORE_HINT = "restore it with `git checkout -- {path}` (or delete it to let torchvision download MNIST)"


# Files verified by this process, keyed by (path, size, mtime): a sweep of many jobs in one
# process (Hydra's basic launcher) hashes each file once. A changed file is hashed again.
_VERIFIED: set[tuple[str, int, int]] = set()


def file_identity(path: Path) -> tuple[str, int, int]:
    """``(resolved path, size, mtime_ns)``: changes whenever the file is replaced or edited."""
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def md5_of(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def raw_dir(root: str | os.PathLike) -> Path:
    """Folder where torchvision's ``MNIST(root)`` looks for the unpacked IDX files."""
    return Path(root) / "MNIST" / "raw"


def _unpack(gz_path: Path, dest: Path) -> None:
    """Unpack ``gz_path`` to ``dest`` atomically, refusing a corrupt or truncated archive."""

    def copy(out) -> None:
        with gzip.open(gz_path, "rb") as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)

    try:
        atomic_write(dest, copy, mode="wb")
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{gz_path} is corrupt or truncated ({err}); " + _RESTORE_HINT.format(path=gz_path)) from err


def train_label_counts(raw: Path, num_classes: int = 10) -> list[int]:
    """Images per class in the verified ``train-labels-idx1-ubyte`` under ``raw``: an IDX1 file is
    a big-endian header (magic 2049, item count) followed by one label byte per image."""
    labels = (raw / "train-labels-idx1-ubyte").read_bytes()[8:]
    return [labels.count(k) for k in range(num_classes)]


def _download_with_torchvision(root: Path, vendored_dir: Path) -> None:
    from torchvision.datasets import MNIST

    log.warning("vendored MNIST files missing; falling back to torchvision's download into %s", root)
    try:
        MNIST(str(root), train=True, download=True)
        MNIST(str(root), train=False, download=True)
    except Exception as err:  # network errors come in many types; the user needs one line
        raise DataError(
            f"MNIST files are missing from {vendored_dir} and torchvision's download failed ({err}); "
            "restore them with `git checkout -- data/mnist`"
        ) from err


def ensure_mnist_raw(vendored_dir: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Make ``<root>/MNIST/raw`` hold the four verified IDX files; return that folder.

    An unpacked file whose MD5 does not match is unpacked again from the vendored archive; an
    archive that unpacks to the wrong bytes is refused with a :class:`DataError`.
    """
    vendored_dir, root = Path(vendored_dir), Path(root)
    target = raw_dir(root)
    missing_archives = [name for name in MNIST_MD5 if not (vendored_dir / f"{name}.gz").is_file()]
    if missing_archives and not all((target / name).is_file() for name in MNIST_MD5):
        _download_with_torchvision(root, vendored_dir)
    for name, expected in MNIST_MD5.items():
        dest = target / name
        if dest.is_file() and (file_identity(dest) in _VERIFIED or md5_of(dest) == expected):
            _VERIFIED.add(file_identity(dest))
            continue
        archive = vendored_dir / f"{name}.gz"
        if not archive.is_file():
            raise DataError(
                f"{dest} has MD5 {md5_of(dest) if dest.is_file() else 'missing'}, expected {expected}, "
                f"and {archive} is missing to unpack it again; " + _RESTORE_HINT.format(path=archive)
            )
        log.info("unpacking %s", archive)
        _unpack(archive, dest)
        actual = md5_of(dest)
        if actual != expected:
            dest.unlink()
            raise DataError(
                f"{archive} unpacks to MD5 {actual}, expected {expected} (corrupt file); "
                + _RESTORE_HINT.format(path=archive)
            )
        _VERIFIED.add(file_identity(dest))
    return target
