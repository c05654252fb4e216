"""The engine API: ``LLM`` for notebooks and scripts, ``AsyncEngine`` for
servers, ``EngineArgs``, ``SamplingParams`` and the request outputs, over the
C++ engine in ``modelbench._core``."""

from modelbench.engine.async_engine import AsyncEngine
from modelbench.engine.embedding import (
    EmbeddingOutput,
    EmbeddingRequestOutput,
    PoolingOutput,
    PoolingRequestOutput,
)
from modelbench.engine.engine_args import EngineArgs
from modelbench.engine.guide_worker import GuidedDecodingError
from modelbench.engine.guided import GuidedDecodingParams
from modelbench.engine.llm import LLM
from modelbench.engine.outputs import CompletionOutput, Logprob, RequestOutput
from modelbench.engine.sampling_params import SamplingParams

__all__ = [
    "AsyncEngine",
    "CompletionOutput",
    "EmbeddingOutput",
    "EmbeddingRequestOutput",
    "EngineArgs",
    "GuidedDecodingError",
    "GuidedDecodingParams",
    "LLM",
    "Logprob",
    "PoolingOutput",
    "PoolingRequestOutput",
    "RequestOutput",
    "SamplingParams",
]
