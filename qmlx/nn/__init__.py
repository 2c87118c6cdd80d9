"""Neural network building blocks and models (torch)."""

from qmlx.nn.batch import Batch, PairCache, make_batch
from qmlx.nn.io import (
    energy_and_forces,
    is_network_file,
    load_network,
    predict_forces,
    predict_network,
    save_network,
)
from qmlx.nn.layers import (
    AtomwiseHead,
    CosineCutoff,
    Dense,
    DTNNInteraction,
    ElementEmbedding,
    GaussianRBF,
    SchNetInteraction,
    ShiftedSoftplus,
    shifted_softplus,
)
from qmlx.nn.models import DTNN, NetworkOutput, SchNet, build_model

__all__ = [
    "AtomwiseHead", "Batch", "CosineCutoff", "DTNN", "DTNNInteraction", "Dense", "ElementEmbedding",
    "GaussianRBF", "NetworkOutput", "PairCache", "SchNet", "SchNetInteraction", "ShiftedSoftplus",
    "build_model", "energy_and_forces", "is_network_file", "load_network", "make_batch", "predict_forces",
    "predict_network", "save_network", "shifted_softplus",
]  # fmt: skip
