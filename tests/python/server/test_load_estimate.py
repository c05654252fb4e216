"""The memory an admin load is estimated to take, before any weight is read:
a GGUF file kept quantized counts as its size; dequantized, as its
parameters in the load dtype."""

from __future__ import annotations

from modelbench.config import ModelConfig
from modelbench.models.default_model import default_model_path
from modelbench.models.footprint import count_parameters
from modelbench.server.load_checks import LOAD_PEAK_FACTOR, estimate_memory


def test_a_quantized_gguf_counts_its_file_and_a_dequantized_one_its_floats() -> None:
    path = default_model_path()
    quantized = estimate_memory(ModelConfig(name="m", kv_cache_memory=1 << 20))
    assert quantized.weights_bytes == path.stat().st_size
    assert quantized.peak_bytes == int(LOAD_PEAK_FACTOR * path.stat().st_size) + (1 << 20)
    floats = estimate_memory(ModelConfig(name="m", dtype="float32", kv_cache_memory=1 << 20))
    assert floats.weights_bytes == 4 * count_parameters(None)
    assert floats.weights_bytes > 5 * quantized.weights_bytes
