"""Pretraining and SFT: packed data, schedules, the trainer and its resumable checkpoints."""

from openm1.train.config import TrainConfig
from openm1.train.packing import Example, PackedBatch, PackedLoader, pack
from openm1.train.schedules import ContextStages, LinearSchedule, LRSchedule
from openm1.train.trainer import Trainer, make_optimizer, packed_loss

__all__ = [
    "ContextStages",
    "Example",
    "LRSchedule",
    "LinearSchedule",
    "PackedBatch",
    "PackedLoader",
    "TrainConfig",
    "Trainer",
    "make_optimizer",
    "pack",
    "packed_loss",
]
