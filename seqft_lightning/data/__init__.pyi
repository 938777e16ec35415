from .datamodule import FashionMNISTTaskDataModule as FashionMNISTTaskDataModule
from .datamodule import IDXTaskDataModule as IDXTaskDataModule
from .datamodule import MNISTTaskDataModule as MNISTTaskDataModule
from .datamodule import SyntheticTaskDataModule as SyntheticTaskDataModule
from .datamodule import TaskDataModule as TaskDataModule
from .loaders import TensorBatchLoader as TensorBatchLoader
from .splits import Splits as Splits
from .splits import make_splits as make_splits
