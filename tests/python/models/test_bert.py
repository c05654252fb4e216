"""The C++ BERT encoder (EmbeddingRunner through EncoderEngine and LLM)
against ``transformers``' BertModel with the sentence-transformers folder's
pooling and normalization: all-MiniLM-L6-v2 on a few hundred English
sentences (tests/python/data/embedding_sentences.json), batched and one at
a time, inputs past its 256-token window truncated as sentence-transformers
truncates them; and a tiny random-weight BertModel folder with CLS pooling,
no Normalize module, tanh GELU and pytorch_model.bin weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from modelbench import LLM
from modelbench.engine.encoder_engine import EncoderEngine
from modelbench.models.checkpoint import CheckpointError
from modelbench.models.encoder_loader import default_embedding_model_path, load_encoder

transformers = pytest.importorskip("transformers")

DATA = json.loads((Path(__file__).parents[1] / "data" / "embedding_sentences.json").read_text())
SENTENCES: list[str] = DATA["sentences"]
LONG: list[str] = DATA["long"]
MIN_COSINE = 0.9999


def reference_embeddings(
    folder: Path, texts: list[str], max_len: int, pooling: str, normalize: bool
) -> tuple[torch.Tensor, list[list[int]]]:
    """What sentence-transformers computes: the tokenizer truncating to
    max_len, BertModel, then mean (over the attention mask) or CLS pooling."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    out, ids = [], []
    for start in range(0, len(texts), 32):
        batch = tokenizer(
            texts[start : start + 32],
            padding=True,
            truncation=True,
            max_length=max_len,
            return_tensors="pt",
        )
        with torch.no_grad():
            states = model(**batch).last_hidden_state.double()
        mask = batch["attention_mask"].unsqueeze(-1).double()
        pooled = (states * mask).sum(1) / mask.sum(1) if pooling == "mean" else states[:, 0]
        if normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        out.append(pooled)
        ids += [
            row[row_mask.bool()].tolist()
            for row, row_mask in zip(batch["input_ids"], batch["attention_mask"])
        ]
    return torch.cat(out), ids


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


@pytest.fixture(scope="module")
def minilm() -> EncoderEngine:
    return EncoderEngine("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def minilm_reference() -> tuple[torch.Tensor, list[list[int]]]:
    return reference_embeddings(default_embedding_model_path(), SENTENCES + LONG, 256, "mean", True)


def test_the_folder_is_read_as_sentence_transformers_says(minilm: EncoderEngine) -> None:
    assert (minilm.pooling, minilm.normalize, minilm.max_model_len) == ("mean", True, 256)
    assert minilm.hidden_size == 384


def test_batched_matches_transformers(minilm: EncoderEngine, minilm_reference) -> None:
    expected, expected_ids = minilm_reference
    got = minilm.embed_sync(SENTENCES + LONG)
    assert got.token_ids == expected_ids  # the same tokens, the long ones truncated the same way
    assert got.truncated == len(LONG)
    assert all(len(ids) == 256 for ids in got.token_ids[len(SENTENCES) :])
    vectors = torch.tensor(got.embeddings)
    assert vectors.shape == (len(SENTENCES) + len(LONG), 384)
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(len(vectors)), atol=1e-5)
    worst = cosines(vectors, expected).min().item()
    assert worst >= MIN_COSINE, f"lowest cosine {worst}"


def test_one_at_a_time_matches_transformers(minilm: EncoderEngine, minilm_reference) -> None:
    expected, _ = minilm_reference
    texts = SENTENCES + LONG
    vectors = torch.tensor([minilm.embed_sync(text).embeddings[0] for text in texts])
    worst = cosines(vectors, expected).min().item()
    assert worst >= MIN_COSINE, f"lowest cosine {worst}"


def test_truncation_off_refuses_long_input_naming_the_limit(minilm: EncoderEngine) -> None:
    with pytest.raises(ValueError, match=r"input\[1\] has \d+ tokens; .* at most 256"):
        minilm.embed_sync([SENTENCES[0], LONG[0]], truncate=False)
    assert minilm.embed_sync(SENTENCES[:3], truncate=False).truncated == 0


