"""LightningDataModules that hold every split in memory as tensors: ``TaskDataModule`` does the
splitting and serves the loaders; subclasses only say where the raw images come from (IDX files:
:class:`MNISTTaskDataModule`, :class:`FashionMNISTTaskDataModule`; a seeded generator for fast tests:
:class:`SyntheticTaskDataModule`). Every module serves images flattened to ``[N, 784]`` rows; a model
that wants the 28x28 grid (the CNN) reshapes them itself."""

from __future__ import annotations

import logging
import weakref
from typing import Sequence

import lightning.pytorch as pl
import torch

from seqft_lightning.data.loaders import TensorBatchLoader
from seqft_lightning.data.mnist_files import DATASETS, IDXDataset, ensure_raw, file_identity
from seqft_lightning.data.splits import Splits, make_splits
from seqft_lightning.errors import DataError

log = logging.getLogger(__name__)


class _SplitTensors:
    """The tensors of one split of one loaded data set (never modified in place). The datamodules of
    one process with the same data and split share them (the runs of a stacked group: ``_SPLITS``)."""

    def __init__(self, train_x: torch.Tensor, train_labels: torch.Tensor, test_x: torch.Tensor, test_labels: torch.Tensor,
                 splits: Splits):
        self.source, self.splits = train_x, splits
        train_y = train_labels.long()
        self.pretrain_x, self.pretrain_y = train_x[splits.pretrain], train_y[splits.pretrain]
        self.calib_x, self.calib_y = train_x[splits.calibration], train_y[splits.calibration]
        self.estim_x, self.estim_y = train_x[splits.estimation], train_y[splits.estimation]
        self.test_x, self.test_y = test_x, test_labels.long()
        self.task = {c: (train_x[idx], train_y[idx]) for c, idx in splits.tasks.items()}


# Split tensors in use in this process, by data and split: held only while a datamodule holds them.
_SPLITS: weakref.WeakValueDictionary[tuple, _SplitTensors] = weakref.WeakValueDictionary()


