"""Training of the interaction networks: engine, checkpoints, runs and the CLI sub-commands."""

from qmlx.train.engine import TrainConfig, Trainer, evaluate
from qmlx.train.run import train_network

__all__ = ["TrainConfig", "Trainer", "evaluate", "train_network"]
