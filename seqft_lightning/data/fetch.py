"""Fetch an MNIST-format dataset's four IDX archives into a folder, verified by their unpacked MD5s.

    python -m seqft_lightning.data.fetch fashion_mnist --to DIR

For users elsewhere: this is the one command that downloads (through torchvision's downloader,
which also checks the official archives' own MD5s). A run never calls it and never downloads: it
reads ``data.files_dir`` and refuses a missing or corrupt file with this command. The archives are
written to ``DIR/<name>.gz`` (atomically), then verified through the same unpack-and-check path a run
uses (:func:`~seqft_lightning.data.mnist_files.ensure_raw`, into a temporary folder), and
``DIR/MD5SUMS.uncompressed`` lists the unpacked sums. Point the config at the folder:
``python train.py data=fashion_mnist data.files_dir=DIR``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from seqft_lightning.data.mnist_files import DATASETS, IDXDataset, ensure_raw, raw_dir
from seqft_lightning.errors import DataError
from seqft_lightning.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)


def fetch(dataset: IDXDataset | str, dest: str | Path) -> Path:
    """Download ``dataset`` (an entry or name of :data:`~seqft_lightning.data.mnist_files.DATASETS`)
    with torchvision, copy its four ``.gz`` archives into ``dest`` and verify them; return ``dest``.
    A failed download or a file that unpacks to other bytes raises :class:`DataError`."""
    from torchvision import datasets

    dataset = DATASETS[dataset] if isinstance(dataset, str) else dataset
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="seqft-fetch-") as tmp:
        try:
            for train in (True, False):
                getattr(datasets, dataset.folder)(tmp, train=train, download=True)
        except Exception as err:  # network errors come in many types; the user needs one line
            raise DataError(f"downloading {dataset.folder} with torchvision failed ({err}); check the network and retry") from err
        downloaded = raw_dir(tmp, dataset.folder)
        for name in dataset.md5:
            with open(downloaded / f"{name}.gz", "rb") as src:
                atomic_write(dest / f"{name}.gz", lambda out: shutil.copyfileobj(src, out), mode="wb")
    with tempfile.TemporaryDirectory(prefix="seqft-verify-") as tmp:
        ensure_raw(dataset, dest, tmp)
    atomic_write_text(dest / "MD5SUMS.uncompressed", "".join(f"{md5}  {name}\n" for name, md5 in sorted(dataset.md5.items())))
    log.info("%s: 4 archives in %s, unpacked MD5s verified", dataset.folder, dest)
    return dest


def main(argv: list[str] | None = None) -> None:
    from seqft_lightning.cli import run_or_exit

    parser = argparse.ArgumentParser(prog="python -m seqft_lightning.data.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS), help="which dataset")
    parser.add_argument("--to", required=True, type=Path, metavar="DIR", help="folder to write the four .gz archives into")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_or_exit(lambda: fetch(args.dataset, args.to))


if __name__ == "__main__":
    main()
