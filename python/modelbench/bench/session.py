"""One benchmark run from its configuration: the tokenizer, the workload,
the target, the run, and the result (vLLM's keys, plus the configuration,
the environment and the client's overhead)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import platform
import subprocess
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modelbench.bench import workload
from modelbench.bench.load_generator import run_workload
from modelbench.bench.metrics import DEFAULT_PERCENTILES, parse_goodput, summarize

MODEL_PATH_BACKENDS = ("engine", "transformers")


@dataclass
class BenchConfig:
    backend: str = "modelbench"
    base_url: str = "http://127.0.0.1:8000"
    model: str | None = None
    tokenizer: str | None = None
    api_key: str | None = None
    dataset: str = "random"
    dataset_path: str | None = None
    num_prompts: int = 100
    random_input_len: int = 256
    random_output_len: int = 64
    random_range_ratio: float = 0.0
    request_rate: float = math.inf
    burstiness: float = 1.0
    max_concurrency: int | None = None
    batch_size: int = 1
    dtype: str = "float32"
    seed: int = 0
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    goodput: list[str] | None = None
    name: str | None = None
    sweep: str | None = None

    def validate(self) -> None:
        if self.num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1, got {self.num_prompts}")
        if self.dataset in ("sharegpt", "jsonl") and not self.dataset_path:
            raise ValueError(f"dataset {self.dataset} needs --dataset-path")
        if self.backend not in ("openai", "openai-chat", "modelbench", "engine", "transformers"):
            raise ValueError(
                f"backend {self.backend!r} is not one of openai, openai-chat, modelbench, "
                "engine, transformers"
            )
        if self.backend in ("openai", "openai-chat") and not self.model:
            raise ValueError("the openai backends need --model: the name the server serves")
        if self.backend == "transformers":
            from modelbench.bench.hf_target import check_concurrency

            if self.batch_size < 1:
                raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
            check_concurrency(self.max_concurrency, self.batch_size)
        for p in self.percentiles:
            if not 0 < p <= 100:
                raise ValueError(f"percentiles must be in (0, 100], got {p}")

    def tokenizer_source(self) -> str | None:
        """Where the tokenizer comes from: --tokenizer, else --model when it is a path."""
        if self.tokenizer:
            return self.tokenizer
        if self.model and Path(self.model).exists():
            return self.model
        return None  # the default model's


def build_requests(config: BenchConfig, tokenizer: Any) -> list[workload.BenchRequest]:
    if config.dataset == "random":
        return workload.random_requests(
            tokenizer,
            config.num_prompts,
            config.random_input_len,
            config.random_output_len,
            config.random_range_ratio,
            config.seed,
        )
    if config.dataset == "sharegpt":
        return workload.sharegpt_requests(
            tokenizer, config.dataset_path or "", config.num_prompts, config.seed
        )
    if config.dataset == "jsonl":
        return workload.jsonl_requests(
            tokenizer, config.dataset_path or "", config.num_prompts, config.random_output_len
        )
    return workload.builtin_requests(
        tokenizer, config.num_prompts, config.random_output_len, config.seed
    )


async def build_target(
    config: BenchConfig, tokenizer: Any, requests: list[workload.BenchRequest]
) -> Any:
    from modelbench.bench.targets import EngineTarget, OpenAITarget

    if config.backend in ("openai", "openai-chat", "modelbench"):
        model = config.model or "SmolLM2-135M-Instruct"
        extra = {"ignore_eos": True} if config.backend == "modelbench" else None
        return OpenAITarget(
            config.base_url,
            model,
            chat=config.backend == "openai-chat",
            api_key=config.api_key,
            tokenizer=tokenizer,
            extra_body=extra,
        )
    if config.backend == "engine":
        from modelbench.engine import AsyncEngine, EngineArgs

        # Room for the longest request (BOS and template tokens included).
        max_len = max(r.prompt_len + r.output_len for r in requests) + 8
        args = EngineArgs(model=config.model, dtype=config.dtype, max_model_len=max_len)
        return EngineTarget(await asyncio.to_thread(AsyncEngine, args))
    from modelbench.bench.hf_target import TransformersTarget

    return await asyncio.to_thread(
        TransformersTarget, config.model, tokenizer, config.batch_size, config.dtype
    )


def _git_head(folder: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=folder,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def git_revision() -> tuple[str | None, str | None]:
    """(the git revision modelbench runs from, where it was read): the source
    tree when the package runs from one (python/modelbench in a checkout),
    else what the build recorded (modelbench/_build_info.py), else git in the
    current directory (a benchmark run from the checkout it measures)."""
    package = Path(__file__).resolve().parents[1]
    if (package.parent.parent / "pyproject.toml").is_file() and package.parent.name == "python":
        revision = _git_head(package)
        if revision:
            return revision, "source tree"
    try:
        from modelbench._build_info import GIT_REVISION
    except ImportError:  # built before builds recorded it
        GIT_REVISION = None
    if GIT_REVISION:
        return GIT_REVISION, "build"
    revision = _git_head(Path.cwd())
    return (revision, "current directory") if revision else (None, None)


def environment() -> dict[str, Any]:
    import torch

    from modelbench._version import __version__

    revision, revision_from = git_revision()
    return {
        "modelbench_version": __version__,
        "git_revision": revision,
        "git_revision_from": revision_from,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def checkpoint_identity(model: str | None) -> dict[str, Any]:
    """What an in-process backend loaded: the path (or "default" and the
    default model's file) and the size and mtime of each weights file, so two
    runs say whether they measured the same checkpoint."""
    if model is None:
        from modelbench.models.default_model import default_model_path

        name, path = "default", default_model_path()
    else:
        name, path = model, Path(model)
    path = path.resolve()
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.suffix in (".safetensors", ".bin", ".gguf") or p.name == "config.json"
        )
    else:
        files = [path] if path.exists() else []
    return {
        "name": name,
        "path": str(path),
        "files": [
            {
                "name": f.name,
                "size": f.stat().st_size,
                "mtime": datetime.fromtimestamp(f.stat().st_mtime, timezone.utc).isoformat(),
            }
            for f in files
        ],
    }


def model_identity(config: BenchConfig, target: Any) -> dict[str, Any]:
    """The model a run measured: for HTTP backends the name asked for and the
    ``model`` the server answered with (ours says ``name:version``); for
    in-process ones the checkpoint."""
    if config.backend in MODEL_PATH_BACKENDS:
        return checkpoint_identity(config.model)
    return {
        "name": getattr(target, "model", config.model),
        "served": getattr(target, "served_model", None),
    }


async def run_benchmark(config: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """Run one benchmark; the result dict is what --result-file writes."""
    from modelbench.models.loader import load_tokenizer

    config.validate()
    slos = parse_goodput(config.goodput)
    tokenizer = await asyncio.to_thread(load_tokenizer, config.tokenizer_source())
    requests = await asyncio.to_thread(build_requests, config, tokenizer)
    arrivals = workload.arrival_times(
        len(requests), config.request_rate, config.burstiness, config.seed
    )
    target = await build_target(config, tokenizer, requests)
    started_at = datetime.now(timezone.utc)
    try:
        outcome = await run_workload(target, requests, arrivals, config.max_concurrency, progress)
    finally:
        await target.close()
    result = summarize(outcome.results, outcome.duration_s, config.percentiles, slos or None)
    lags_ms = [lag * 1000 for lag in outcome.send_lags_s] or [0.0]
    result.update(
        {
            "backend": config.backend,
            "model_id": config.model,
            "num_prompts": config.num_prompts,
            "request_rate": config.request_rate if math.isfinite(config.request_rate) else "inf",
            "burstiness": config.burstiness,
            "max_concurrency": config.max_concurrency,
            "date": started_at.isoformat(),
            "config": {
                **dataclasses.asdict(config),
                "api_key": None,
                "request_rate": config.request_rate
                if math.isfinite(config.request_rate)
                else "inf",
            },
            "environment": {**environment(), "model": model_identity(config, target)},
            "client": {
                "mean_send_lag_ms": sum(lags_ms) / len(lags_ms),
                "max_send_lag_ms": max(lags_ms),
            },
            "errors_by_kind": dict(
                Counter(
                    e.split(":")[0] if e.startswith("HTTP") else e for e in result["errors"] if e
                )
            ),
        }
    )
    return result
