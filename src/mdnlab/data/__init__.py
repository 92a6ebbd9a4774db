"""Data modules: a problem's points as standardised, split, in-memory tensors for Lightning."""

from mdnlab.data.array import ArrayDataModule
from mdnlab.data.batches import Standardizer, TensorBatches, split_sizes
from mdnlab.data.modules import (
    RobotArmDataModule,
    SinusoidDataModule,
    TableDataModule,
)
from mdnlab.data.sbibm import SBIBMDataModule
from mdnlab.data.uci import UCIDataModule

__all__ = [
    "ArrayDataModule",
    "RobotArmDataModule",
    "SBIBMDataModule",
    "SinusoidDataModule",
    "Standardizer",
    "TableDataModule",
    "TensorBatches",
    "UCIDataModule",
    "split_sizes",
]
