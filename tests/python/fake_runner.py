"""A test double for the model runner, written in Python.

Its next token is a deterministic function of the whole sequence, so a
request's output does not depend on batching, chunking or preemption. It
also simulates the paged KV cache: each computed token is written to its
slot, and the context is read back through the block table before
"sampling", so a wrong block table fails the test.
"""

from __future__ import annotations

import hashlib
import time

from modelbench import _core

VOCAB_SIZE = 1000


def next_token_of(context: list[int]) -> int:
    digest = hashlib.blake2b(bytes(str(context), "ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % VOCAB_SIZE


def expected_output(prompt: list[int], max_tokens: int) -> list[int]:
    tokens = list(prompt)
    out = []
    for _ in range(max_tokens):
        token = next_token_of(tokens)
        tokens.append(token)
        out.append(token)
    return out


class FakeRunner(_core.ModelRunner):
    def __init__(self, num_blocks: int, block_size: int, step_delay_s: float = 0.0) -> None:
        super().__init__()
        self.step_delay_s = step_delay_s
        self.block_size = block_size
        self.slots = [-1] * (num_blocks * block_size)
        self.num_steps = 0

    def _slot(self, block_table: list[int], pos: int) -> int:
        return block_table[pos // self.block_size] * self.block_size + pos % self.block_size

    def execute_model(self, scheduler_output: _core.SchedulerOutput) -> _core.RunnerOutput:
        self.num_steps += 1
        if self.step_delay_s:
            time.sleep(self.step_delay_s)  # a model that takes time, so tests can act mid-flight
        sampled = []
        for s in scheduler_output.scheduled:
            tokens, table = s.token_ids, s.block_table
            end = s.num_computed_tokens + s.num_scheduled_tokens
            for pos in range(s.num_computed_tokens, end):
                self.slots[self._slot(table, pos)] = tokens[pos]
            if not s.needs_sample:
                sampled.append(-1)
                continue
            context = [self.slots[self._slot(table, pos)] for pos in range(end)]
            assert context == tokens[:end], f"KV cache of {s.request_id} holds the wrong tokens"
            sampled.append(next_token_of(context))
        return _core.RunnerOutput(sampled)
