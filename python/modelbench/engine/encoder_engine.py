"""EncoderEngine: an embedding model (a BERT encoder from a
sentence-transformers folder) on the C++ ``EmbeddingRunner``.

    engine = EncoderEngine("all-MiniLM-L6-v2")
    batch = engine.embed_sync(["A sentence.", "Another one."])

Inputs are tokenized as sentence-transformers tokenizes them (``[CLS] ...
[SEP]``); the runner packs them end to end (no padding in the linears),
attends bidirectionally within each input, and pools them as the folder
says (mean or CLS, then Normalize if the folder has it).

Truncation: an input longer than the model's ``max_seq_length`` (256 for
all-MiniLM-L6-v2) is cut to its first ``max_seq_length - 1`` tokens and its
final ``[SEP]``, as sentence-transformers does, and ``EmbeddedBatch.truncated``
counts such inputs; with ``truncate=False`` it is a ValueError naming the
input and the limit.

In a server, concurrent ``embed`` calls are batched: calls that arrive while
a forward runs wait for it and then run together in the next one, on a
thread of its own (``run_on_own_thread``), as the generation engine batches
requests step by step.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass

from modelbench import _core
from modelbench.engine.async_engine import run_on_own_thread
from modelbench.engine.embedding import EmbeddedBatch, EmbedInput, token_ids_of
from modelbench.models.encoder_loader import EncoderCheckpoint, load_encoder


def truncate_ids(
    ids: list[list[int]], max_len: int, truncate: bool
) -> tuple[list[list[int]], list[bool]]:
    """Inputs cut to ``max_len`` tokens (the first ``max_len - 1`` and the last,
    the closing special token), with a flag per input saying whether it was.
    With ``truncate`` False a longer input is a ValueError naming it and the limit."""
    out, flags = [], []
    for i, one in enumerate(ids):
        if len(one) <= max_len:
            out.append(one)
            flags.append(False)
            continue
        if not truncate:
            raise ValueError(
                f"input[{i}] has {len(one)} tokens; this embedding model takes at most {max_len}. "
                "Shorten it, or let it be truncated (truncate: true, the default)"
            )
        out.append(one[: max_len - 1] + one[-1:])
        flags.append(True)
    return out, flags


@dataclass
class _Pending:
    ids: list[list[int]]
    future: asyncio.Future[list[list[float]]]


@dataclass
class EncoderStats:
    """What ``stats()`` reports: requests and inputs embedded, forwards run."""

    num_requests: int = 0
    num_inputs: int = 0
    num_batches: int = 0


class EncoderEngine:
    """An embedding model served to many callers (see the module's docstring).

    Args:
        model: "all-MiniLM-L6-v2" (the default embedding model) or a
            sentence-transformers / BERT folder.
        dtype: "float32" (default) or "bfloat16" on CPU.
        device: "cpu" (default) or "cuda".
        max_batch_tokens: tokens one forward runs at most.
        matmul_precision: torch's names for what float32 linears may do.
            "medium" (default): on a CPU with AMX tiles, bf16 products with
            float32 sums (inputs and weights rounded to bf16; norms,
            attention, GELU and pooling stay float32), about twice as fast,
            at a cosine of 0.9999+ to the float32 vectors
            (docs/performance.md, "Embeddings"); elsewhere the same as "highest".
            "highest": float32 products everywhere.
    """

    architecture = "bert"

    def __init__(
        self,
        model: str | os.PathLike[str] = "all-MiniLM-L6-v2",
        *,
        dtype: str = "float32",
        device: str = "cpu",
        max_batch_tokens: int = 8192,
        matmul_precision: str = "medium",
    ) -> None:
        if dtype == "auto":
            dtype = "float32"
        if matmul_precision not in ("highest", "medium"):
            raise ValueError(
                f"matmul_precision must be 'highest' or 'medium', got {matmul_precision!r}"
            )
        self.checkpoint: EncoderCheckpoint = load_encoder(model)
        ckpt = self.checkpoint
        self.runner = _core.EmbeddingRunner(
            ckpt.spec,
            ckpt.weights,
            dtype,
            device,
            ckpt.pooling,
            ckpt.normalize,
            ckpt.max_seq_length,
            max_batch_tokens,
            matmul_precision,
        )
        self.checkpoint.weights = {}  # the runner holds its own copies
        self.tokenizer = ckpt.tokenizer
        self.vocab_size = int(ckpt.spec.vocab_size)
        self.hidden_size = int(ckpt.spec.hidden_size)
        self._pending: list[_Pending] = []
        self._running = False
        self._lock = threading.Lock()
        self._stats = EncoderStats()

    @property
    def max_model_len(self) -> int:
        """The longest input embedded as it is (longer ones are truncated)."""
        return int(self.runner.max_seq_len)

    @property
    def matmul_precision(self) -> str:
        """ "medium" where the linears run with bf16 products, else "highest"."""
        return str(self.runner.matmul_precision)

    @property
    def pooling(self) -> str:
        return str(self.runner.pooling)

    @property
    def normalize(self) -> bool:
        return bool(self.runner.normalize)

    def token_ids(self, inputs: EmbedInput, truncate: bool = True) -> tuple[list[list[int]], int]:
        """Each input's ids as embedded (truncated when longer than
        ``max_model_len``) and how many were truncated. ValueError naming
        the input that is wrong, or too long with ``truncate`` False."""
        ids, flags = truncate_ids(
            token_ids_of(self.tokenizer, inputs), self.max_model_len, truncate
        )
        for i, one in enumerate(ids):
            bad = next((t for t in one if t < 0 or t >= self.vocab_size), None)
            if bad is not None:
                raise ValueError(
                    f"input[{i}] holds token id {bad}, "
                    f"outside the vocabulary [0, {self.vocab_size})"
                )
        return ids, sum(flags)

    def _run(self, ids: list[list[int]]) -> list[list[float]]:
        with self._lock:
            self._stats.num_batches += 1
        vectors: list[list[float]] = self.runner.embed(ids).tolist()
        return vectors

    def embed_sync(self, inputs: EmbedInput, truncate: bool = True) -> EmbeddedBatch:
        """Embed ``inputs`` in the caller's thread (blocking)."""
        ids, truncated = self.token_ids(inputs, truncate)
        with self._lock:
            self._stats.num_requests += 1
            self._stats.num_inputs += len(ids)
        vectors = self._run(ids)
        return EmbeddedBatch(vectors, sum(len(x) for x in ids), ids, truncated)

    async def embed(self, inputs: EmbedInput, truncate: bool = True) -> EmbeddedBatch:
        """Embed ``inputs`` beside other callers: requests that arrive while a
        forward runs are batched into the next one. ValueError for bad input."""
        ids, truncated = await asyncio.to_thread(self.token_ids, inputs, truncate)
        return await self.embed_ids(ids, truncated)

    async def embed_ids(self, ids: list[list[int]], truncated: int = 0) -> EmbeddedBatch:
        """``embed`` for inputs already tokenized and checked (``token_ids``)."""
        future: asyncio.Future[list[list[float]]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(ids, future))
        self._stats.num_requests += 1
        self._stats.num_inputs += len(ids)
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._batches())
        vectors = await future
        return EmbeddedBatch(vectors, sum(len(x) for x in ids), ids, truncated)

    async def _batches(self) -> None:
        """Run what is pending, one forward per round, until nothing is."""
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                flat = [one for p in batch for one in p.ids]
                try:
                    vectors = await run_on_own_thread(self._run, flat)
                except Exception as exc:  # every caller of the round learns it
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(exc)
                    continue
                start = 0
                for p in batch:
                    if not p.future.done():  # a caller that left is skipped
                        p.future.set_result(vectors[start : start + len(p.ids)])
                    start += len(p.ids)
        finally:
            self._running = False

    def is_healthy(self) -> bool:
        return True

    def stats(self) -> EncoderStats:
        return EncoderStats(**vars(self._stats))

    def shutdown(self) -> None:
        """Nothing runs in the background between calls: nothing to stop."""
