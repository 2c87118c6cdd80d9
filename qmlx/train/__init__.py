"""Training of the interaction networks: settings, engine, runs, ensembles and shipping a run."""

from qmlx.train.config import SplitSpec, TrainConfig
from qmlx.train.engine import Trainer, evaluate
from qmlx.train.run import train_network

__all__ = ["SplitSpec", "TrainConfig", "Trainer", "evaluate", "train_network"]
