"""The four IDX files of an MNIST-format dataset: unpack the local ``.gz`` copies, verify every byte.
An :class:`IDXDataset` entry of :data:`DATASETS` names the MD5 of each *unpacked* file (``.gz``
wrappings may differ from the official ones), the folder torchvision's class of that name reads
(``<root>/<folder>/raw/<name>``) and how a user gets the files back. MNIST ships with the repository
(``data/mnist/*.gz``; a missing archive falls back to torchvision's download); Fashion-MNIST is read
from ``data.files_dir`` and never downloaded at run time (:mod:`seqft_lightning.data.fetch` does)."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from seqft_lightning.errors import DataError
from seqft_lightning.io import atomic_write_bytes

log = logging.getLogger(__name__)

REPO_ARCHIVES = "data/mnist"  # where the repository vendors the MNIST archives

# MD5 of the official *unpacked* IDX files (the vendored .gz wrapping differs from the official one).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# MD5 of the official Fashion-MNIST release's files once unpacked (Xiao, Rasul & Vollgraf 2017);
# copies re-compressed by a Linux distribution have other .gz sums but these unpacked ones.
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


@dataclass(frozen=True)
class IDXDataset:
    """One MNIST-format dataset: its config name, torchvision's class (and folder) name, the MD5s
    of its unpacked files, how to get an archive back (``{path}``: the archive, ``{dir}``: its
    folder) and whether a missing archive falls back to torchvision's download."""

    name: str
    folder: str
    md5: Mapping[str, str]
    restore: str
    download_fallback: bool = False


MNIST_FILES = IDXDataset("mnist", "MNIST", MNIST_MD5, "restore it with `git checkout -- {path}` (or delete it to let "
                         "torchvision download MNIST)", download_fallback=True)
FASHION_MNIST_FILES = IDXDataset("fashion_mnist", "FashionMNIST", FASHION_MNIST_MD5,
                                 "fetch the files with `python -m seqft_lightning.data.fetch fashion_mnist --to {dir}`")
DATASETS = {d.name: d for d in (MNIST_FILES, FASHION_MNIST_FILES)}
# The data module classes (``_target_`` suffixes) that read each dataset, and the config key of the
# folder that holds its archives: ``plan.check_data`` verifies the files before Lightning loads.
DATAMODULES = {"MNISTTaskDataModule": ("mnist", "vendored_dir"), "FashionMNISTTaskDataModule": ("fashion_mnist", "files_dir")}


# Files verified by this process, keyed by (path, size, mtime): a sweep of many jobs in one
# process (Hydra's basic launcher) hashes each file once. A changed file is hashed again.
_VERIFIED: set[tuple[str, int, int]] = set()


def file_identity(path: Path) -> tuple[str, int, int]:
    """``(resolved path, size, mtime_ns)``: changes whenever the file is replaced or edited."""
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(dataset: IDXDataset, root: str | os.PathLike, failure: str) -> None:
    """torchvision's download of ``dataset`` into ``root`` (it checks the official archives' MD5s);
    a failure raises :class:`DataError` with the message ``failure`` (``{err}``: the error)."""
    from torchvision import datasets

    try:
        for train in (True, False):
            getattr(datasets, dataset.folder)(str(root), train=train, download=True)
    except Exception as err:  # network errors come in many types; the user needs one line
        raise DataError(failure.format(err=err)) from err


def train_label_counts(raw: Path, num_classes: int = 10) -> list[int]:
    """Images per class in the verified ``train-labels-idx1-ubyte`` under ``raw``: an IDX1 file is
    a big-endian header (magic 2049, item count) followed by one label byte per image."""
    labels = (raw / "train-labels-idx1-ubyte").read_bytes()[8:]
    return [labels.count(k) for k in range(num_classes)]


def ensure_raw(dataset: IDXDataset | str, source_dir: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Make ``<root>/<folder>/raw`` hold the four verified IDX files of ``dataset`` (an entry or name
    of :data:`DATASETS`), unpacked from ``<source_dir>/<name>.gz``; return that folder. A file whose MD5
    does not match is unpacked again; an archive missing (without a download fallback), corrupt or
    unpacking to the wrong bytes is refused with a one-line :class:`DataError` saying how to get it back."""
    dataset = DATASETS[dataset] if isinstance(dataset, str) else dataset
    source_dir, root = Path(source_dir), Path(root)
    target = root / dataset.folder / "raw"  # where torchvision's `MNIST(root)` (`FashionMNIST`, ...) reads them

    def hint(archive: Path) -> str:
        return dataset.restore.format(path=archive, dir=source_dir)

    missing_archives = [source_dir / f"{name}.gz" for name in dataset.md5 if not (source_dir / f"{name}.gz").is_file()]
    if missing_archives and not dataset.download_fallback:
        where = "the folder does not exist" if not source_dir.is_dir() else f"{len(missing_archives)} of the 4 archives are missing"
        raise DataError(f"{missing_archives[0]} is missing ({where}; nothing is downloaded at run time); {hint(missing_archives[0])}")
    if missing_archives and not all((target / name).is_file() for name in dataset.md5):
        log.warning("vendored %s files missing; falling back to torchvision's download into %s", dataset.folder, root)
        vendored = source_dir.resolve() == (Path(__file__).resolve().parents[2] / REPO_ARCHIVES).resolve()
        restore = f"restore them with `git checkout -- {REPO_ARCHIVES}`" if vendored else \
            f"put the four .gz archives back into {source_dir}"
        failure = f"{dataset.folder} files are missing from {source_dir} and torchvision's download failed ({{err}}); "
        download(dataset, root, failure + restore.replace("{", "{{").replace("}", "}}"))
    for name, expected in dataset.md5.items():
        dest = target / name
        if dest.is_file() and (file_identity(dest) in _VERIFIED or md5_of(dest) == expected):
            _VERIFIED.add(file_identity(dest))
            continue
        archive = source_dir / f"{name}.gz"
        if not archive.is_file():
            raise DataError(f"{dest} has MD5 {md5_of(dest) if dest.is_file() else 'missing'}, expected {expected}, "
                            f"and {archive} is missing to unpack it again; " + hint(archive))
        log.info("unpacking %s", archive)
        try:
            atomic_write_bytes(dest, gzip.decompress(archive.read_bytes()))
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{archive} is corrupt or truncated ({err}); {hint(archive)}") from err
        if (actual := md5_of(dest)) != expected:
            dest.unlink()
            raise DataError(f"{archive} unpacks to MD5 {actual}, expected {expected} (corrupt file); " + hint(archive))
        _VERIFIED.add(file_identity(dest))
    return target


def ensure_mnist_raw(vendored_dir: str | os.PathLike, root: str | os.PathLike) -> Path:
    """:func:`ensure_raw` for the vendored MNIST archives: ``<root>/MNIST/raw``."""
    return ensure_raw(MNIST_FILES, vendored_dir, root)
