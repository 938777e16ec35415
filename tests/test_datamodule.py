"""The real-MNIST datamodule: split sizes, disjointness, determinism, loaders, file checks.

Most tests share the session-scoped ``mnist_dm`` (default split). The file-integrity tests work on
copies of the vendored archives in ``tmp_path``; ``data/mnist`` itself is never written.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import shutil
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from seqft_lightning.data import SyntheticTaskDataModule, make_splits
from seqft_lightning.data.mnist_files import MNIST_MD5, ensure_mnist_raw
from seqft_lightning.errors import DataError

VENDORED = Path(__file__).resolve().parents[1] / "data" / "mnist"
TASKS = (3, 4, 7)
# The MD5 sums of the unpacked files as published with MNIST (and checked by torchvision's
# `MNIST.resources`), written here, independent of any copy the project keeps.
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def largest_remainder(counts: list[int], total: int) -> list[int]:
    """Reference quotas with exact fractions (ties -> lower class index)."""
    n = sum(counts)
    exact = [Fraction(c * total, n) for c in counts]
    quotas = [math.floor(e) for e in exact]
    order = sorted(range(len(counts)), key=lambda k: (-(exact[k] - quotas[k]), k))
    for k in order[: total - sum(quotas)]:
        quotas[k] += 1
    return quotas


# -- sizes and disjointness ----------------------------------------------------------------------
def test_split_sizes(mnist_dm):
    assert len(mnist_dm.pretrain_y) == 60000 - 3 * 1000 - 5000 == 52000
    assert len(mnist_dm.calib_y) == 5000
    assert len(mnist_dm.test_y) == len(mnist_dm.test_x) == 10000
    for c in TASKS:
        x, y = mnist_dm.task_data([c])
        assert len(x) == len(y) == 1000
    assert len(mnist_dm.pretrain_x) == 52000 and mnist_dm.pretrain_x.shape[1] == 784


def test_calibration_is_stratified_with_largest_remainder_quotas(mnist_dm, mnist_train_labels):
    counts = torch.bincount(mnist_train_labels, minlength=10).tolist()
    expected = largest_remainder(counts, 5000)
    assert sum(expected) == 5000
    assert torch.bincount(mnist_dm.calib_y, minlength=10).tolist() == expected
    # every class is represented roughly by its share of the training set (1/12 of each class)
    assert all(abs(q - c / 12) < 1 for q, c in zip(expected, counts))


def test_four_sets_are_disjoint_and_labelled_right(mnist_dm, mnist_train_labels):
    s = mnist_dm.splits
    sets = {"pretrain": s.pretrain, "calibration": s.calibration, **{f"task_{c}": s.tasks[c] for c in TASKS}}
    as_sets = {k: set(v.tolist()) for k, v in sets.items()}
    for k, v in sets.items():
        assert len(as_sets[k]) == len(v), f"{k} has repeated indices"
    names = list(as_sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not as_sets[a] & as_sets[b], f"{a} and {b} overlap"
    # together they are the whole training set
    assert set().union(*as_sets.values()) == set(range(60000))
    # labels at those indices are the tensors the datamodule serves
    assert torch.equal(mnist_train_labels[s.pretrain], mnist_dm.pretrain_y)
    assert torch.equal(mnist_train_labels[s.calibration], mnist_dm.calib_y)
    for c in TASKS:
        assert set(mnist_train_labels[s.tasks[c]].tolist()) == {c}
    # pretraining pool: every class, including what is left of the task classes after holding out
    counts = torch.bincount(mnist_train_labels, minlength=10)
    calib = torch.bincount(mnist_dm.calib_y, minlength=10)
    pre = torch.bincount(mnist_dm.pretrain_y, minlength=10)
    for c in range(10):
        assert int(pre[c]) == int(counts[c] - calib[c]) - (1000 if c in TASKS else 0)


def test_test_set_is_the_separate_t10k_file(mnist_dm):
    raw = (Path(mnist_dm.data_dir) / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes()
    labels = torch.tensor(list(raw[8:]), dtype=torch.int64)
    assert torch.equal(mnist_dm.test_y, labels)


def test_images_are_normalised_rows_of_the_idx_file(mnist_dm):
    raw = (Path(mnist_dm.data_dir) / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
    s = mnist_dm.splits
    for pos in (0, 12345, len(s.pretrain) - 1):
        idx = int(s.pretrain[pos])
        pixels = torch.tensor(list(raw[16 + 784 * idx : 16 + 784 * (idx + 1)]), dtype=torch.float32)
        expected = (pixels / 255.0 - 0.1307) / 0.3081
        assert torch.allclose(mnist_dm.pretrain_x[pos], expected, atol=1e-5)


def test_normalisation_statistics(mnist_dm):
    x = mnist_dm.pretrain_x
    assert x.dtype == torch.float32
    assert abs(float(x.mean())) < 0.05
    assert 0.9 < float(x.std()) < 1.1


# -- determinism ---------------------------------------------------------------------------------
def test_split_is_a_function_of_split_seed(mnist_dm, mnist_train_labels):
    args = (mnist_train_labels, list(TASKS), 1000, 5000)
    same = make_splits(*args, split_seed=0)
    other = make_splits(*args, split_seed=1)
    # the datamodule (split_seed=0) reproduces exactly
    assert torch.equal(same.pretrain, mnist_dm.splits.pretrain)
    assert torch.equal(same.calibration, mnist_dm.splits.calibration)
    for c in TASKS:
        assert torch.equal(same.tasks[c], mnist_dm.splits.tasks[c])
    # another seed gives other indices (same sizes)
    assert not torch.equal(other.calibration, same.calibration)
    for c in TASKS:
        assert len(other.tasks[c]) == 1000 and not torch.equal(other.tasks[c], same.tasks[c])


def test_samples_per_task_null_takes_every_remaining_sample(mnist_dm, mnist_train_labels):
    s = make_splits(mnist_train_labels, list(TASKS), None, 5000, split_seed=0)
    counts = torch.bincount(mnist_train_labels, minlength=10)
    calib = torch.bincount(mnist_train_labels[s.calibration], minlength=10)
    for c in TASKS:
        assert len(s.tasks[c]) == int(counts[c] - calib[c])
    pre_labels = set(mnist_train_labels[s.pretrain].tolist())
    assert pre_labels == set(range(10)) - set(TASKS)
    assert len(s.pretrain) + len(s.calibration) + len(s.estimation) + sum(len(t) for t in s.tasks.values()) == 60000


def test_samples_per_task_null_passes_through_the_datamodule():
    dm = SyntheticTaskDataModule(task_classes=[2, 5], samples_per_task=None, calibration_size=100, train_size=600)
    dm.setup()
    # 60 images per class, 10 of each in the selection part, 10 in the estimation part -> 40 held out per task class
    assert len(dm.task_data([2])[1]) == 40 and len(dm.task_data([5])[1]) == 40
    assert not ({2, 5} & set(dm.pretrain_y.tolist()))


# -- loaders -------------------------------------------------------------------------------------
def _labels_of(loader) -> list[int]:
    return [int(v) for _, y in loader for v in y]


def test_task_loader_yields_only_its_class(mnist_dm):
    torch.manual_seed(0)
    loader = mnist_dm.task_dataloader([3], batch_size=128)
    labels = _labels_of(loader)
    assert len(labels) == 1000 and set(labels) == {3}
    loader4 = mnist_dm.task_dataloader([4, 7], batch_size=100)
    assert Counter(_labels_of(loader4)) == {4: 1000, 7: 1000}


def test_unknown_task_class_is_refused(mnist_dm):
    with pytest.raises(DataError, match="not held out"):
        mnist_dm.task_dataloader([5], batch_size=64)


def test_joint_loader_is_the_shuffled_union(mnist_dm):
    torch.manual_seed(0)
    loader = mnist_dm.task_dataloader(mnist_dm.task_classes, batch_size=64)  # what joint trains on
    batches = [y.tolist() for _, y in loader]
    labels = [v for b in batches for v in b]
    assert Counter(labels) == {3: 1000, 4: 1000, 7: 1000}
    # shuffled: the first batch mixes classes (unshuffled it would be 64 threes)
    assert len(set(batches[0])) == 3
    assert labels != sorted(labels)
    # and a new epoch draws a new order
    assert [v for _, y in loader for v in y.tolist()] != labels


def test_pretrain_loader_batches(mnist_dm):
    torch.manual_seed(0)
    loader = mnist_dm.pretrain_dataloader(batch_size=64)
    assert len(loader) == math.ceil(52000 / 64)
    x, y = next(iter(loader))
    assert tuple(x.shape) == (64, 784) and x.dtype == torch.float32
    assert tuple(y.shape) == (64,) and y.dtype == torch.int64
    x2, _ = next(iter(mnist_dm.pretrain_dataloader(batch_size=32)))
    assert tuple(x2.shape) == (32, 784)


def test_eval_loaders_are_ordered_and_complete(mnist_dm):
    test_labels = torch.cat([y for _, y in mnist_dm.test_dataloader()])
    assert torch.equal(test_labels, mnist_dm.test_y)
    val_labels = torch.cat([y for _, y in mnist_dm.val_dataloader()])
    assert torch.equal(val_labels, mnist_dm.calib_y)


# -- vendored files ------------------------------------------------------------------------------
@pytest.fixture()
def vendored_copy(tmp_path) -> Path:
    dest = tmp_path / "vendored"
    dest.mkdir()
    for name in OFFICIAL_MD5:
        shutil.copy(VENDORED / f"{name}.gz", dest / f"{name}.gz")
    return dest


def _flip_bytes(path: Path, positions) -> None:
    data = bytearray(path.read_bytes())
    for p in positions:
        data[p] ^= 0xFF
    path.write_bytes(bytes(data))


def test_md5_table_matches_the_official_sums():
    assert MNIST_MD5 == OFFICIAL_MD5


def test_unpacks_and_verifies_every_file(vendored_copy, tmp_path):
    """The unpacked files hash (hashlib, here) to the official sums, not just to the package's table."""
    raw = ensure_mnist_raw(vendored_copy, tmp_path / "root")
    assert raw == tmp_path / "root" / "MNIST" / "raw"
    for name, md5 in OFFICIAL_MD5.items():
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == md5
    assert sorted(p.name for p in raw.iterdir()) == sorted(OFFICIAL_MD5)  # no temporary leftovers
    # the vendored archives themselves hold exactly those bytes
    for name, md5 in OFFICIAL_MD5.items():
        assert hashlib.md5(gzip.decompress((VENDORED / f"{name}.gz").read_bytes())).hexdigest() == md5, name


