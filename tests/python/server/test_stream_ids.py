"""A streamed response keeps one ``id`` and one ``created`` in every chunk,
as OpenAI and vLLM do, however long it streams (the deltas here take 1.8 s,
so they cross at least one second boundary)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from modelbench.engine.outputs import CompletionOutput, RequestOutput
from modelbench.server.routes.chat import stream_chat
from modelbench.server.routes.completions import Prompts, stream_completion


async def slow_deltas() -> AsyncIterator[RequestOutput]:
    for i in range(3):
        last = i == 2
        output = CompletionOutput(0, f"t{i}", [i], finish_reason="stop" if last else None)
        yield RequestOutput("r", None, [1, 2], [output], finished=last)
        if not last:
            await asyncio.sleep(0.9)


async def events(stream: AsyncIterator[str]) -> list[dict]:
    parsed = []
    async for event in stream:
        data = event.removeprefix("data: ").strip()
        if data != "[DONE]":
            parsed.append(json.loads(data))
    return parsed


def test_a_chat_stream_keeps_one_id_and_created() -> None:
    chunks = asyncio.run(events(stream_chat(slow_deltas(), "chatcmpl-1", "m", False, 0, True, 1)))
    assert len(chunks) >= 5  # the role, three texts, the finish, the usage
    assert {c["id"] for c in chunks} == {"chatcmpl-1"}
    assert len({c["created"] for c in chunks}) == 1


def test_a_completion_stream_keeps_one_id_and_created() -> None:
    chunks = asyncio.run(
        events(
            stream_completion(
                slow_deltas(), "cmpl-1", "m", False, True, Prompts(["a"], [[0]], 1), None
            )
        )
    )
    assert len(chunks) == 4  # three texts and the usage
    assert {c["id"] for c in chunks} == {"cmpl-1"}
    assert len({c["created"] for c in chunks}) == 1
