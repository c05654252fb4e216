"""The CPU paged attention kernel against the ATen reference path: decodes
(few, many, split over their keys), prefill chunks after cached prefixes,
GQA groups, sliding windows, head dims 32/64/128, float32, bf16 and fp16
pools, and float32 queries over a bf16 cache. Block tables scatter each
sequence over the pool, as a long-running engine's do."""

from __future__ import annotations

import pytest
import torch

from modelbench import _core

BLOCK_SIZE = 16


def scattered_block_tables(
    contexts: list[int], num_blocks: int, g: torch.Generator
) -> torch.Tensor:
    """[len(contexts), max_blocks] int32: each sequence's blocks drawn at random from the pool."""
    free_blocks = torch.randperm(num_blocks, generator=g).tolist()
    max_blocks = max(-(-ctx // BLOCK_SIZE) for ctx in contexts)
    block_tables = torch.zeros(len(contexts), max_blocks, dtype=torch.int32)
    for i, ctx in enumerate(contexts):
        for b in range(-(-ctx // BLOCK_SIZE)):
            block_tables[i, b] = free_blocks.pop()
    return block_tables


@pytest.mark.parametrize(
    "num_heads, num_kv_heads, sliding_window",
    [(4, 4, 0), (8, 2, 0), (4, 1, 24), (9, 3, 0), (4, 2, 0), (10, 2, 0)],
)
@pytest.mark.parametrize(
    "dtype, pool_dtype",
    [
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float16),
        (torch.float32, torch.bfloat16),
    ],  # the last: a float32 model over a bf16 cache (kv_cache_dtype)
)
@pytest.mark.parametrize("many_decodes", [False, True])
@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_eigen_kernel_matches_reference(
    dtype: torch.dtype,
    pool_dtype: torch.dtype,
    num_heads: int,
    num_kv_heads: int,
    sliding_window: int,
    many_decodes: bool,
    head_dim: int,
) -> None:
    """Decodes run one KV head per work item when they are few (3 here, on 2
    threads) and a whole sequence per item when they are many; head dims of
    64 and 128 take the register-tiled decode path."""
    g = torch.Generator().manual_seed(0)
    num_blocks = 160
    pool_shape = (num_blocks, num_kv_heads, BLOCK_SIZE, head_dim)
    key_pool = torch.randn(pool_shape, generator=g).to(pool_dtype)
    value_pool = torch.randn(pool_shape, generator=g).to(pool_dtype)
    # (context_len, num_queries): decodes, whole prompts, and chunks after a cached prefix.
    seqs = [(1, 1), (37, 1), (200, 1), (50, 50), (130, 64), (17, 3), (16, 16), (97, 33), (129, 65)]
    if many_decodes:
        seqs += [(n, 1) for n in (2, 15, 16, 17, 31, 48, 63, 64, 65, 100, 150, 199)]
    block_tables = scattered_block_tables([ctx for ctx, _ in seqs], num_blocks, g)
    query_start_loc = torch.tensor([0] + [n for _, n in seqs], dtype=torch.int64).cumsum(0)
    context_lens = torch.tensor([ctx for ctx, _ in seqs], dtype=torch.int64)
    query = torch.randn(int(query_start_loc[-1]), num_heads, head_dim, generator=g).to(dtype)
    scale = head_dim**-0.5
    args = (query, key_pool, value_pool, query_start_loc, context_lens, block_tables, scale)

    ours = _core.testing.paged_attention_cpu(*args, sliding_window=sliding_window)
    reference = _core.testing.paged_attention_reference(*args, sliding_window=sliding_window)
    assert ours.dtype == dtype and ours.shape == query.shape
    if dtype == torch.float32:  # both read the same (bf16) K/V and compute in fp32
        torch.testing.assert_close(ours, reference, atol=2e-5, rtol=0)
    else:  # both accumulate in fp32; the outputs differ by bf16 (fp16) rounding at most
        torch.testing.assert_close(ours.float(), reference.float(), atol=1e-2, rtol=1.6e-2)


@pytest.mark.parametrize("num_heads, num_kv_heads", [(9, 3), (4, 1), (8, 8)])
@pytest.mark.parametrize("sliding_window", [0, 200])
@pytest.mark.parametrize(
    "dtype, pool_dtype",
    [
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.bfloat16),
        (torch.float32, torch.bfloat16),
    ],
)
def test_few_decodes_split_over_their_keys_match_reference(
    num_heads: int,
    num_kv_heads: int,
    sliding_window: int,
    dtype: torch.dtype,
    pool_dtype: torch.dtype,
) -> None:
    """One or two decodes (batch 1 and 2): too few KV heads to keep 2 threads
    busy, so each KV head's keys are split into parts of whole blocks and
    merged; contexts short of a part (64 keys) and long, ending anywhere in
    a block."""
    g = torch.Generator().manual_seed(1)
    head_dim, num_blocks = 64, 200
    pool_shape = (num_blocks, num_kv_heads, BLOCK_SIZE, head_dim)
    key_pool = torch.randn(pool_shape, generator=g).to(pool_dtype)
    value_pool = torch.randn(pool_shape, generator=g).to(pool_dtype)
    for contexts in ([1], [63], [64], [129], [700], [1000, 37], [250, 513]):
        block_tables = scattered_block_tables(contexts, num_blocks, g)
        query_start_loc = torch.arange(len(contexts) + 1, dtype=torch.int64)
        context_lens = torch.tensor(contexts, dtype=torch.int64)
        query = torch.randn(len(contexts), num_heads, head_dim, generator=g).to(dtype)
        args = (
            query,
            key_pool,
            value_pool,
            query_start_loc,
            context_lens,
            block_tables,
            head_dim**-0.5,
        )
        ours = _core.testing.paged_attention_cpu(*args, sliding_window=sliding_window)
        reference = _core.testing.paged_attention_reference(*args, sliding_window=sliding_window)
        if dtype == torch.float32:
            torch.testing.assert_close(ours, reference, atol=2e-5, rtol=0, msg=str(contexts))
        else:
            torch.testing.assert_close(
                ours.float(), reference.float(), atol=1e-2, rtol=1.6e-2, msg=str(contexts)
            )


@pytest.mark.parametrize("many_decodes", [False, True])
def test_queries_as_a_view_of_wider_rows(many_decodes: bool) -> None:
    """The model passes q as a view of the qkv projection's rows (tokens
    further apart than num_heads * head_dim): read in place, the same result
    as from a contiguous copy, for decodes, split decodes and prefill chunks."""
    g = torch.Generator().manual_seed(2)
    num_heads, num_kv_heads, head_dim, num_blocks = 9, 3, 64, 120
    pool_shape = (num_blocks, num_kv_heads, BLOCK_SIZE, head_dim)
    key_pool, value_pool = (
        torch.randn(pool_shape, generator=g),
        torch.randn(pool_shape, generator=g),
    )
    seqs = (
        [(300, 1), (45, 1)]
        if not many_decodes
        else [(40, 1), (129, 1), (77, 20), (16, 16)] + [(n, 1) for n in range(20, 80, 7)]
    )
    block_tables = scattered_block_tables([ctx for ctx, _ in seqs], num_blocks, g)
    query_start_loc = torch.tensor([0] + [n for _, n in seqs], dtype=torch.int64).cumsum(0)
    context_lens = torch.tensor([ctx for ctx, _ in seqs], dtype=torch.int64)
    qkv = torch.randn(
        int(query_start_loc[-1]), (num_heads + 2 * num_kv_heads) * head_dim, generator=g
    )
    query = qkv[:, : num_heads * head_dim].view(-1, num_heads, head_dim)
    assert not query.is_contiguous()
    rest = (key_pool, value_pool, query_start_loc, context_lens, block_tables, head_dim**-0.5)
    ours = _core.testing.paged_attention_cpu(query, *rest)
    assert ours.is_contiguous()
    torch.testing.assert_close(
        ours, _core.testing.paged_attention_cpu(query.contiguous(), *rest), atol=0, rtol=0
    )
    torch.testing.assert_close(
        ours, _core.testing.paged_attention_reference(query, *rest), atol=2e-5, rtol=0
    )