def test_llm_embed_and_encode_in_vllm_shapes() -> None:
    llm = LLM("all-MiniLM-L6-v2")
    outs = llm.embed(["A man is eating food.", "A man is eating a piece of bread.", LONG[0]])
    assert [len(o.outputs.embedding) for o in outs] == [384, 384, 384]
    assert len(outs[2].prompt_token_ids) == 256
    a, b = (torch.tensor(o.outputs.embedding) for o in outs[:2])
    assert 0.5 < float(a @ b) < 1.0
    pooled = llm.encode("A man is eating food.")
    assert torch.allclose(pooled[0].outputs.data, a, atol=1e-6)
    with pytest.raises(ValueError, match="at most 256"):
        llm.embed(LONG[0], truncate=False)
    with pytest.raises(ValueError, match="is an embedding model"):
        llm.generate("Hello")


def test_bad_inputs_are_value_errors(minilm: EncoderEngine) -> None:
    with pytest.raises(ValueError, match="empty string"):
        minilm.embed_sync(["fine", ""])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        minilm.embed_sync([[101, 30522, 102]])
    with pytest.raises(ValueError, match="at least one"):
        minilm.embed_sync([])


def tiny_bert_folder(path: Path, pooling: str = "cls") -> Path:
    """A random-weight BertModel saved as a sentence-transformers folder
    (CLS pooling, no Normalize), with pytorch_model.bin weights."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=80,
        hidden_act="gelu_new",
        layer_norm_eps=1e-7,
    )
    model = transformers.BertModel(config).eval()
    with torch.no_grad():  # a non-zero token type 0 row, so that it is tested
        model.embeddings.token_type_embeddings.weight.normal_(0.0, 0.5)
    model.save_pretrained(path, safe_serialization=False)
    source = default_embedding_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, path / name)
    (path / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling",
                },
            ]
        )
    )
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 64, "pooling_mode": pooling})
    )
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48}))
    return path


def test_tiny_random_bert_with_cls_pooling(tmp_path: Path) -> None:
    folder = tiny_bert_folder(tmp_path / "tiny")
    # float32 products: equal to transformers' within float32 rounding
    engine = EncoderEngine(folder, matmul_precision="highest")
    assert engine.matmul_precision == "highest"
    assert (engine.pooling, engine.normalize, engine.max_model_len) == ("cls", False, 48)
    texts = SENTENCES[:40] + LONG[:2]
    expected, expected_ids = reference_embeddings(folder, texts, 48, "cls", False)
    got = engine.embed_sync(texts)
    assert got.token_ids == expected_ids and got.truncated == 2
    vectors = torch.tensor(got.embeddings)
    assert not torch.allclose(vectors.norm(dim=-1), torch.ones(len(texts)))  # not normalized
    assert cosines(vectors, expected).min().item() >= MIN_COSINE
    assert torch.allclose(vectors.double(), expected, rtol=1e-3, atol=1e-4)
    single = torch.tensor(engine.embed_sync(texts[5]).embeddings[0])
    assert torch.allclose(single, vectors[5], atol=1e-4)
    # the default (bf16 products where the CPU has AMX): the same directions
    default = torch.tensor(EncoderEngine(folder).embed_sync(texts).embeddings)
    assert cosines(default, expected).min().item() >= MIN_COSINE


def test_matmul_precision_is_checked_and_reported() -> None:
    from modelbench import _core

    with pytest.raises(
        ValueError, match="matmul_precision must be 'highest' or 'medium', got 'low'"
    ):
        EncoderEngine("all-MiniLM-L6-v2", matmul_precision="low")
    # "medium" runs bf16 products exactly where this process can use AMX tiles
    engine = EncoderEngine("all-MiniLM-L6-v2")
    assert engine.matmul_precision == ("medium" if _core.amx_linear_supported() else "highest")


def test_unsupported_folders_are_refused_by_name(tmp_path: Path) -> None:
    folder = tiny_bert_folder(tmp_path / "max", pooling="max")
    with pytest.raises(CheckpointError, match="pooling mode 'max' is not supported"):
        load_encoder(folder)
    with pytest.raises(CheckpointError, match="embedding model folder not found"):
        load_encoder(tmp_path / "nothing")


def test_concurrent_calls_are_batched_into_shared_forwards(minilm: EncoderEngine) -> None:
    import asyncio

    texts = SENTENCES[:24]

    async def all_at_once() -> list[list[float]]:
        before = minilm.stats().num_batches
        outs = await asyncio.gather(*(minilm.embed(t) for t in texts))
        forwards = minilm.stats().num_batches - before
        assert forwards < len(texts), "concurrent requests ran one forward each"
        return [o.embeddings[0] for o in outs]

    batched = torch.tensor(asyncio.run(all_at_once()))
    alone = torch.tensor(minilm.embed_sync(texts).embeddings)
    assert cosines(batched, alone).min().item() >= MIN_COSINE
