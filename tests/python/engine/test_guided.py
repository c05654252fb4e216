"""Guided decoding in the engine (LLM and AsyncEngine) on the default model:
every output of every schema parses and validates, greedy and sampled,
batched with unconstrained requests; regex, choice and grammar constraints;
bad constraints are errors naming the field; the compiled grammar is cached."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import pytest

from modelbench import LLM, AsyncEngine, EngineArgs, GuidedDecodingParams, SamplingParams
from modelbench.engine.errors import INVALID_GUIDED_CONSTRAINT, InvalidParameter

from .guided_schemas import PROMPT, SCHEMAS

MAX_TOKENS = 320


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM(max_model_len=1024, kv_cache_memory=512 * 1024 * 1024)


def chat_prompt(llm: LLM, text: str) -> str:
    return llm.get_tokenizer().apply_chat_template([{"role": "user", "content": text}])


def check_json(text: str, schema: dict, where: str) -> None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise AssertionError(f"{where}: not JSON: {text!r}") from e
    jsonschema.validate(value, schema)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_every_schema_parses_and_validates_batched_with_free_requests(
    llm: LLM, temperature: float
) -> None:
    assert len(SCHEMAS) >= 30
    prompts, params = [], []
    for i, (name, schema) in enumerate(SCHEMAS.items()):
        prompts.append(chat_prompt(llm, PROMPT.format(name=name)))
        params.append(
            SamplingParams(
                temperature=temperature,
                seed=i,
                max_tokens=MAX_TOKENS,
                guided=GuidedDecodingParams(json=schema),
            )
        )
    # Unconstrained requests share the batch.
    free = [chat_prompt(llm, "Tell me about the sea.")] * 3
    outs = llm.generate(
        prompts + free,
        params + [SamplingParams(temperature=temperature, seed=7, max_tokens=24)] * 3,
        use_tqdm=False,
    )
    for (name, schema), out in zip(SCHEMAS.items(), outs):
        completion = out.outputs[0]
        assert completion.finish_reason == "stop", (name, completion.text)
        check_json(completion.text, schema, name)
    for out in outs[len(prompts) :]:
        assert out.outputs[0].text  # free text, not held to any schema
    # Free requests beside guided ones give what they give alone (greedy).
    if temperature == 0.0:
        alone = llm.generate(
            free[:1], SamplingParams(temperature=0.0, max_tokens=24), use_tqdm=False
        )
        assert alone[0].outputs[0].token_ids == outs[-1].outputs[0].token_ids


def test_json_object_regex_choice_and_grammar(llm: LLM) -> None:
    cases = [
        (GuidedDecodingParams(json_object=True), lambda t: isinstance(json.loads(t), dict)),
        (
            GuidedDecodingParams(regex=r"[0-9]{3}-[A-Z][a-z]{1,8}"),
            lambda t: re.fullmatch(r"[0-9]{3}-[A-Z][a-z]{1,8}", t) is not None,
        ),
        (
            GuidedDecodingParams(choice=["Paris", "London", "Rome"]),
            lambda t: t in ("Paris", "London", "Rome"),
        ),
        (
            # Lark
            GuidedDecodingParams(grammar='start: "ans: " ("yes" | "no")'),
            lambda t: t in ("ans: yes", "ans: no"),
        ),
        (
            # llama.cpp's GBNF
            GuidedDecodingParams(grammar='root ::= "x=" [0-9] [0-9]?'),
            lambda t: re.fullmatch(r"x=[0-9]{1,2}", t) is not None,
        ),
    ]
    prompt = chat_prompt(llm, "What is the capital of France?")
    for temperature in (0.0, 1.0):
        outs = llm.generate(
            [prompt] * len(cases),
            [
                SamplingParams(temperature=temperature, seed=3, max_tokens=200, guided=g)
                for g, _ in cases
            ],
            use_tqdm=False,
        )
        for (guided, ok), out in zip(cases, outs):
            text = out.outputs[0].text
            assert out.outputs[0].finish_reason == "stop", (guided, text)
            assert ok(text), (guided, text)


def test_a_guided_greedy_answer_is_the_best_allowed_one(llm: LLM) -> None:
    # The model's own answer is among the choices: the constraint does not change it.
    prompt = chat_prompt(llm, "What is the capital of France? Answer in one word.")
    free = llm.generate(prompt, SamplingParams(temperature=0.0, max_tokens=3), use_tqdm=False)
    first_word = free[0].outputs[0].text.strip().split()[0].strip(".")
    guided = llm.generate(
        prompt,
        SamplingParams(
            temperature=0.0, max_tokens=10, guided=GuidedDecodingParams(choice=[first_word, "Zzz"])
        ),
        use_tqdm=False,
    )
    assert guided[0].outputs[0].text == first_word


@pytest.mark.parametrize(
    ("guided", "says"),
    [
        (GuidedDecodingParams(json={"type": "nonsense"}), "not a valid JSON Schema"),
        (GuidedDecodingParams(json='{"type": "object"'), "not valid JSON"),
        (GuidedDecodingParams(regex="[a-z"), "does not compile"),
        (GuidedDecodingParams(grammar="start: undefined_rule"), "does not compile"),
    ],
)
def test_a_bad_constraint_is_an_error_naming_it(
    llm: LLM, guided: GuidedDecodingParams, says: str
) -> None:
    with pytest.raises(InvalidParameter, match=says) as info:
        llm.generate("x", SamplingParams(max_tokens=4, guided=guided), use_tqdm=False)
    assert info.value.param == "guided"
    assert info.value.code == INVALID_GUIDED_CONSTRAINT
    assert not llm.engine.has_unfinished_requests()


def test_parameters_that_fight_the_grammar_are_refused() -> None:
    with pytest.raises(InvalidParameter, match="exactly one"):
        GuidedDecodingParams(regex="a", choice=["a"])
    with pytest.raises(InvalidParameter, match="exactly one"):
        GuidedDecodingParams()
    with pytest.raises(InvalidParameter, match="non-empty list"):
        GuidedDecodingParams(choice=[])
    for name in ("min_tokens", "ignore_eos"):
        with pytest.raises(InvalidParameter, match=name) as info:
            SamplingParams(
                guided=GuidedDecodingParams(regex="a+"),
                **{name: 1 if name == "min_tokens" else True},
            )
        assert info.value.param == name
    # A dict is read as GuidedDecodingParams' fields.
    assert SamplingParams(guided={"regex": "a+"}).guided == GuidedDecodingParams(regex="a+")


def test_the_grammar_of_a_schema_is_compiled_once(llm: LLM) -> None:
    schema = {"type": "object", "properties": {"q": {"type": "boolean"}}, "required": ["q"]}
    before = llm.guides.num_compiled
    params = SamplingParams(
        temperature=0.0, max_tokens=20, guided=GuidedDecodingParams(json=schema)
    )
    llm.generate(["a", "b", "c"], params, use_tqdm=False)
    # Keys in another order: the same schema, the same grammar.
    same = dict(reversed(list(schema.items())))
    llm.generate(
        "d", SamplingParams(max_tokens=20, guided=GuidedDecodingParams(json=same)), use_tqdm=False
    )
    assert llm.guides.num_compiled == before + 1


def test_async_engine_streams_guided_outputs_beside_free_ones() -> None:
    engine = AsyncEngine(EngineArgs(max_model_len=1024, kv_cache_memory=256 * 1024 * 1024))
    names = list(SCHEMAS)[:8]

    async def one(i: int, name: str | None) -> tuple[str | None, str, str | None]:
        guided = None if name is None else GuidedDecodingParams(json=SCHEMAS[name])
        params = SamplingParams(
            temperature=0.7, seed=i, max_tokens=MAX_TOKENS if name else 16, guided=guided
        )
        text, reason = "", None
        prompt = engine.tokenizer.apply_chat_template(
            [{"role": "user", "content": PROMPT.format(name=name or "anything")}]
        )
        async for delta in engine.generate(prompt, params, f"r{i}"):
            text += delta.outputs[0].text
            reason = delta.outputs[0].finish_reason
        return name, text, reason

    async def main() -> list[tuple[str | None, str, str | None]]:
        jobs = [one(i, name) for i, name in enumerate(names)] + [
            one(100 + i, None) for i in range(3)
        ]
        return await asyncio.gather(*jobs)

    try:
        results = asyncio.run(main())
    finally:
        engine.shutdown()
    for name, text, reason in results:
        if name is None:
            assert reason in ("stop", "length") and text
            continue
        assert reason == "stop", (name, text)
        check_json(text, SCHEMAS[name], name)