class TaskDataModule(pl.LightningDataModule):
    """Pretraining pool, per-class task sets (``task_classes``: the union of the method's stages), the
    held-out calibration split and the test set, as tensors. ``samples_per_task``, ``calibration_size``,
    ``estimation_size`` and ``split_seed`` make the split (:mod:`seqft_lightning.data.splits`);
    ``eval_batch_size`` batches the evaluation loaders; ``mean``, ``std`` normalise pixels scaled to [0, 1]."""

    num_classes = 10

    def __init__(self, task_classes: Sequence[int] = (3, 4, 7), samples_per_task: int | None = 1000,
                 calibration_size: int = 5000, split_seed: int = 0, eval_batch_size: int = 1000,
                 mean: float = 0.1307, std: float = 0.3081, estimation_size: int = 0):
        super().__init__()
        self.task_classes = sorted(int(c) for c in task_classes)
        self.samples_per_task = samples_per_task
        self.calibration_size = int(calibration_size)
        self.estimation_size = int(estimation_size)
        self.split_seed = int(split_seed)
        self.eval_batch_size = int(eval_batch_size)
        self.mean, self.std = float(mean), float(std)
        self.device = torch.device("cpu")
        self.splits: Splits | None = None

    def load_raw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(train_images uint8 [N,28,28], train_labels, test_images, test_labels)``."""
        raise NotImplementedError

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`load_raw` with the images flattened, scaled to [0, 1] and normalised (``mean``, ``std``)."""
        train_images, train_labels, test_images, test_labels = self.load_raw()
        train_x, test_x = (i.reshape(len(i), -1).float().div_(255.0).sub_(self.mean).div_(self.std)
                           for i in (train_images, test_images))
        return train_x, train_labels, test_x, test_labels

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        train_x, train_labels, test_x, test_labels = self.load()
        key = (id(train_x), id(test_x), tuple(self.task_classes), self.samples_per_task, self.calibration_size,
               self.split_seed, self.num_classes, self.estimation_size)
        split = _SPLITS.get(key)
        if split is None or split.source is not train_x:
            split = _SplitTensors(train_x, train_labels, test_x, test_labels, make_splits(
                train_labels, self.task_classes, self.samples_per_task, self.calibration_size, self.split_seed,
                self.num_classes, self.estimation_size))
            _SPLITS[key] = split
        self._split = split  # what keeps the shared tensors alive
        self.splits = split.splits
        self.pretrain_x, self.pretrain_y = split.pretrain_x, split.pretrain_y
        self.calib_x, self.calib_y = split.calib_x, split.calib_y
        self.estim_x, self.estim_y = split.estim_x, split.estim_y
        self.test_x, self.test_y = split.test_x, split.test_y
        self._task = dict(split.task)
        log.info("splits: pretrain %d, calibration %d (selection) + %d (estimation), tasks %s, test %d",
                 len(self.pretrain_y), len(self.calib_y), len(self.estim_y),
                 {c: len(v[1]) for c, v in self._task.items()}, len(self.test_y))

    def to(self, device: torch.device | str) -> "TaskDataModule":
        """Move every split to ``device`` once, so batches never cross the bus."""
        self.device = torch.device(device)
        for name in ("pretrain_x", "pretrain_y", "calib_x", "calib_y", "estim_x", "estim_y", "test_x", "test_y"):
            setattr(self, name, getattr(self, name).to(self.device))
        self._task = {c: (x.to(self.device), y.to(self.device)) for c, (x, y) in self._task.items()}
        return self

    def task_data(self, classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out task samples of ``classes`` (concatenated, unshuffled)."""
        if unknown := [c for c in classes if c not in self._task]:
            raise DataError(f"classes {unknown} were not held out as task classes (held out: {self.task_classes})")
        xs, ys = zip(*(self._task[int(c)] for c in classes))
        return torch.cat(xs), torch.cat(ys)

    def pretrain_dataloader(self, batch_size: int) -> TensorBatchLoader:
        return TensorBatchLoader(self.pretrain_x, self.pretrain_y, batch_size, shuffle=True)

    def task_dataloader(self, classes: Sequence[int], batch_size: int) -> TensorBatchLoader:
        return TensorBatchLoader(*self.task_data(classes), batch_size, shuffle=True)

    def calibration_dataloader(self) -> TensorBatchLoader:
        return TensorBatchLoader(self.calib_x, self.calib_y, self.eval_batch_size, shuffle=False)

    def estimation_dataloader(self) -> TensorBatchLoader:
        return TensorBatchLoader(self.estim_x, self.estim_y, self.eval_batch_size, shuffle=False)

    def val_dataloader(self) -> TensorBatchLoader | list:
        """Lightning's validation loop runs on the calibration split (none when it is empty)."""
        return self.calibration_dataloader() if len(self.calib_y) else []

    def test_dataloader(self) -> TensorBatchLoader:
        return TensorBatchLoader(self.test_x, self.test_y, self.eval_batch_size, shuffle=False)


# The loaded (normalised) IDX tensors of this process, keyed by the verified files' identities and
# the normalisation: the jobs of a sweep worker load the dataset once. Never modified in place.
_LOADED: dict[tuple, tuple[torch.Tensor, ...]] = {}


class IDXTaskDataModule(TaskDataModule):
    """An MNIST-format dataset (:attr:`files`) from the four ``*-ubyte.gz`` archives in ``files_dir``,
    verified (:func:`~seqft_lightning.data.mnist_files.ensure_raw`) and parsed by torchvision's class."""

    files: IDXDataset

    def __init__(self, data_dir: str, files_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.data_dir, self.files_dir = str(data_dir), str(files_dir)

    def prepare_data(self) -> None:
        ensure_raw(self.files, self.files_dir, self.data_dir)

    def load(self):
        raw = ensure_raw(self.files, self.files_dir, self.data_dir)
        key = (*(file_identity(raw / name) for name in sorted(self.files.md5)), self.mean, self.std)
        if key not in _LOADED:
            _LOADED.clear()  # one copy per process is enough
            _LOADED[key] = super().load()
        return _LOADED[key]

    def load_raw(self):
        from torchvision import datasets

        parser = getattr(datasets, self.files.folder)
        try:
            train, test = (parser(self.data_dir, train=split, download=False) for split in (True, False))
        except (RuntimeError, ValueError, OSError) as err:
            raise DataError(f"could not parse {self.files.folder} under {self.data_dir} ({err}); delete that folder and rerun") from err
        return train.data, train.targets, test.data, test.targets


class MNISTTaskDataModule(IDXTaskDataModule):
    """MNIST from the vendored IDX archives (``vendored_dir``: ``data/mnist``)."""

    files = DATASETS["mnist"]

    def __init__(self, data_dir: str, vendored_dir: str, **kwargs):
        super().__init__(data_dir, vendored_dir, **kwargs)


class FashionMNISTTaskDataModule(IDXTaskDataModule):
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from a local folder of its four IDX archives
    (``files_dir``); never downloaded at run time (``python -m seqft_lightning.data.fetch``)."""

    files = DATASETS["fashion_mnist"]


class SyntheticTaskDataModule(TaskDataModule):
    """Tiny, learnable stand-in for MNIST (tests, smoke runs; no file): class-dependent Gaussian blobs, 28×28 uint8."""

    def __init__(self, train_size: int = 600, test_size: int = 200, seed: int = 0, **kwargs):
        super().__init__(**{"samples_per_task": 20, "calibration_size": 100, "estimation_size": 100, **kwargs})
        self.train_size, self.test_size, self.seed = int(train_size), int(test_size), int(seed)

    def load_raw(self):
        generator = torch.Generator().manual_seed(self.seed)
        prototypes = torch.rand(self.num_classes, 28 * 28, generator=generator)

        def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            labels = torch.arange(n) % self.num_classes
            noise = 0.35 * torch.randn(n, 28 * 28, generator=generator)
            images = (prototypes[labels] + noise).clamp(0, 1).mul(255).round().to(torch.uint8)
            return images.reshape(n, 28, 28), labels

        return (*draw(self.train_size), *draw(self.test_size))
