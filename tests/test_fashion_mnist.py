"""``data=fashion_mnist``: the same split logic as MNIST, files from a local folder, verified bytes.

Most tests write small stand-in IDX archives (600 training and 200 test images of 28x28, written
here with the IDX layout) and put their unpacked MD5s into the package's table for the test
(``monkeypatch``); the refusals use the real table, against which the stand-ins are corrupt copies.
One end-to-end run reads the shared Fashion-MNIST folder and is skipped where it is absent.
Nothing here downloads: the fetch command's test replaces torchvision's downloader with a fake.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from seqft_lightning.api import train
from seqft_lightning.data import make_splits
from seqft_lightning.data.mnist_files import FASHION_MNIST_MD5
from seqft_lightning.errors import DataError
from seqft_lightning.plan import plan_run

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "fashion-mnist"
NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
# The MD5s of the official Fashion-MNIST files once unpacked (zalandoresearch/fashion-mnist; the
# same sums torchvision's downloads unpack to), written here, independent of the package's table.
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
FETCH = "python -m seqft_lightning.data.fetch fashion_mnist --to"
TARGETS = [0, 2, 6]  # experiment=fashion_mnist: T-shirt/top, pullover, shirt
SMALL = ["data.calibration_size=100", "data.estimation_size=100", "data.samples_per_task=20", "data.eval_batch_size=100"]
FAST = ["trainer=cpu", "pretrain.epochs=1", "method.epochs_per_stage=1", "logger=none", "callbacks=none",
        "trainer.enable_progress_bar=false"]


# -- stand-in files ----------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX layout: magic (two zero bytes, type 0x08 = unsigned byte, the number of dimensions),
    each dimension as a big-endian int32, then the values."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def stand_in(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` learnable 28x28 images (a bright band per class, plus noise) and labels ``i % 10``."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, size=(n, 28, 28))
    for i, c in enumerate(labels):
        images[i, 2 * c + 4: 2 * c + 7, :] += 180
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_stand_ins(folder: Path) -> dict[str, bytes]:
    """Four gzipped stand-in IDX files in ``folder``; returns the unpacked bytes by name."""
    folder.mkdir(parents=True)
    (train_x, train_y), (test_x, test_y) = stand_in(600, 0), stand_in(200, 1)
    raw = {NAMES[0]: idx_bytes(train_x), NAMES[1]: idx_bytes(train_y), NAMES[2]: idx_bytes(test_x), NAMES[3]: idx_bytes(test_y)}
    for name, data in raw.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data))
    return raw


@pytest.fixture()
def stand_ins(tmp_path, monkeypatch) -> tuple[Path, dict[str, bytes]]:
    """Stand-in archives in ``tmp_path/files``, their MD5s in the package's table for this test."""
    raw = write_stand_ins(tmp_path / "files")
    for name, data in raw.items():
        monkeypatch.setitem(FASHION_MNIST_MD5, name, hashlib.md5(data).hexdigest())
    return tmp_path / "files", raw


def _data_overrides(files: Path, tmp_path: Path) -> list[str]:
    return [f"data.files_dir={files}", f"paths.data_dir={tmp_path / 'data'}"]


# -- the table and the split ----------------------------------------------------------------------
def test_md5_table_matches_the_official_sums():
    assert FASHION_MNIST_MD5 == OFFICIAL_MD5
    if SHARED.is_dir():  # the shared folder's list of unpacked sums says the same
        listed = dict(line.split()[::-1] for line in (SHARED / "MD5SUMS.uncompressed").read_text().splitlines() if line.strip())
        assert listed == OFFICIAL_MD5


