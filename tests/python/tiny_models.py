"""Tiny random-weight Hugging Face checkpoints for tests (no downloads).

Each "kind" is a small (hidden 64, 2 layers, vocab of a few hundred) model of
one architecture that modelbench serves, built with ``transformers`` from a
fixed seed and saved as a Hugging Face folder: ``config.json``,
``model.safetensors`` and tokenizer files (``tokenizer.json`` of a byte-level
BPE trained in code on a fixed corpus, with a ChatML chat template).

Typical use, in a parity test::

    from tiny_models import TINY_KINDS, build_tiny_model, load_reference_model

    @pytest.mark.parametrize("kind", TINY_KINDS)
    def test_parity(kind, tmp_path):
        path = build_tiny_model(kind, tmp_path / kind)
        reference = load_reference_model(path)   # transformers, float32, eval
        ...

Kinds (``TINY_KINDS``):

- ``llama_gqa``    Llama, 4 query heads over 2 KV heads, untied embeddings
- ``llama_mha``    Llama, 4 heads, 4 KV heads, untied embeddings
- ``llama_tied``   Llama GQA with ``tie_word_embeddings=True`` (no lm_head saved)
- ``llama3_rope``  Llama GQA with llama3 ``rope_scaling`` (factor 8, original 32)
- ``qwen2``        Qwen2 (q/k/v biases), GQA, untied
- ``mistral``      Mistral, GQA, sliding window larger than the context
- ``gpt2``         GPT-2 (learned positions, LayerNorm, Conv1D weights), tied

Norm weights and biases are randomised too (not left at 1 and 0), so a
parity test notices an implementation that drops a bias or a norm weight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

TINY_KINDS: list[str] = [
    "llama_gqa",
    "llama_mha",
    "llama_tied",
    "llama3_rope",
    "qwen2",
    "mistral",
    "gpt2",
]

SEED = 0
HIDDEN_SIZE = 64
NUM_LAYERS = 2
NUM_HEADS = 4
NUM_KV_HEADS = 2
INTERMEDIATE_SIZE = 128
MAX_POSITIONS = 256
TOKENIZER_VOCAB_SIZE = 384  # requested from the BPE trainer; see tiny_tokenizer()

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS_TOKEN = "<|im_end|>"
BOS_TOKEN = "<|endoftext|>"

# ChatML, as SmolLM2 and Qwen2 use it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Language models predict the next token from the tokens before it.",
    "def forward(self, x):\n    return self.proj(x) + x\n",
    "for i in range(10):\n    print(i * i)\n",
    "Hello, world! Hello again, world.",
    "A paged KV cache stores keys and values in fixed-size blocks.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024.",
    "Unicode: caf\u00e9, na\u00efve, \u00fcber, \u65e5\u672c\u8a9e, \U0001f600.",
    "the cat sat on the mat; the dog sat on the log.",
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 style) trained on a fixed corpus.

    Deterministic: the same corpus and trainer settings always give the same
    vocabulary. Any text encodes (byte fallback through the byte alphabet).
    Special tokens: ``<|endoftext|>`` (bos, id 0), ``<|im_start|>`` (1),
    ``<|im_end|>`` (eos, 2).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_config(kind: str, vocab_size: int, **overrides: Any) -> PretrainedConfig:
    """The ``transformers`` config of a tiny model of ``kind``.

    ``overrides`` are config fields that replace the defaults (for example
    ``num_hidden_layers=3`` or ``tie_word_embeddings=True``).
    """
    tokens = {"bos_token_id": 0, "eos_token_id": 2, "vocab_size": vocab_size}
    llama_like = dict(
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        intermediate_size=INTERMEDIATE_SIZE,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        **tokens,
    )
    if kind == "llama_gqa":
        fields = llama_like
        cls: type[PretrainedConfig] = LlamaConfig
    elif kind == "llama_mha":
        fields = {**llama_like, "num_key_value_heads": NUM_HEADS}
        cls = LlamaConfig
    elif kind == "llama_tied":
        fields = {**llama_like, "tie_word_embeddings": True}
        cls = LlamaConfig
    elif kind == "llama3_rope":
        rope_scaling = {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        }
        fields = {**llama_like, "rope_scaling": rope_scaling, "rope_theta": 500000.0}
        cls = LlamaConfig
    elif kind == "qwen2":
        fields = {**llama_like, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6}
        cls = Qwen2Config
    elif kind == "mistral":
        fields = {**llama_like, "sliding_window": 4096}
        cls = MistralConfig
    elif kind == "gpt2":
        fields = dict(
            n_embd=HIDDEN_SIZE,
            n_layer=NUM_LAYERS,
            n_head=NUM_HEADS,
            n_positions=MAX_POSITIONS,
            n_inner=None,  # 4 * n_embd
            tie_word_embeddings=True,
            **tokens,
        )
        cls = GPT2Config
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}; expected one of {TINY_KINDS}")
    return cls(**{**fields, **overrides})


_MODEL_CLASSES: dict[type[PretrainedConfig], type[PreTrainedModel]] = {
    LlamaConfig: LlamaForCausalLM,
    Qwen2Config: Qwen2ForCausalLM,
    MistralConfig: MistralForCausalLM,
    GPT2Config: GPT2LMHeadModel,
}


def _randomise_norms_and_biases(model: PreTrainedModel) -> None:
    """Move 1-D parameters away from their 1/0 init so parity tests see them."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim != 1:
                continue
            if name.endswith("bias"):
                param.normal_(0.0, 0.1)
            else:
                param.copy_(1.0 + 0.1 * torch.randn_like(param))


def build_tiny_model(kind: str, path: Path | str, **overrides: Any) -> Path:
    """Build a tiny random-weight model of ``kind`` and save it as an HF folder.

    Args:
        kind: one of ``TINY_KINDS``.
        path: the folder to write (created if missing).
        **overrides: config fields that replace the kind's defaults.

    Returns:
        ``path`` as a ``Path``: a folder with ``config.json``,
        ``model.safetensors``, ``generation_config.json`` and tokenizer files
        that ``transformers.AutoModelForCausalLM.from_pretrained`` and
        ``modelbench.models.load_checkpoint`` both read.

    The weights depend only on ``kind``, ``overrides`` and the fixed seed.
    """
    path = Path(path)
    tokenizer = tiny_tokenizer()
    config = tiny_config(kind, vocab_size=len(tokenizer), **overrides)
    torch.manual_seed(SEED)
    model = _MODEL_CLASSES[type(config)](config).eval()
    _randomise_norms_and_biases(model)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load_reference_model(path: Path | str) -> PreTrainedModel:
    """The ``transformers`` model saved at ``path``, float32, eval mode, eager attention."""
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", local_files_only=True
    )
    return model.eval()


def build_all_tiny_models(root: Path | str) -> dict[str, Path]:
    """Build every kind under ``root/<kind>``; returns kind -> folder."""
    root = Path(root)
    return {kind: build_tiny_model(kind, root / kind) for kind in TINY_KINDS}
