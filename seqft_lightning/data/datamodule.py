"""LightningDataModules that hold every split in memory as tensors.

``TaskDataModule`` does the splitting and serves the loaders; subclasses only say where the raw
images come from (:class:`MNISTTaskDataModule` from the vendored IDX files,
:class:`FashionMNISTTaskDataModule` from a local folder of Fashion-MNIST's IDX files, both through
:class:`IDXTaskDataModule`; :class:`SyntheticTaskDataModule` from a seeded random generator for
fast tests). Every module serves images flattened to ``[N, 784]`` rows; a model that wants the
28x28 grid (:class:`~seqft_lightning.models.components.CNN`) reshapes them itself.
"""

from __future__ import annotations

import logging
from typing import Sequence

import lightning.pytorch as pl
import torch

from seqft_lightning.data.loaders import TensorBatchLoader
from seqft_lightning.data.mnist_files import DATASETS, IDXDataset, ensure_raw, file_identity
from seqft_lightning.data.splits import Splits, make_splits
from seqft_lightning.errors import DataError

log = logging.getLogger(__name__)


# Normalised copies of the raw tensors of this process (see TaskDataModule._normalised).
_NORMALISED: dict[tuple, tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]] = {}


class TaskDataModule(pl.LightningDataModule):
    """Pretraining pool, per-class task sets, calibration split and test set, as tensors.

    Args:
        task_classes: classes held out for fine-tuning (the union of the method's stages).
        samples_per_task: training images held out per task class (``None``: all that remain).
        calibration_size: images held out (stratified) for validation and model selection: the
            selection part, whose metrics carry the prefix ``calibration/``.
        estimation_size: more held-out images (stratified), the estimation part (``estimation/``
            metrics): no choice reads them, so they estimate a chosen model without bias.
        split_seed: seed of the split (the configs set it to the training seed).
        eval_batch_size: batch size of the calibration and test loaders.
        mean, std: normalisation applied once to pixel values scaled to [0, 1].
    """

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
        """Return ``(train_images uint8 [N,28,28], train_labels, test_images, test_labels)``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        train_images, train_labels, test_images, test_labels = self.load_raw()
        train_x, test_x = self._normalised(train_images, test_images)
        self.splits = make_splits(train_labels, self.task_classes, self.samples_per_task, self.calibration_size,
                                  self.split_seed, self.num_classes, self.estimation_size)
        train_y, test_y = train_labels.long(), test_labels.long()
        self.pretrain_x, self.pretrain_y = train_x[self.splits.pretrain], train_y[self.splits.pretrain]
        self.calib_x, self.calib_y = train_x[self.splits.calibration], train_y[self.splits.calibration]
        self.estim_x, self.estim_y = train_x[self.splits.estimation], train_y[self.splits.estimation]
        self.test_x, self.test_y = test_x, test_y
        self._task = {c: (train_x[idx], train_y[idx]) for c, idx in self.splits.tasks.items()}
        log.info("splits: pretrain %d, calibration %d (selection) + %d (estimation), tasks %s, test %d",
                 len(self.pretrain_y), len(self.calib_y), len(self.estim_y),
                 {c: len(v[1]) for c, v in self._task.items()}, len(self.test_y))

    def _normalised(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``images`` flattened, scaled to [0, 1] and normalised; memoised per process for the
        same raw tensors (the jobs of a sweep worker share MNIST), never modified in place later."""
        settings = (self.mean, self.std)
        cached = _NORMALISED.get(settings)
        # The memo keeps the raw tensors alive, so identity (`is`) cannot match a new tensor.
        if cached is None or len(cached[0]) != len(images) or not all(a is b for a, b in zip(cached[0], images)):
            normalised = tuple(i.reshape(len(i), -1).float().div_(255.0).sub_(self.mean).div_(self.std) for i in images)
            _NORMALISED.clear()
            _NORMALISED[settings] = cached = (images, normalised)
        return cached[1]

    def to(self, device: torch.device | str) -> "TaskDataModule":
        """Move every split to ``device`` once, so batches never cross the bus."""
        self.device = torch.device(device)
        for name in ("pretrain_x", "pretrain_y", "calib_x", "calib_y", "estim_x", "estim_y", "test_x", "test_y"):
            setattr(self, name, getattr(self, name).to(self.device))
        self._task = {c: (x.to(self.device), y.to(self.device)) for c, (x, y) in self._task.items()}
        return self

    def task_data(self, classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out task samples of ``classes`` (concatenated, unshuffled)."""
        unknown = [c for c in classes if c not in self._task]
        if unknown:
            raise DataError(f"classes {unknown} were not held out as task classes (held out: {self.task_classes})")
        xs, ys = zip(*(self._task[int(c)] for c in classes))
        return torch.cat(xs), torch.cat(ys)

    def pretrain_dataloader(self, batch_size: int) -> TensorBatchLoader:
        return TensorBatchLoader(self.pretrain_x, self.pretrain_y, batch_size, shuffle=True)

    def task_dataloader(self, classes: Sequence[int], batch_size: int) -> TensorBatchLoader:
        x, y = self.task_data(classes)
        return TensorBatchLoader(x, y, batch_size, shuffle=True)

    def calibration_dataloader(self) -> TensorBatchLoader:
        return TensorBatchLoader(self.calib_x, self.calib_y, self.eval_batch_size, shuffle=False)

    def estimation_dataloader(self) -> TensorBatchLoader:
        return TensorBatchLoader(self.estim_x, self.estim_y, self.eval_batch_size, shuffle=False)

    def val_dataloader(self) -> TensorBatchLoader | list:
        """Lightning's validation loop runs on the calibration split (none when it is empty)."""
        return self.calibration_dataloader() if len(self.calib_y) else []

    def test_dataloader(self) -> TensorBatchLoader:
        return TensorBatchLoader(self.test_x, self.test_y, self.eval_batch_size, shuffle=False)


# Parsed IDX tensors of this process, keyed by the verified files' identities: the jobs of an
# in-process sweep parse the dataset once. Callers never modify these tensors (setup() copies).
_PARSED: dict[tuple, tuple[torch.Tensor, ...]] = {}


class IDXTaskDataModule(TaskDataModule):
    """An MNIST-format dataset from four local IDX archives, verified by their unpacked MD5s
    (:func:`~seqft_lightning.data.mnist_files.ensure_raw`) and parsed by torchvision's class of
    the dataset (``MNIST``, ``FashionMNIST``); subclasses name the dataset (:attr:`files`).

    Args:
        data_dir: torchvision root; the verified IDX files are unpacked to ``<data_dir>/<folder>/raw``.
        files_dir: folder of the four ``*-ubyte.gz`` archives.
    """

    files: IDXDataset

    def __init__(self, data_dir: str, files_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.data_dir, self.files_dir = str(data_dir), str(files_dir)

    def prepare_data(self) -> None:
        ensure_raw(self.files, self.files_dir, self.data_dir)

    def load_raw(self):
        from torchvision import datasets

        raw = ensure_raw(self.files, self.files_dir, self.data_dir)
        key = tuple(file_identity(raw / name) for name in sorted(self.files.md5))
        if key not in _PARSED:
            parser = getattr(datasets, self.files.folder)
            try:
                train = parser(self.data_dir, train=True, download=False)
                test = parser(self.data_dir, train=False, download=False)
            except (RuntimeError, ValueError, OSError) as err:
                raise DataError(f"could not parse {self.files.folder} under {self.data_dir} ({err}); delete that folder and rerun") from err
            _PARSED.clear()  # one parsed copy per process is enough
            _PARSED[key] = (train.data, train.targets, test.data, test.targets)
        return _PARSED[key]


class MNISTTaskDataModule(IDXTaskDataModule):
    """MNIST from the vendored IDX archives (``vendored_dir``: ``data/mnist``)."""

    files = DATASETS["mnist"]

    def __init__(self, data_dir: str, vendored_dir: str, **kwargs):
        super().__init__(data_dir, vendored_dir, **kwargs)
        self.vendored_dir = self.files_dir


class FashionMNISTTaskDataModule(IDXTaskDataModule):
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from a local folder of its four IDX archives
    (``files_dir``); never downloaded at run time (``python -m seqft_lightning.data.fetch``)."""

    files = DATASETS["fashion_mnist"]


class SyntheticTaskDataModule(TaskDataModule):
    """Tiny, learnable stand-in for MNIST: class-dependent Gaussian blobs rendered as 28×28 uint8.

    For tests and smoke runs only; it touches no file.
    """

    def __init__(self, train_size: int = 600, test_size: int = 200, seed: int = 0, **kwargs):
        kwargs.setdefault("samples_per_task", 20)
        kwargs.setdefault("calibration_size", 100)
        kwargs.setdefault("estimation_size", 100)
        super().__init__(**kwargs)
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
