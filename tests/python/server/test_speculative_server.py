"""Speculative decoding in the server: --speculative-config reaches the
engine, answers stay those of plain decoding, /metrics counts proposals,
and a bad config is refused at start naming it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from modelbench.cli.main import build_parser, settings_from_args
from modelbench.config import Settings

from .conftest import KV_CACHE_MEMORY, MAX_MODEL_LEN, MODEL_NAME, free_port, run_server

SPEC = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 2}
# A prompt that repeats: the lookups find it, whatever a random model says.
PROMPT = [11, 12, 13, 14, 15] * 8


def completion(base: str) -> list[int]:
    r = httpx.post(
        f"{base}/v1/completions",
        json={
            "model": MODEL_NAME,
            "prompt": PROMPT,
            "max_tokens": 40,
            "temperature": 0.0,
            "ignore_eos": True,
            "logprobs": None,
        },
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_flag_engine_answers_and_metrics(tiny_llama_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--speculative-config",
            '{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 2}',
        ]
    )
    assert settings_from_args(args).speculative_config == SPEC
    common = dict(
        model=str(tiny_llama_path),
        served_model_name=MODEL_NAME,
        max_model_len=MAX_MODEL_LEN,
        kv_cache_memory=KV_CACHE_MEMORY,
    )
    with run_server(Settings(port=free_port(), **common), tiny_llama_path) as plain:
        expected = completion(plain.base_url)
    with run_server(
        Settings(port=free_port(), speculative_config=SPEC, **common), tiny_llama_path
    ) as spec:
        assert spec.engine.config.scheduler.speculative.num_speculative_tokens == 3
        assert completion(spec.base_url) == expected
        stats = spec.engine.stats().scheduler
        assert stats.num_spec_drafts > 0
        metrics = httpx.get(f"{spec.base_url}/metrics", timeout=30).text
        for name in ("num_drafts", "num_draft_tokens", "num_accepted_tokens"):
            assert f"modelbench:spec_decode_{name}_total{{" in metrics
        line = next(
            x
            for x in metrics.splitlines()
            if x.startswith("modelbench:spec_decode_num_drafts_total{")
        )
        assert float(line.split()[-1]) == stats.num_spec_drafts
        assert (
            'modelbench:spec_decode_num_accepted_tokens_per_pos_total{model_name="tiny-llama",position="0"'
            in metrics
        )


def test_a_bad_config_is_refused_at_start_naming_it(tiny_llama_path: Path) -> None:
    settings = Settings(
        model=str(tiny_llama_path),
        port=free_port(),
        speculative_config={"method": "medusa", "num_speculative_tokens": 2},
    )
    with pytest.raises(ValueError, match="speculative_config: method must be 'ngram' or"):
        settings.model_configs().models[0].engine_args()
