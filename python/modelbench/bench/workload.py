"""Workloads: what to send (datasets) and when (arrival times).

Datasets, each giving ``BenchRequest(prompt, prompt_len, output_len)``:
  - ``random``: random token ids decoded to text, input lengths uniform in
    ``[input_len * (1 - r), input_len * (1 + r)]`` and output lengths likewise,
    as vLLM's random dataset (``--random-range-ratio r``);
  - ``sharegpt``: a ShareGPT-format JSON file; the first human turn is the
    prompt and the reply's token count the output length; pairs shorter than
    4 tokens or longer than 1024 (prompt) / 2048 (both) are skipped, as vLLM does;
  - ``jsonl``: one ``{"prompt": ..., "output_len": N}`` per line (``output_len``
    optional: ``--random-output-len`` then);
  - ``builtin``: real prompts written for this project, shipped in the package.

Arrivals: all at once (``rate = inf``), or a Poisson process at ``rate``
requests per second; ``burstiness`` other than 1 draws gamma-distributed gaps
with the same mean (lower: burstier), as vLLM does.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from modelbench.models.tokenizer import Tokenizer

DATASETS = ("random", "sharegpt", "jsonl", "builtin")


@dataclass
class BenchRequest:
    prompt: str
    prompt_len: int
    output_len: int


def random_requests(
    tokenizer: Tokenizer, num: int, input_len: int, output_len: int, range_ratio: float, seed: int
) -> list[BenchRequest]:
    if not 0.0 <= range_ratio < 1.0:
        raise ValueError(f"random_range_ratio must be in [0, 1), got {range_ratio}")
    if input_len < 1 or output_len < 1:
        raise ValueError(
            f"random input and output lengths must be >= 1, got {input_len}, {output_len}"
        )
    rng = np.random.default_rng(seed)
    vocab = tokenizer.vocab_size
    requests = []
    for _ in range(num):
        n_in = int(
            rng.integers(
                max(1, int(input_len * (1 - range_ratio))), int(input_len * (1 + range_ratio)) + 1
            )
        )
        n_out = int(
            rng.integers(
                max(1, int(output_len * (1 - range_ratio))), int(output_len * (1 + range_ratio)) + 1
            )
        )
        # Above the bottom of the vocabulary, where tokenizers keep their special tokens.
        ids = [int(t) for t in rng.integers(min(100, vocab - 1), vocab, size=n_in)]
        text = tokenizer.decode(ids)
        # What the server sees is the text: count its tokens as the server will.
        requests.append(BenchRequest(text, len(tokenizer.encode(text)), n_out))
    return requests


def sharegpt_requests(
    tokenizer: Tokenizer, path: str | Path, num: int, seed: int, output_len: int | None = None
) -> list[BenchRequest]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"dataset_path {path}: not a readable ShareGPT JSON file: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(f"dataset_path {path}: ShareGPT data is a JSON list of conversations")
    conversations = [
        d.get("conversations") or d.get("conversation") for d in data if isinstance(d, dict)
    ]
    pairs = [
        (c[0].get("value", ""), c[1].get("value", ""))
        for c in conversations
        if isinstance(c, list) and len(c) >= 2
    ]
    random.Random(seed).shuffle(pairs)
    requests: list[BenchRequest] = []
    for prompt, reply in pairs:
        if len(requests) == num:
            break
        prompt_len = len(tokenizer.encode(prompt))
        n_out = output_len or len(tokenizer.encode(reply))
        if prompt_len < 4 or n_out < 4 or prompt_len > 1024 or prompt_len + n_out > 2048:
            continue
        requests.append(BenchRequest(prompt, prompt_len, n_out))
    if not requests:
        raise ValueError(
            f"dataset_path {path}: no usable conversation (each needs a prompt and a reply "
            "of 4 to 1024 tokens)"
        )
    return requests


def jsonl_requests(
    tokenizer: Tokenizer, path: str | Path, num: int, output_len: int
) -> list[BenchRequest]:
    requests = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"dataset_path {path}: cannot read it: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            prompt = item["prompt"]
            n_out = int(item.get("output_len", output_len))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"dataset_path {path}, line {number}: expected "
                f'{{"prompt": "...", "output_len": N}}: {exc}'
            ) from exc
        requests.append(BenchRequest(prompt, len(tokenizer.encode(prompt)), n_out))
    if not requests:
        raise ValueError(f"dataset_path {path} holds no prompts")
    return cycle(requests, num)


def builtin_requests(
    tokenizer: Tokenizer, num: int, output_len: int, seed: int
) -> list[BenchRequest]:
    text = resources.files("modelbench.bench").joinpath("prompts.jsonl").read_text()
    prompts = [json.loads(line)["prompt"] for line in text.splitlines() if line.strip()]
    random.Random(seed).shuffle(prompts)
    requests = [BenchRequest(p, len(tokenizer.encode(p)), output_len) for p in prompts]
    return cycle(requests, num)


def cycle(requests: list[BenchRequest], num: int) -> list[BenchRequest]:
    """``num`` requests, repeating the list when it is shorter."""
    return [requests[i % len(requests)] for i in range(num)]


def arrival_times(num: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """When each request is sent, in seconds from the start."""
    if rate <= 0:
        raise ValueError(f"request_rate must be > 0 (inf: all at once), got {rate}")
    if burstiness <= 0:
        raise ValueError(f"burstiness must be > 0, got {burstiness}")
    if np.isinf(rate):
        return [0.0] * num
    rng = np.random.default_rng(seed)
    # Gamma gaps with shape k and mean 1/rate; k = 1 is the exponential (Poisson).
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=num)
    return np.cumsum(gaps).tolist()
