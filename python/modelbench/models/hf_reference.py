"""The same weights in Hugging Face ``transformers``: the reference that parity
tests compare against and the baseline that benchmarks measure."""

from __future__ import annotations

from typing import Any

import torch

from modelbench.models.checkpoint import Checkpoint

_MODEL_TYPES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "MistralForCausalLM": "mistral",
    "GPT2LMHeadModel": "gpt2",
}


def transformers_model(checkpoint: Checkpoint, dtype: torch.dtype = torch.float32) -> Any:
    """A ``transformers`` causal LM in eval mode holding ``checkpoint``'s weights
    (eager attention, so results do not depend on an SDPA backend)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights  # type: ignore[attr-defined,no-redef]

    if not checkpoint.weights:
        raise ValueError("this checkpoint's weights were handed to an engine; load it again")
    config_dict = dict(checkpoint.hf_config)
    model_type = config_dict.pop("model_type", None) or _MODEL_TYPES[checkpoint.architecture]
    config = AutoConfig.for_model(model_type, **config_dict)
    config._attn_implementation = "eager"
    with no_init_weights():  # every weight is assigned below
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)  # type: ignore[no-untyped-call]
    weights = {name: tensor.to(dtype) for name, tensor in checkpoint.weights.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False, assign=True)
    if unexpected:
        raise ValueError(f"transformers does not know these tensors: {sorted(unexpected)[:5]}")
    if [m for m in missing if m != "lm_head.weight"]:
        raise ValueError(f"tensors missing for transformers: {sorted(missing)[:5]}")
    if missing:  # tied embeddings: the head is the embedding matrix
        model.tie_weights()
    return model.eval()
