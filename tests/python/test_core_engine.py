"""modelbench._core.Engine driven from Python with a test-double runner."""

from __future__ import annotations

import threading
import time

import pytest

from modelbench import _core

from .fake_runner import FakeRunner, expected_output


def make_config(num_blocks: int = 256, max_model_len: int = 512) -> _core.EngineConfig:
    config = _core.EngineConfig()
    config.cache.num_blocks = num_blocks
    config.cache.block_size = 16
    config.scheduler.max_model_len = max_model_len
    config.scheduler.max_num_batched_tokens = 256
    config.scheduler.max_num_seqs = 64
    config.vocab_size = 1000
    return config


def params(max_tokens: int, **kwargs) -> _core.SamplingParams:
    p = _core.SamplingParams()
    p.max_tokens = max_tokens
    for key, value in kwargs.items():
        setattr(p, key, value)
    return p


def make_engine(step_delay_s: float = 0.0, **kwargs) -> _core.Engine:
    config = make_config(**kwargs)
    runner = FakeRunner(config.cache.num_blocks, config.cache.block_size, step_delay_s)
    return _core.Engine(config, runner)


def test_step_by_hand_matches_the_model() -> None:
    engine = make_engine()
    prompts = {"a": [1, 2, 3], "b": list(range(40)), "c": [7]}
    for request_id, prompt in prompts.items():
        engine.add_request(request_id, prompt, params(6))
    got: dict[str, list[int]] = {k: [] for k in prompts}
    reasons = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            got[out.request_id].extend(out.new_token_ids)
            if out.finished:
                reasons[out.request_id] = out.finish_reason
    assert got == {k: expected_output(p, 6) for k, p in prompts.items()}
    assert reasons == {k: "length" for k in prompts}
    assert engine.stats().scheduler.kv_cache_usage == 0.0


