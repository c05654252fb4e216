"""vLLM's chat-template controls on /v1/chat/completions:
add_generation_prompt, continue_final_message, chat_template,
chat_template_kwargs and echo. The prompt the engine gets is what
transformers' apply_chat_template renders for the same arguments (compared
through /tokenize's twin: the usage's prompt_tokens and, exactly, the
rendered ids from the server's tokenizer)."""

from __future__ import annotations

import json

import httpx
import pytest
from transformers import AutoTokenizer

from modelbench.models.tokenizer import Tokenizer

from .conftest import MODEL_NAME, RunningServer

CONVERSATION = [
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "The colour is"},
]
CUSTOM = "{% for m in messages %}<{{ m['role'] }}|{{ m['content'] }}|{{ flavour }}>{% endfor %}"


def reference_ids(server: RunningServer, messages: list[dict], **kwargs: object) -> list[int]:
    reference = AutoTokenizer.from_pretrained(server.model_path)
    text = reference.apply_chat_template(messages, tokenize=False, **kwargs)
    return reference(text, add_special_tokens=False)["input_ids"]


def ours_ids(server: RunningServer, messages: list[dict], **kwargs: object) -> list[int]:
    tokenizer = Tokenizer.from_pretrained(server.model_path)
    text = tokenizer.apply_chat_template(messages, **kwargs)  # type: ignore[arg-type]
    return tokenizer.encode(text, add_special_tokens=False)


def chat(server: RunningServer, **body: object) -> httpx.Response:
    return httpx.post(
        server.base_url + "/v1/chat/completions",
        json={"model": MODEL_NAME, "max_tokens": 3, "temperature": 0, **body},
        timeout=60,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"add_generation_prompt": True},
        {"add_generation_prompt": False},
        {"add_generation_prompt": False, "continue_final_message": True},
        {"add_generation_prompt": True, "chat_template": CUSTOM, "flavour": "mint"},
    ],
)
def test_the_rendered_prompt_is_what_transformers_renders(
    server: RunningServer, kwargs: dict
) -> None:
    messages = CONVERSATION if not kwargs.get("add_generation_prompt") else CONVERSATION[:1]
    assert ours_ids(server, messages, **kwargs) == reference_ids(server, messages, **kwargs)
    body = {k: v for k, v in kwargs.items() if k != "flavour"}
    if "flavour" in kwargs:
        body["chat_template_kwargs"] = {"flavour": kwargs["flavour"]}
    r = chat(server, messages=messages, **body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == len(reference_ids(server, messages, **kwargs))


def test_echo_starts_the_answer_with_the_continued_message(server: RunningServer) -> None:
    body = {
        "messages": CONVERSATION,
        "add_generation_prompt": False,
        "continue_final_message": True,
    }
    plain = chat(server, **body).json()["choices"][0]["message"]["content"]
    echoed = chat(server, **body, echo=True).json()["choices"][0]["message"]["content"]
    assert echoed == "The colour is" + plain
    r = chat(server, **body, echo=True, stream=True)
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "The colour is"}


def test_continuing_with_a_generation_prompt_is_a_400(server: RunningServer) -> None:
    r = chat(server, messages=CONVERSATION, continue_final_message=True)
    assert r.status_code == 400
    error = r.json()["error"]
    assert (
        error["param"] == "continue_final_message" and "add_generation_prompt" in error["message"]
    )