@pytest.mark.parametrize("experiment", ["fashion_mnist", "fashion_mnist_cnn"])
def test_stand_in_files_run_through_the_mnist_split(compose, stand_ins, tmp_path, experiment):
    files, raw = stand_ins
    cfg = compose([f"experiment={experiment}", *_data_overrides(files, tmp_path), *SMALL, *FAST])
    assert cfg.data._target_.endswith(".FashionMNISTTaskDataModule")
    assert plan_run(cfg).task_classes == TARGETS
    metrics, objects = train(cfg)
    dm = objects["datamodule"]
    # unpacked and verified into torchvision's layout
    unpacked = tmp_path / "data" / "FashionMNIST" / "raw"
    assert {n: (unpacked / n).read_bytes() for n in NAMES} == raw
    # exactly MNIST's split of these labels: calibration, estimation, tasks, the rest pretrains
    labels = torch.from_numpy(stand_in(600, 0)[1].astype(np.int64))
    splits = make_splits(labels, TARGETS, 20, 100, int(cfg.seed), 10, 100)
    assert torch.equal(dm.splits.pretrain, splits.pretrain) and torch.equal(dm.splits.calibration, splits.calibration)
    assert torch.equal(dm.splits.estimation, splits.estimation)
    assert {c: i.tolist() for c, i in dm.splits.tasks.items()} == {c: i.tolist() for c, i in splits.tasks.items()}
    assert len(dm.pretrain_y) == 600 - 100 - 100 - 3 * 20 and len(dm.test_y) == 200
    # the images, flattened and normalised with Fashion-MNIST's mean and std
    test_x = torch.from_numpy(stand_in(200, 1)[0].reshape(200, 784).astype(np.float32))
    torch.testing.assert_close(dm.test_x, (test_x / 255 - 0.2860) / 0.3530)
    assert metrics["task_classes"] == TARGETS and metrics["final"]["test/acc"] > 0.1


# -- refusals: one line, the fetch command, before torch ----------------------------------------------
def test_a_corrupt_copy_is_refused_with_the_fetch_command(compose, stand_ins, tmp_path):
    files, raw = stand_ins
    name = "train-labels-idx1-ubyte"
    changed = bytearray(raw[name])
    changed[100] = (changed[100] + 1) % 10  # one label changed: a perfectly valid gzip file
    (files / f"{name}.gz").write_bytes(gzip.compress(bytes(changed)))
    with pytest.raises(DataError) as info:
        plan_run(compose(["data=fashion_mnist", *_data_overrides(files, tmp_path), *SMALL]))
    message = str(info.value)
    assert "\n" not in message and f"{name}.gz" in message and FASHION_MNIST_MD5[name] in message
    assert "corrupt" in message and f"{FETCH} {files}" in message
    assert not (tmp_path / "data" / "FashionMNIST" / "raw" / name).exists()  # nothing wrong is kept


def test_a_truncated_archive_is_refused(compose, stand_ins, tmp_path):
    files, _ = stand_ins
    archive = files / "t10k-images-idx3-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(DataError, match=f"t10k-images-idx3-ubyte.gz is corrupt or truncated.*{FETCH}"):
        plan_run(compose(["data=fashion_mnist", *_data_overrides(files, tmp_path), *SMALL]))


def test_a_missing_archive_is_refused_even_with_an_unpacked_copy(compose, stand_ins, tmp_path):
    """The config's folder must hold the files: an unpacked copy left in the cache does not stand in."""
    files, _ = stand_ins
    cfg = compose(["data=fashion_mnist", *_data_overrides(files, tmp_path), *SMALL])
    plan_run(cfg)
    (files / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=f"t10k-labels-idx1-ubyte.gz is missing.*nothing is downloaded.*{FETCH}"):
        plan_run(cfg)


from tests.test_bad_input import _WITHOUT_TORCH_SCRIPT as _REFUSALS_SCRIPT  # noqa: E402  (one script for both)