def test_one_thousand_submissions_from_eight_threads_with_aborts() -> None:
    engine = make_engine(num_blocks=128)
    engine.start()
    aborted_ids: list[str] = []
    lock = threading.Lock()
    submitted: dict[str, tuple[list[int], int]] = {}

    def submit(thread_index: int) -> None:
        for i in range(125):
            request_id = f"{thread_index}-{i}"
            prompt = [thread_index + 1, i + 1, 7]
            max_tokens = 1 + i % 16
            engine.add_request(request_id, prompt, params(max_tokens))
            with lock:
                submitted[request_id] = (prompt, max_tokens)
            if i % 10 == 0 and engine.abort(request_id):
                with lock:
                    aborted_ids.append(request_id)

    threads = [threading.Thread(target=submit, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    tokens: dict[str, list[int]] = {}
    reasons: dict[str, str] = {}
    deadline = time.monotonic() + 120
    while len(reasons) < 1000:
        assert time.monotonic() < deadline, f"only {len(reasons)} of 1000 finished"
        for out in engine.get_outputs(timeout_s=5.0):
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
            if out.finished:
                assert out.request_id not in reasons, "a request finished twice"
                reasons[out.request_id] = out.finish_reason
    engine.shutdown()

    # An abort that races with the request's last step may find it finished.
    aborted = {r for r, why in reasons.items() if why == "abort"}
    assert aborted <= set(aborted_ids)
    assert len(aborted) >= len(aborted_ids) // 2
    for request_id, (prompt, max_tokens) in submitted.items():
        if reasons[request_id] == "length":
            assert tokens[request_id] == expected_output(prompt, max_tokens)
    assert not engine.has_unfinished_requests()
    assert engine.stats().scheduler.num_free_blocks == 128


def test_abort_mid_flight_frees_blocks() -> None:
    engine = make_engine(step_delay_s=0.01)  # 400 tokens take ~4 s: the abort lands mid-flight
    engine.start()
    engine.add_request("long", list(range(100)), params(400, ignore_eos=True), priority=0)
    seen = 0
    while seen < 5:
        seen += sum(len(o.new_token_ids) for o in engine.get_outputs(timeout_s=5.0))
    assert engine.stats().scheduler.kv_cache_usage > 0
    assert engine.abort("long") is True
    final = []
    while not final:
        final = [o for o in engine.get_outputs(timeout_s=5.0) if o.finished]
    assert final[0].finish_reason == "abort"
    assert engine.stats().scheduler.kv_cache_usage == 0.0
    engine.shutdown()


def test_shutdown_joins_and_aborts_what_is_left() -> None:
    engine = make_engine(step_delay_s=0.01)
    engine.start()
    for i in range(10):
        engine.add_request(f"r{i}", [1, 2, 3], params(500))
    started = time.monotonic()
    engine.shutdown()
    assert time.monotonic() - started < 10
    assert not engine.is_running
    assert not engine.has_unfinished_requests()
    outputs = engine.get_outputs(timeout_s=0)
    assert {o.request_id for o in outputs if o.finished and o.finish_reason == "abort"}
    with pytest.raises(RuntimeError, match="shut down"):
        engine.add_request("late", [1], params(1))


def test_output_notifier_wakes_a_waiter_without_polling() -> None:
    engine = make_engine()
    event = threading.Event()
    engine.set_output_notifier(event.set)
    engine.start()
    engine.add_request("a", [5, 6], params(2))
    assert event.wait(timeout=10)
    engine.shutdown()


@pytest.mark.parametrize(
    ("prompt", "field", "value", "message"),
    [
        ([], None, None, "empty prompt"),
        ([1] * 513, None, None, "more than max_model_len=512"),
        ([1, 1000], None, None, "outside the vocabulary"),
        ([1], "max_tokens", 0, "max_tokens must be >= 1, got 0"),
        ([1], "top_p", 1.5, "top_p must be in \\(0, 1\\]"),
        ([1], "temperature", -1.0, "temperature must be"),
        ([1], "top_k", -2, "top_k must be >= 0"),
        ([1], "min_p", 2.0, "min_p must be in \\[0, 1\\]"),
        ([1], "repetition_penalty", 0.0, "repetition_penalty"),
    ],
)
def test_bad_requests_raise_value_error(prompt, field, value, message) -> None:
    engine = make_engine()
    p = params(4)
    if field is not None:
        setattr(p, field, value)
    with pytest.raises(ValueError, match=message):
        engine.add_request("x", prompt, p)


def test_abort_of_an_unknown_id_is_a_no_op_that_says_so() -> None:
    engine = make_engine()
    assert engine.abort("never-submitted") is False


def test_duplicate_request_id_is_rejected() -> None:
    engine = make_engine()
    engine.add_request("same", [1], params(1))
    with pytest.raises(ValueError, match="already in use"):
        engine.add_request("same", [2], params(1))


def test_config_errors_name_the_value() -> None:
    config = make_config()
    config.cache.num_blocks = 2
    with pytest.raises(ValueError, match="fewer than max_model_len=512"):
        _core.Engine(config, FakeRunner(2, 16))


def test_kv_pool_is_sized_from_a_memory_budget_and_writes_slots() -> None:
    import torch

    spec = _core.KVCacheSpec(num_layers=2, num_kv_heads=2, head_dim=8, block_size=4)
    assert spec.bytes_per_block() == 2 * 2 * 4 * 2 * 8 * 4
    num_blocks = _core.num_blocks_for_memory(spec, 10 * spec.bytes_per_block() + 5)
    assert num_blocks == 10
    assert _core.available_host_memory_bytes() > 0
    pool = _core.testing.KVPool(spec, num_blocks)
    assert tuple(pool.key(0).shape) == (
        10,
        2,
        4,
        8,
    )  # [num_blocks, num_kv_heads, block_size, head_dim]
    k = torch.randn(3, 2, 8)
    v = torch.randn(3, 2, 8)
    slots = torch.tensor([0, 9, 4 * 7 + 3])  # block 0 offset 0, block 2 offset 1, block 7 offset 3
    pool.write(1, slots, k, v)
    torch.testing.assert_close(pool.key(1)[2, :, 1], k[1])
    torch.testing.assert_close(pool.value(1)[7, :, 3], v[2])
    assert pool.key(1).count_nonzero() == 3 * 2 * 8  # nothing else written
    assert pool.key(0).abs().sum() == 0  # other layers untouched
    with pytest.raises(RuntimeError, match="outside the pool"):
        pool.write(0, torch.tensor([40]), k[:1], v[:1])
    with pytest.raises(ValueError, match="dtype must be one of"):
        _core.KVCacheSpec(num_layers=1, num_kv_heads=1, head_dim=8, dtype="fp8")
    # int8 rows with a float32 scale each (kv_cache_dtype="int8"); their keys go in pairs of dims
    int8_spec = _core.KVCacheSpec(num_layers=1, num_kv_heads=1, head_dim=8, dtype="int8")
    assert int8_spec.dtype == "int8" and int8_spec.bytes_per_block() == 2 * 16 * (8 + 4)
    with pytest.raises(ValueError, match="kv_cache_dtype int8 needs an even head_dim"):
        _core.KVCacheSpec(num_layers=1, num_kv_heads=1, head_dim=7, dtype="int8")
