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


def attention_args(
    key_pool: torch.Tensor,
    value_pool: torch.Tensor,
    seqs: list[tuple[int, int]],
    num_heads: int,
    g: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> tuple:
    """The kernels' positional arguments for sequences of (context_len,
    num_queries) scattered over the pools, with random queries."""
    num_blocks, head_dim = key_pool.shape[0], key_pool.shape[3]
    block_tables = scattered_block_tables([ctx for ctx, _ in seqs], num_blocks, g)
    query_start_loc = torch.tensor([0] + [n for _, n in seqs], dtype=torch.int64).cumsum(0)
    context_lens = torch.tensor([ctx for ctx, _ in seqs], dtype=torch.int64)
    query = torch.randn(int(query_start_loc[-1]), num_heads, head_dim, generator=g).to(dtype)
    return (
        query,
        key_pool,
        value_pool,
        query_start_loc,
        context_lens,
        block_tables,
        head_dim**-0.5,
    )


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
    args = attention_args(key_pool, value_pool, seqs, num_heads, g, dtype)
    query = args[0]

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
        seqs = [(ctx, 1) for ctx in contexts]  # decodes only
        args = attention_args(key_pool, value_pool, seqs, num_heads, g, dtype)
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


def int8_pools(
    shape: tuple[int, ...], g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Key and value pools of int8 rows and their scales, as the KV pool writes them
    (values in [-127, 127], one positive scale a row)."""
    pools = [torch.randint(-127, 128, shape, generator=g).to(torch.int8) for _ in range(2)]
    scales = [torch.rand(shape[:-1], generator=g) * 0.05 + 1e-3 for _ in range(2)]
    return pools[0], pools[1], scales[0], scales[1]


@pytest.mark.parametrize(
    "num_heads, num_kv_heads, sliding_window", [(9, 3, 0), (4, 1, 24), (8, 2, 0)]
)
@pytest.mark.parametrize("many_decodes", [False, True])
@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_int8_pools_match_the_reference(
    num_heads: int, num_kv_heads: int, sliding_window: int, many_decodes: bool, head_dim: int
) -> None:
    """kv_cache_dtype='int8': float32 queries over int8 pools with a scale per
    row; the kernel (register tiles for 64 and 128 dims, portable loops for 32,
    prefill tiles, split decodes) against the reference over the same rows."""
    g = torch.Generator().manual_seed(3)
    num_blocks = 200
    key_pool, value_pool, key_scales, value_scales = int8_pools(
        (num_blocks, num_kv_heads, BLOCK_SIZE, head_dim), g
    )
    seqs = [(1, 1), (700, 1), (50, 50), (130, 64), (17, 3), (97, 33)]
    if many_decodes:
        seqs = [(1, 1), (50, 50)] + [(n, 1) for n in (2, 16, 17, 48, 64, 65, 100, 150, 199, 250)]
    args = attention_args(key_pool, value_pool, seqs, num_heads, g)
    query = args[0]
    kwargs = {
        "sliding_window": sliding_window,
        "key_scales": key_scales,
        "value_scales": value_scales,
    }
    ours = _core.testing.paged_attention_cpu(*args, **kwargs)
    reference = _core.testing.paged_attention_reference(*args, **kwargs)
    assert ours.dtype == torch.float32 and ours.shape == query.shape
    # The same dequantized rows; the kernel's decodes round each query head to
    # int16 (15 bits and a scale) for their integer dot products with the keys.
    torch.testing.assert_close(ours, reference, atol=5e-4, rtol=1e-3)
    # The scales are read: halving them all changes the output.
    halved = _core.testing.paged_attention_cpu(
        *args, sliding_window=sliding_window, key_scales=key_scales, value_scales=value_scales / 2
    )
    torch.testing.assert_close(halved, ours / 2, atol=5e-5, rtol=1e-5)


def test_int8_pools_without_scales_are_refused() -> None:
    g = torch.Generator().manual_seed(4)
    key_pool, value_pool, key_scales, _ = int8_pools((4, 1, BLOCK_SIZE, 64), g)
    args = (
        torch.randn(1, 2, 64),
        key_pool,
        value_pool,
        torch.tensor([0, 1]),
        torch.tensor([5]),
        torch.tensor([[0]], dtype=torch.int32),
        0.125,
    )
    with pytest.raises(RuntimeError, match="int8 KV pools need their row scales"):
        _core.testing.paged_attention_cpu(*args)
    with pytest.raises(RuntimeError, match=r"float32 \[num_blocks, num_kv_heads, block_size\]"):
        _core.testing.paged_attention_cpu(
            *args, key_scales=key_scales, value_scales=key_scales[:, :, :8]
        )
    with pytest.raises(RuntimeError, match="row scales are for int8 KV pools only"):
        _core.testing.paged_attention_cpu(
            args[0],
            key_pool.float(),
            value_pool.float(),
            *args[3:],
            key_scales=key_scales,
            value_scales=key_scales,
        )


def hadamard(n: int) -> torch.Tensor:
    """The normalized Walsh-Hadamard matrix (Sylvester's order)."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / n**0.5


def test_kv_pool_int8_rows_round_trip() -> None:
    """The pool quantizes each written row (one KV head at one position) with
    its own scale, max |x| / 127: read back as int8 * scale, every value is
    within half a scale step; a row of zeros is zeros with scale 0. Keys are
    rotated by the Hadamard matrix first (their outlier channels spread over
    all 64) and stored pair-major in their block (dims 2p and 2p + 1 of the
    block's 16 keys side by side), values are neither. Its bytes count the
    scales."""
    spec = _core.KVCacheSpec(
        num_layers=2, num_kv_heads=3, head_dim=64, block_size=BLOCK_SIZE, dtype="int8"
    )
    assert spec.dtype == "int8"
    assert spec.bytes_per_block() == 2 * 2 * BLOCK_SIZE * 3 * (64 + 4)
    pool = _core.testing.KVPool(spec, 8)
    assert pool.key(0).dtype == torch.int8 and pool.num_bytes == 8 * spec.bytes_per_block()
    g = torch.Generator().manual_seed(5)
    key = torch.randn(5, 3, 64, generator=g) * torch.tensor([0.01, 1.0, 300.0]).view(1, 3, 1)
    value = torch.randn(5, 3, 64, generator=g)
    value[2, 1] = 0.0
    slots = torch.tensor([0, 17, 18, 100, 127], dtype=torch.int64)
    pool.write(1, slots, key, value)
    key_scales, value_scales = pool.row_scales(1)
    rotated = key @ hadamard(64)
    # [block, head, pair, key, 2] -> [block, head, key, dim]
    keys_by_row = pool.key(1).view(8, 3, 32, BLOCK_SIZE, 2).permute(0, 1, 3, 2, 4)
    keys_by_row = keys_by_row.reshape(8, 3, BLOCK_SIZE, 64)
    assert torch.allclose(rotated @ hadamard(64), key, atol=1e-3, rtol=1e-5)  # its own inverse
    for given, data, scales in (
        (rotated, keys_by_row, key_scales),
        (value, pool.value(1), value_scales),
    ):
        for t, slot in enumerate(slots.tolist()):
            block, offset = divmod(slot, BLOCK_SIZE)
            for h in range(3):
                row, scale = data[block, h, offset], scales[block, h, offset].item()
                expected_scale = given[t, h].abs().max().item() / 127
                assert scale == pytest.approx(expected_scale, rel=1e-5)
                assert row.abs().max().item() == (127 if expected_scale > 0 else 0)
                error = (row.float() * scale - given[t, h]).abs().max().item()
                assert error <= scale / 2 * (1 + 1e-4) + 1e-9, (t, h)
    assert value_scales[1, 1, 2].item() == 0.0 and not pool.value(1)[1, 1, 2].any()
    assert pool.row_scales(0) is not None and not pool.key(0).any()  # layer 0 untouched
    float_pool = _core.testing.KVPool(_core.KVCacheSpec(2, 3, 64, BLOCK_SIZE), 8)
    assert float_pool.row_scales(0) is None