def test_refusals_come_before_torch_and_train_py_exits_2(tmp_path):
    """A missing folder through ``python train.py`` (exit 2, one ``error:`` line naming the fetch
    command, nothing written); a missing folder and a corrupt copy (the stand-ins against the
    official sums) through ``train(cfg)`` in a fresh interpreter: refused before torch is imported."""
    missing = tmp_path / "no-such-folder"
    write_stand_ins(tmp_path / "corrupt")
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    run_dir, cache = tmp_path / "cli" / "run", tmp_path / "cli" / "cache"
    cli = subprocess.Popen(
        [sys.executable, "train.py", "experiment=fashion_mnist", f"data.files_dir={missing}", f"paths.data_dir={tmp_path / 'data'}",
         f"hydra.run.dir={run_dir}", f"paths.cache_dir={cache}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cases = {name: ["experiment=fashion_mnist", f"data.files_dir={folder}", f"paths.data_dir={tmp_path / name / 'data'}",
                    f"paths.output_dir={tmp_path / name / 'run'}", f"paths.cache_dir={tmp_path / name / 'cache'}"]
             for name, folder in {"missing": missing, "corrupt": tmp_path / "corrupt"}.items()}
    inproc = subprocess.run([sys.executable, "-c", _REFUSALS_SCRIPT, json.dumps(cases), str(REPO / "conf")],
                            cwd=REPO, capture_output=True, text=True, timeout=180)
    _, stderr = cli.communicate(timeout=180)

    assert cli.returncode == 2, stderr
    errors = [line for line in stderr.splitlines() if "error: " in line]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "Traceback" not in stderr
    assert "does not exist" in errors[0] and f"{FETCH} {missing}" in errors[0]
    assert not cache.exists() or not any(cache.rglob("*"))
    assert not [p for p in run_dir.rglob("*") if p.is_file() and p.relative_to(run_dir).parts[0] not in (".hydra", "train.log")]

    assert inproc.returncode == 0, inproc.stderr
    results = json.loads(inproc.stdout.strip().splitlines()[-1])
    assert "does not exist" in results["missing"][0] and "unpacks to MD5" in results["corrupt"][0]
    for name, (message, torch_imported) in results.items():
        assert torch_imported is False and FETCH in message, (name, message)


# -- the fetch command, offline ---------------------------------------------------------------
def test_fetch_writes_and_verifies_the_archives(stand_ins, tmp_path, monkeypatch):
    """``fetch`` with torchvision's ``FashionMNIST`` replaced by a fake that leaves the stand-in
    archives where torchvision's download puts them (``<root>/FashionMNIST/raw/<name>.gz``)."""
    import torchvision.datasets

    from seqft_lightning.data.fetch import fetch

    files, raw = stand_ins

    class FakeDownload:
        def __init__(self, root, train, download):
            assert download is True
            dest = Path(root) / "FashionMNIST" / "raw"
            dest.mkdir(parents=True, exist_ok=True)
            for name in NAMES:
                (dest / f"{name}.gz").write_bytes((files / f"{name}.gz").read_bytes())

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeDownload)
    out = fetch("fashion_mnist", tmp_path / "fetched")
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"{n}.gz" for n in NAMES), "MD5SUMS.uncompressed"])
    for name in NAMES:
        assert gzip.decompress((out / f"{name}.gz").read_bytes()) == raw[name]
    listed = dict(line.split()[::-1] for line in (out / "MD5SUMS.uncompressed").read_text().splitlines())
    assert listed == {n: hashlib.md5(raw[n]).hexdigest() for n in NAMES}

    class BrokenDownload(FakeDownload):  # the download delivers other bytes than the table's
        def __init__(self, root, train, download):
            super().__init__(root, train, download)
            (Path(root) / "FashionMNIST" / "raw" / f"{NAMES[1]}.gz").write_bytes(gzip.compress(b"\0" * 20))

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", BrokenDownload)
    with pytest.raises(DataError, match="unpacks to MD5"):
        fetch("fashion_mnist", tmp_path / "broken")


# -- the shared files, end to end ---------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared Fashion-MNIST folder {SHARED} is absent "
                    f"(get the files with `{FETCH} DIR` and run with data.files_dir=DIR)")
def test_end_to_end_on_the_shared_files(compose, tmp_path):
    cfg = compose(["experiment=fashion_mnist", f"paths.data_dir={tmp_path / 'data'}", "trainer.limit_train_batches=5", *FAST])
    metrics, objects = train(cfg)
    dm = objects["datamodule"]
    unpacked = tmp_path / "data" / "FashionMNIST" / "raw"
    assert {n: hashlib.md5((unpacked / n).read_bytes()).hexdigest() for n in NAMES} == OFFICIAL_MD5
    assert len(dm.pretrain_y) == 60000 - 5000 - 5000 - 3 * 1000 and len(dm.test_y) == 10000
    assert torch.bincount(dm.test_y, minlength=10).tolist() == [1000] * 10
    assert metrics["task_classes"] == TARGETS and len(metrics["per_stage"]) == 3
    assert metrics["baseline"]["test/acc"] > 0.3  # five batches of pretraining: far above chance
