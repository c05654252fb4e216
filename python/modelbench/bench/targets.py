"""Targets: what a benchmark drives, each measuring the same way.

- ``OpenAITarget``: any OpenAI-compatible server (ours, vLLM, TGI,
  llama.cpp's), streamed ``/v1/completions`` (backend ``openai``) or
  ``/v1/chat/completions`` (``openai-chat``); backend ``modelbench`` is
  ``openai`` against our server, asking it to ignore EOS so every request
  generates exactly its output length. Output tokens come from the usage
  block when the server sends one, else from the tokenizer. The ``model``
  the server answers with is kept (``served_model``) for the run's record.
- ``EngineTarget``: modelbench's ``AsyncEngine`` in this process (backend
  ``engine``), no HTTP.
- ``TransformersTarget`` (backend ``transformers``): Hugging Face
  ``generate`` on the same weights, one request at a time or in padded static
  batches; it runs the whole workload itself (``run_all``), since
  ``generate`` serves one batch at a time.

Times are taken with ``time.perf_counter`` in the client: TTFT when the
first chunk with content arrives, one ITL sample per later content chunk.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from modelbench.bench.metrics import RequestResult
from modelbench.bench.workload import BenchRequest
from modelbench.models.tokenizer import Tokenizer


class OpenAITarget:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        chat: bool = False,
        api_key: str | None = None,
        tokenizer: Tokenizer | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout_s: float = 6 * 3600,
    ) -> None:
        self.url = base_url.rstrip("/") + ("/v1/chat/completions" if chat else "/v1/completions")
        self.model = model
        self.chat = chat
        self.tokenizer = tokenizer
        self.extra_body = extra_body or {}
        # A benchmark measures the model: a server's response cache (ours, with
        # --cache) would answer repeated greedy prompts without running it.
        # Servers without one ignore the header.
        self.headers = {"Cache-Control": "no-cache, no-store"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.served_model: str | None = None  # the ``model`` of the server's first chunk

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No connection limit: concurrency is the runner's to decide. A new
            # connection per request, as vLLM's benchmark (a session per request):
            # with kept-alive ones, llama-server closed connections that aiohttp then
            # reused, and those requests failed (ServerDisconnectedError, "Can not
            # write request body"). A connection costs well under a millisecond here.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, force_close=True)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self.timeout, headers=self.headers
            )
        return self._session

    def body(self, request: BenchRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.output_len,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.extra_body,
        }
        if self.chat:
            body["messages"] = [{"role": "user", "content": request.prompt}]
        else:
            body["prompt"] = request.prompt
        return body

    async def send(self, request: BenchRequest) -> RequestResult:
        result = RequestResult(prompt_len=request.prompt_len)
        session = await self.session()
        text: list[str] = []
        usage_tokens = None
        started = time.perf_counter()
        last = started
        try:
            async with session.post(self.url, json=self.body(request)) as response:
                if response.status != 200:
                    result.error = f"HTTP {response.status}: {(await response.text())[:500]}"
                    return result
                async for raw in response.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    chunk = json.loads(data)
                    if self.served_model is None and isinstance(chunk.get("model"), str):
                        self.served_model = chunk["model"]
                    if chunk.get("usage"):
                        usage_tokens = chunk["usage"].get("completion_tokens")
                    content = self._content(chunk)
                    if content:
                        now = time.perf_counter()
                        if not text:
                            result.ttft = now - started
                        else:
                            result.itl.append(now - last)
                        last = now
                        text.append(content)
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            return result
        result.latency = last - started if text else time.perf_counter() - started
        result.generated_text = "".join(text)
        if usage_tokens is not None:
            result.output_tokens = int(usage_tokens)
        elif self.tokenizer is not None:
            result.output_tokens = len(
                self.tokenizer.encode(result.generated_text, add_special_tokens=False)
            )
        else:
            result.output_tokens = len(text)  # one chunk per token: servers that stream that way
        result.success = bool(text)
        if not result.success:
            result.error = "the stream ended without any content"
        return result

    def _content(self, chunk: dict[str, Any]) -> str:
        choices = chunk.get("choices") or []
        if not choices:
            return ""
        if self.chat:
            return (choices[0].get("delta") or {}).get("content") or ""
        return choices[0].get("text") or ""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class EngineTarget:
    """modelbench's AsyncEngine in this process."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def send(self, request: BenchRequest) -> RequestResult:
        from modelbench.engine.sampling_params import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=request.output_len, ignore_eos=True)
        result = RequestResult(prompt_len=request.prompt_len)
        text: list[str] = []
        started = time.perf_counter()
        last = started
        try:
            async for out in self.engine.generate(request.prompt, params):
                delta = out.outputs[0]
                if delta.token_ids:
                    now = time.perf_counter()
                    if result.output_tokens == 0:
                        result.ttft = now - started
                    else:
                        result.itl.append(now - last)
                    last = now
                    result.output_tokens += len(delta.token_ids)
                    text.append(delta.text)
        except ValueError as exc:
            result.error = str(exc)
            return result
        result.latency = last - started
        result.generated_text = "".join(text)
        result.success = result.output_tokens > 0
        return result

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.shutdown)