def test_truncated_archive_is_refused(vendored_copy, tmp_path):
    archive = vendored_copy / "train-labels-idx1-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError) as info:
        ensure_mnist_raw(vendored_copy, tmp_path / "root")
    assert "train-labels-idx1-ubyte.gz" in str(info.value)
    assert "\n" not in str(info.value)
    raw = tmp_path / "root" / "MNIST" / "raw"
    assert not (raw / "train-labels-idx1-ubyte").exists()
    assert not [p for p in raw.iterdir() if p.name.endswith(".tmp")]


def test_archive_with_flipped_bytes_is_refused(vendored_copy, tmp_path):
    archive = vendored_copy / "t10k-labels-idx1-ubyte.gz"
    size = archive.stat().st_size
    _flip_bytes(archive, [size // 3, size // 2, 2 * size // 3])
    with pytest.raises(DataError) as info:
        ensure_mnist_raw(vendored_copy, tmp_path / "root")
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value)
    assert not (tmp_path / "root" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").exists()


def test_valid_archive_with_wrong_content_fails_the_md5_check(vendored_copy, tmp_path):
    name = "t10k-labels-idx1-ubyte"
    content = bytearray(gzip.decompress((vendored_copy / f"{name}.gz").read_bytes()))
    content[100] = (content[100] + 1) % 10  # one label changed: a perfectly valid gzip file
    (vendored_copy / f"{name}.gz").write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DataError) as info:
        ensure_mnist_raw(vendored_copy, tmp_path / "root")
    message = str(info.value)
    assert f"{name}.gz" in message and OFFICIAL_MD5[name] in message
    assert not (tmp_path / "root" / "MNIST" / "raw" / name).exists()


def test_corrupt_unpacked_file_is_repaired_from_a_good_archive(vendored_copy, tmp_path):
    root = tmp_path / "root"
    raw = ensure_mnist_raw(vendored_copy, root)
    bad = raw / "t10k-labels-idx1-ubyte"
    _flip_bytes(bad, [10, 20])
    assert hashlib.md5(bad.read_bytes()).hexdigest() != OFFICIAL_MD5[bad.name]
    ensure_mnist_raw(vendored_copy, root)
    assert hashlib.md5(bad.read_bytes()).hexdigest() == OFFICIAL_MD5[bad.name]
    # a truncated unpacked file too
    other = raw / "train-labels-idx1-ubyte"
    other.write_bytes(other.read_bytes()[:1000])
    ensure_mnist_raw(vendored_copy, root)
    assert hashlib.md5(other.read_bytes()).hexdigest() == OFFICIAL_MD5[other.name]


def test_corrupt_unpacked_file_without_archive_is_refused(vendored_copy, tmp_path):
    root = tmp_path / "root"
    raw = ensure_mnist_raw(vendored_copy, root)
    _flip_bytes(raw / "t10k-labels-idx1-ubyte", [50])
    (vendored_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        ensure_mnist_raw(vendored_copy, root)  # must not try to download: the other files are there
    assert "t10k-labels-idx1-ubyte" in str(info.value)


@pytest.mark.parametrize("custom", [True, False])
def test_missing_archives_and_no_download_say_where_to_put_them(tmp_path, monkeypatch, custom):
    """Offline, with the archives gone: the repository's folder is restored with git, a folder of the user's own
    (``data.vendored_dir``) is named instead."""
    import seqft_lightning.data.mnist_files as mnist_files

    def offline(dataset, root, failure):
        raise DataError(failure.format(err="offline"))

    monkeypatch.setattr(mnist_files, "download", offline)
    folder = tmp_path / "mine" if custom else Path(mnist_files.__file__).resolve().parents[2] / "data" / "mnist"
    if custom:
        folder.mkdir()
    else:  # the repository's folder, seen as empty
        monkeypatch.setattr(Path, "is_file", lambda self: False)
    with pytest.raises(DataError) as info:
        mnist_files.ensure_mnist_raw(folder, tmp_path / "root")
    expected = f"put the four .gz archives back into {folder}" if custom else "git checkout -- data/mnist"
    assert expected in str(info.value) and "offline" in str(info.value)


def test_corrupt_archive_reaches_the_datamodule_as_data_error(vendored_copy, tmp_path):
    from seqft_lightning.data import MNISTTaskDataModule

    archive = vendored_copy / "train-images-idx3-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[:5000])
    dm = MNISTTaskDataModule(data_dir=str(tmp_path / "root"), vendored_dir=str(vendored_copy))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        dm.setup()
    assert dm.splits is None
