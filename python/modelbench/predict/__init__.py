"""Tensor models: TorchScript files with a config beside them, served
through the C++ dynamic batcher (``PredictEngine``)."""

from modelbench.predict.config import TensorModelConfig, is_tensor_model, load_config
from modelbench.predict.engine import PredictEngine, PredictOutput, QueueFull

__all__ = [
    "PredictEngine",
    "PredictOutput",
    "QueueFull",
    "TensorModelConfig",
    "is_tensor_model",
    "load_config",
]
