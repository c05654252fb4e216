"""Hugging Face folder loading, validation errors, the tokenizer and incremental detokenizer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from modelbench.models import (
    IncrementalDetokenizer,
    Tokenizer,
    expected_weight_shapes,
    load_checkpoint,
    rope_parameters,
)

from ..tiny_models import TINY_KINDS, load_reference_model

SAMPLE_TEXTS = [
    "What is the capital of France?",
    "def forward(self, x):\n    return x  # done\n",
    "caf\u00e9 \u65e5\u672c\u8a9e \U0001f600\U0001f680 na\u00efve",
    "  leading and   internal   spaces\n\n\ttabs  ",
    "<|im_start|>user\nhi<|im_end|>",
]

TinyPath = Callable[[str], Path]


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_tiny_model_round_trips(kind: str, tiny_model_path: TinyPath) -> None:
    path = tiny_model_path(kind)
    checkpoint = load_checkpoint(path)
    reference = load_reference_model(path)

    assert checkpoint.architecture == reference.config.architectures[0]
    assert checkpoint.hf_config == json.loads((path / "config.json").read_text())
    assert checkpoint.source == str(path)
    state = reference.state_dict()
    if reference.config.tie_word_embeddings:
        del state["lm_head.weight"]  # tied: saved once, as the embedding
    assert checkpoint.weights.keys() == state.keys()
    for name, tensor in checkpoint.weights.items():
        assert tensor.dtype == torch.float32 and tensor.is_contiguous()
        torch.testing.assert_close(tensor, state[name], rtol=0, atol=0, msg=name)
    shapes = expected_weight_shapes(checkpoint.architecture, checkpoint.hf_config)
    assert shapes == {name: tuple(t.shape) for name, t in state.items()}


def test_bf16_load(tiny_model_path: TinyPath) -> None:
    checkpoint = load_checkpoint(tiny_model_path("qwen2"), dtype=torch.bfloat16)
    reference = load_reference_model(tiny_model_path("qwen2")).state_dict()
    for name, tensor in checkpoint.weights.items():
        assert tensor.dtype == torch.bfloat16
        torch.testing.assert_close(tensor, reference[name].to(torch.bfloat16), msg=name)


def test_rope_parameters_reads_llama3_scaling(tiny_model_path: TinyPath) -> None:
    config = load_checkpoint(tiny_model_path("llama3_rope")).hf_config
    rope = rope_parameters(config)
    assert rope["rope_type"] == "llama3"
    assert rope["factor"] == 8.0 and rope["original_max_position_embeddings"] == 32
    assert rope["rope_theta"] == 500000.0
    old_style = {"rope_theta": 1e4, "rope_scaling": {"type": "linear", "factor": 2.0}}
    assert rope_parameters(old_style) == {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}


def test_sharded_safetensors(tiny_model_path: TinyPath, tmp_path: Path) -> None:
    reference = load_reference_model(tiny_model_path("llama_gqa"))
    reference.save_pretrained(tmp_path, max_shard_size="50KB")
    AutoTokenizer.from_pretrained(tiny_model_path("llama_gqa")).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    checkpoint = load_checkpoint(tmp_path)
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(checkpoint.weights[name], tensor, msg=name)


def test_pytorch_model_bin(tiny_model_copy: TinyPath) -> None:
    path = tiny_model_copy("gpt2")
    weights = load_file(path / "model.safetensors")
    (path / "model.safetensors").unlink()
    # Original GPT-2 checkpoints name tensors without "transformer." and carry mask buffers.
    old_names = {name.removeprefix("transformer."): t for name, t in weights.items()}
    old_names["h.0.attn.bias"] = torch.ones(1, 1, 8, 8)
    torch.save(old_names, path / "pytorch_model.bin")
    checkpoint = load_checkpoint(path)
    assert checkpoint.weights.keys() == weights.keys()


# --- errors ---------------------------------------------------------------------------


def test_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model path not found: .*nope"):
        load_checkpoint(tmp_path / "nope")


def test_not_a_model_file(tmp_path: Path) -> None:
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(ValueError, match="expected a Hugging Face model folder or a .gguf file"):
        load_checkpoint(tmp_path / "weights.txt")


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no config.json"):
        load_checkpoint(tmp_path)


def test_unsupported_architecture(tiny_model_copy: TinyPath) -> None:
    path = tiny_model_copy("llama_gqa")
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (path / "config.json").write_text(json.dumps(config))
    expected = r"unsupported architecture.*BertForMaskedLM.*supported: LlamaForCausalLM"
    with pytest.raises(ValueError, match=expected):
        load_checkpoint(path)


def test_truncated_safetensors(tiny_model_copy: TinyPath) -> None:
    path = tiny_model_copy("llama_gqa")
    weights_file = path / "model.safetensors"
    data = weights_file.read_bytes()
    weights_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read weights file .*model\.safetensors"):
        load_checkpoint(path)


def test_missing_tensor(tiny_model_copy: TinyPath) -> None:
    path = tiny_model_copy("llama_gqa")
    weights = load_file(path / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing tensor model\.layers\.1\.mlp\.up_proj\.weight"):
        load_checkpoint(path)


def test_wrong_shape(tiny_model_copy: TinyPath) -> None:
    path = tiny_model_copy("llama_gqa")
    weights = load_file(path / "model.safetensors")
    weights["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(48, 64)
    save_file(weights, path / "model.safetensors")
    with pytest.raises(
        ValueError,
        match=r"model\.layers\.0\.self_attn\.k_proj\.weight .* "
        r"shape \[48, 64\], expected \[32, 64\]",
    ):
        load_checkpoint(path)


def test_unexpected_tensor(tiny_model_copy: TinyPath) -> None:
    path = tiny_model_copy("llama_gqa")  # attention_bias is false: a bias would be dropped
    weights = load_file(path / "model.safetensors")
    weights["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(64)
    save_file(weights, path / "model.safetensors")
    expected = r"unexpected tensor model\.layers\.0\.self_attn\.q_proj\.bias"
    with pytest.raises(ValueError, match=expected):
        load_checkpoint(path)


# --- tokenizer ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_tokenizer_pair(tiny_model_path: TinyPath) -> tuple[Tokenizer, object]:
    path = tiny_model_path("llama_gqa")
    return Tokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("text", SAMPLE_TEXTS)
def test_tokenizer_matches_transformers(text: str, tiny_tokenizer_pair: tuple) -> None:
    tokenizer, hf = tiny_tokenizer_pair
    ids = tokenizer.encode(text)
    assert ids == hf.encode(text)
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert tokenizer.decode(ids) == hf.decode(ids, skip_special_tokens=True)


def test_tokenizer_special_tokens(tiny_tokenizer_pair: tuple) -> None:
    tokenizer, hf = tiny_tokenizer_pair
    assert tokenizer.eos_token_id == hf.eos_token_id == 2
    assert tokenizer.bos_token_id == hf.bos_token_id == 0
    assert tokenizer.vocab_size == len(hf)


def test_chat_template_matches_transformers(tiny_tokenizer_pair: tuple) -> None:
    tokenizer, hf = tiny_tokenizer_pair
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    for add_generation_prompt in (True, False):
        expected = hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        assert tokenizer.apply_chat_template(messages, add_generation_prompt) == expected
    assert tokenizer.apply_chat_template(messages[1:]).endswith(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_no_chat_template_raises(tiny_tokenizer_pair: tuple) -> None:
    tokenizer, _ = tiny_tokenizer_pair
    plain = Tokenizer(tokenizer.backend, eos_token="<|im_end|>")
    with pytest.raises(ValueError, match="no chat template"):
        plain.apply_chat_template([{"role": "user", "content": "hi"}])


FAMILY_AND_HELLO = "\U0001f468\u200d\U0001f469\u200d\U0001f467 \u4f60\u597d\u4e16\u754c"


@pytest.mark.parametrize("text", [*SAMPLE_TEXTS, FAMILY_AND_HELLO])
def test_incremental_detokenizer(text: str, tiny_tokenizer_pair: tuple) -> None:
    tokenizer, _ = tiny_tokenizer_pair
    ids = tokenizer.encode(text)
    detokenizer = IncrementalDetokenizer(tokenizer)
    deltas = [detokenizer.add(token_id) for token_id in ids]
    deltas.append(detokenizer.flush())
    assert "".join(deltas) == tokenizer.decode(ids)
    assert not any("\ufffd" in delta for delta in deltas)


def test_incremental_detokenizer_holds_back_split_characters(tiny_tokenizer_pair: tuple) -> None:
    tokenizer, _ = tiny_tokenizer_pair
    ids = tokenizer.encode("\U0001f680")  # not in the tiny vocabulary: split into byte tokens
    assert len(ids) >= 2
    detokenizer = IncrementalDetokenizer(tokenizer, prompt_ids=tokenizer.encode("Hi "))
    deltas = [detokenizer.add(token_id) for token_id in ids]
    assert deltas == [""] * (len(ids) - 1) + ["\U0001f680"]


def test_incremental_detokenizer_flushes_invalid_tail(tiny_tokenizer_pair: tuple) -> None:
    tokenizer, _ = tiny_tokenizer_pair
    ids = tokenizer.encode("ok \U0001f680")[:-1]  # stream stopped inside a character
    detokenizer = IncrementalDetokenizer(tokenizer)
    text = "".join(detokenizer.add(token_id) for token_id in ids) + detokenizer.flush()
    assert text == tokenizer.decode(ids)
