"""The playground, compare and verify views in a real Chromium against the
real default model: driven by keyboard and by their accessible names."""

from __future__ import annotations

import re

from modelbench.config import DEFAULT_MODEL_NAME

from .conftest import Served, sign_in, tab_to

ALL_DONE = (
    "() => [...document.querySelectorAll('article.card')]"
    ".every(c => c.getAttribute('aria-busy') === 'false')"
)
VIEWS = ["Playground", "Compare", "Verify", "Jobs", "Benchmarks", "Models", "Live"]


def test_keyboard_alone_chats_with_streaming_and_timings(page, served: Served, screenshots) -> None:
    sign_in(page, served, served.admin_key)
    nav = page.get_by_role("navigation")
    for name in VIEWS:
        assert nav.get_by_role("link", name=name, exact=True).count() == 1
    assert page.evaluate("sessionStorage.getItem('modelbench.key')") == served.admin_key
    assert page.evaluate("localStorage.length") == 0 and "modelbench" not in page.evaluate(
        "document.cookie"
    )
    page.get_by_label("Model").select_option(DEFAULT_MODEL_NAME)
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max tokens").fill("24")
    prompt = page.get_by_role("textbox", name="Prompt")
    tab_to(page, prompt)
    page.keyboard.type("What is the capital of France?")
    tab_to(page, page.get_by_role("button", name="Send"))
    page.keyboard.press("Enter")
    answers = page.locator("[aria-live][aria-label='Answers']")
    stats = answers.locator("article.answer .stats")
    stats.get_by_text("tokens/s").wait_for()
    answer = answers.locator("article.answer .text").inner_text()
    assert "Paris" in answer
    line = stats.inner_text()
    assert re.search(r"TTFT [\d,]+ ms", line) and re.search(r"[\d.]+ tokens/s", line), line
    assert re.search(r"\d+ prompt \+ (\d+) completion tokens", line), line
    assert "cache: miss" in line, line  # the server runs --cache exact
    assert answers.locator("article.answer .who").inner_text() == f"{DEFAULT_MODEL_NAME}:1"
    # the same answer the API gives (greedy): the page shows the model's text
    direct = served.post(
        "/v1/chat/completions",
        json={
            "model": DEFAULT_MODEL_NAME,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 24,
            "temperature": 0,
        },
    ).json()
    assert answer == direct["choices"][0]["message"]["content"]
    tokens = int(re.search(r"(\d+) completion tokens", line).group(1))
    assert tokens == direct["usage"]["completion_tokens"]
    # the same question in a new chat: answered from the cache, and said so
    page.get_by_role("button", name="New chat").click()
    prompt.fill("What is the capital of France?")
    page.get_by_role("button", name="Send").click()
    stats.get_by_text("tokens/s").wait_for()
    assert "cache: hit-exact" in stats.inner_text()
    assert "– tokens/s (from the cache)" in stats.inner_text()  # no speed for a stored answer
    assert answers.locator("article.answer .text").inner_text() == answer
    # a second turn carries the conversation
    prompt.fill("And of Germany?")
    page.get_by_role("button", name="Send").click()
    answers.locator("article.answer").nth(1).locator(".stats").get_by_text("tokens/s").wait_for()
    assert answers.locator("article.answer").count() == 2
    page.screenshot(path=str(screenshots / "ui-playground.png"))
    # keyboard to another view: Tab to the link, Enter
    tab_to(page, nav.get_by_role("link", name="Compare", exact=True))
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Compare").wait_for()
    assert nav.get_by_role("link", name="Compare").get_attribute("aria-current") == "page"


def test_compare_streams_two_answers_side_by_side(page, served: Served, screenshots) -> None:
    sign_in(page, served, served.admin_key, "compare")
    models = page.get_by_role("group", name="Models")
    models.get_by_label(DEFAULT_MODEL_NAME, exact=True).check()
    models.get_by_label(f"{DEFAULT_MODEL_NAME}:1", exact=True).check()
    page.get_by_role("textbox", name="Prompt").fill("Name a colour.")
    page.get_by_label("Max tokens").fill("12")
    page.get_by_role("button", name="Send").click()
    cards = page.locator("[aria-label='Answers'] article.card")
    page.wait_for_function(ALL_DONE)
    assert cards.count() == 2
    texts = [cards.nth(i).locator(".text").inner_text() for i in range(2)]
    assert texts[0] and texts[0] == texts[1]  # greedy, the same weights
    for i in range(2):
        stats = cards.nth(i).locator(".stats").inner_text()
        assert re.search(r"TTFT [\d,]+ ms\s+total [\d,]+ ms\s+\d+ tokens", stats), stats
    page.screenshot(path=str(screenshots / "ui-compare.png"))


