"""Fetch an MNIST-format dataset's four IDX archives into a folder, verified by their unpacked MD5s.

    python -m seqft_lightning.data.fetch fashion_mnist --to DIR

The one command that downloads (torchvision's downloader, which checks the official MD5s); a run
never does, and refuses a missing or corrupt file with this command. The archives go to
``DIR/<name>.gz`` (atomically), are verified as a run verifies them
(:func:`~seqft_lightning.data.mnist_files.ensure_raw`), and ``DIR/MD5SUMS.uncompressed`` lists the
unpacked sums. Then: ``python train.py data=fashion_mnist data.files_dir=DIR``."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from seqft_lightning.data.mnist_files import DATASETS, IDXDataset, download, ensure_raw
from seqft_lightning.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)


def fetch(dataset: IDXDataset | str, dest: str | Path) -> Path:
    """Download ``dataset`` (an entry or name of :data:`~seqft_lightning.data.mnist_files.DATASETS`)
    with torchvision, copy its four ``.gz`` archives into ``dest`` and verify them; return ``dest``.
    A failed download or a file that unpacks to other bytes raises :class:`~seqft_lightning.errors.DataError`."""
    dataset = DATASETS[dataset] if isinstance(dataset, str) else dataset
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="seqft-fetch-") as tmp:
        download(dataset, tmp, f"downloading {dataset.folder} with torchvision failed ({{err}}); check the network and retry")
        for name in dataset.md5:
            atomic_write_bytes(dest / f"{name}.gz", (Path(tmp) / dataset.folder / "raw" / f"{name}.gz").read_bytes())
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