def test_verify_shows_each_candidate_and_its_reason(page, served: Served, screenshots) -> None:
    sign_in(page, served, served.admin_key, "verify")
    page.get_by_role("textbox", name="Prompt").fill(
        "Write a Python function is_even(n) that returns True when n is even.\n"
        ">>> is_even(4)\nTrue\n>>> is_even(7)\nFalse"
    )
    result = page.locator("[aria-label='Verification']")
    send = page.get_by_role("button", name="Send")
    page.get_by_label("Tests").fill("assert is_even(3)")  # wrong on purpose: the sandbox says so
    send.click()
    result.get_by_text("No candidate passed").wait_for(timeout=120_000)
    cells = result.locator("tbody tr").first.locator("td")
    assert cells.nth(0).inner_text() == f"{DEFAULT_MODEL_NAME}:1"
    assert cells.nth(1).inner_text() == "fail"
    assert cells.nth(2).inner_text().startswith("failed: assert is_even(3)")
    page.get_by_label("Tests").fill("")  # the prompt's doctests (README: greedy passes)
    send.click()
    result.get_by_text(f"Verified: {DEFAULT_MODEL_NAME}:1's code passed").wait_for(timeout=120_000)
    assert cells.nth(1).inner_text() == "pass" and cells.nth(2).inner_text() == "passed"
    assert (
        "def is_even"
        in result.get_by_role("heading", name="Chosen code")
        .locator("xpath=following-sibling::pre")
        .inner_text()
    )
    assert "isolation:" in result.inner_text()
    page.screenshot(path=str(screenshots / "ui-verify.png"), full_page=True)


# Every control a person can use in a view: visible, enabled, in the tab order.
CONTROLS = """() => [...document.querySelectorAll(
    '#view a[href], #view button, #view input, #view select, #view textarea, #view summary')]
  .filter(el => !el.disabled && el.offsetParent !== null && el.type !== 'hidden')"""


POSITIVE_TABINDEX = """() => [...document.querySelectorAll('[tabindex]')]
  .filter(el => el.tabIndex > 0).length"""
UNFOCUSABLE_ROLES = """() => [...document.querySelectorAll(
    '#view [role=button], #view [role=link], #view [role=tab]')]
  .filter(el => el.tabIndex < 0).length"""


def test_keyboard_alone_reaches_every_control_of_every_view(page, served: Served) -> None:
    """Each view opened from its link with Tab and Enter, then Tab alone
    visits every control in it, in an order that is the page's own (no
    positive tabindex), and nothing clickable hides from the keyboard."""
    sign_in(page, served, served.admin_key)
    nav = page.get_by_role("navigation")
    for name in VIEWS:
        tab_to(page, nav.get_by_role("link", name=name, exact=True))
        page.keyboard.press("Enter")
        page.get_by_role("heading", name=name, exact=True).first.wait_for()
        page.wait_for_load_state("networkidle")
        controls = page.evaluate_handle(CONTROLS)
        count = page.evaluate("(list) => list.length", controls)
        assert page.evaluate(POSITIVE_TABINDEX) == 0, name
        assert page.evaluate(UNFOCUSABLE_ROLES) == 0, name  # clickable, yet not focusable
        page.evaluate("() => document.getElementById('view').focus()")
        reached = set()
        for _ in range(4 * count + 20):
            page.keyboard.press("Tab")
            index = page.evaluate("(list) => list.indexOf(document.activeElement)", controls)
            if index >= 0:
                reached.add(index)
            if len(reached) == count:
                break
        missing = page.evaluate(
            "([list, reached]) => list.filter((_, i) => !reached.includes(i))"
            # still shown: a batch's Cancel hides when it completes meanwhile
            ".filter(el => el.isConnected && !el.disabled && el.offsetParent !== null)"
            ".map(el => el.outerHTML.slice(0, 120))",
            [controls, sorted(reached)],
        )
        assert not missing, f"{name}: Tab never reached {missing}"
