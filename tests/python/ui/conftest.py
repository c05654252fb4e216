"""A real ``modelbench serve`` (the default model, a real SQLite store, API
keys on) for the module, and a real Chromium (Debian's, driven by
Playwright) whose pages may only reach that server: every request to
another origin and every console error is recorded, and a test fails on
either."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from modelbench.server.keys import KeyStore

from ..serve_process import start, stop, wait_ready
from ..server.conftest import free_port

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "the web page tests need Debian's chromium (apt-get install chromium)",
        allow_module_level=True,
    )

KV_BYTES = 128 * 1024 * 1024


@dataclass
class Served:
    proc: subprocess.Popen
    base_url: str
    log_path: Path
    env: dict[str, str]
    admin_key: str = ""
    plain_key: str = ""
    plain_key_id: str = ""

    def get(self, path: str, key: str | None = None, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.get(self.base_url + path, headers=headers, timeout=60, **kwargs)

    def post(self, path: str, key: str | None = None, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.post(self.base_url + path, headers=headers, timeout=120, **kwargs)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("ui-server")
    keys = KeyStore(root / "keys.json")
    admin, admin_secret = keys.create("ui-admin", admin=True)
    plain, plain_secret = keys.create("ui-plain")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "MODELBENCH_DATABASE_URL": f"sqlite:///{root / 'store.db'}",
        "MODELBENCH_KEYS_FILE": str(root / "keys.json"),
        "MODELBENCH_LOG_FORMAT": "text",
        # Each test's tab is refused once before it has a key; a dozen tabs a
        # minute from one address would otherwise be locked out as a guesser.
        "MODELBENCH_AUTH_MAX_FAILURES": "1000",
    }
    log_path = root / "serve.log"
    proc = start(
        [
            "serve",
            "--port",
            str(port),
            "--max-model-len",
            "512",
            "--kv-cache-memory",
            str(KV_BYTES),
            "--cache",
            "exact",  # the playground shows which answers came from it
        ],
        env,
        log_path,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base_url, log_path)
        yield Served(proc, base_url, log_path, env, admin_secret, plain_secret, plain.id)
    finally:
        stop(proc)


@dataclass
class SavedRuns:
    """``modelbench bench --sweep ... --save`` and ``modelbench eval
    humaneval`` against the server, into its store, run in the background
    while the other tests go on."""

    procs: list[subprocess.Popen]
    logs: list[Path]

    def wait(self) -> None:
        for proc, log in zip(self.procs, self.logs):
            assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]


@pytest.fixture(scope="session")
def saved_runs(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SavedRuns]:
    root = tmp_path_factory.mktemp("ui-runs")
    url, key = served.base_url, served.admin_key
    commands = [
        ["bench", "--backend", "modelbench", "--base-url", url, "--api-key", key,
         "--num-prompts", "4", "--random-input-len", "16", "--random-output-len", "8",
         "--sweep", "max-concurrency=1,2,4", "--name", "ui-sweep", "--save", "--no-progress"],
        ["eval", "humaneval", "--base-url", f"{url}/v1", "--api-key", key, "--style", "chat",
         "--limit", "1", "--max-tokens", "64"],
    ]  # fmt: skip
    logs = [root / "bench.log", root / "eval.log"]
    procs = []
    for command, log in zip(commands, logs):
        procs.append(start(command, served.env, log, with_stdout=True))
    try:
        yield SavedRuns(procs, logs)
    finally:
        for proc in procs:
            stop(proc)


@dataclass
class Watch:
    """What a page did that it must not: console errors, requests elsewhere."""

    origin: str
    console_errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)  # console errors a test expects

    def check(self) -> None:
        unexpected = [e for e in self.console_errors if not any(a in e for a in self.allowed)]
        assert not unexpected, f"console errors: {unexpected}"
        assert not self.foreign, f"requests left the origin {self.origin}: {self.foreign}"


# Per module: Playwright's sync API keeps an event loop running in this thread
# while it is open, and tests run after it (in any order) need their own.
@pytest.fixture(scope="module")
def browser() -> Iterator:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each view's picture: MODELBENCH_UI_SCREENSHOTS, else a temporary folder."""
    chosen = os.environ.get("MODELBENCH_UI_SCREENSHOTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("ui-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def open_page(browser, base_url: str) -> tuple:
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(base_url))
    watch = Watch(origin)
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def guard(request) -> None:
        # A listener, not context.route: intercepting makes Chromium send
        # "Cache-Control: no-cache", and the server's response cache obeys it.
        parts = urlsplit(request.url)
        if parts.scheme not in ("data", "blob") and f"{parts.scheme}://{parts.netloc}" != origin:
            watch.foreign.append(request.url)

    context.on("request", guard)
    page = context.new_page()
    page.on("console", lambda m: watch.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: watch.console_errors.append(f"uncaught: {e}"))
    page.set_default_timeout(60_000)
    return context, page, watch


@pytest.fixture
def page(browser, served: Served, saved_runs: SavedRuns) -> Iterator:
    """A fresh tab (its own sessionStorage) on the server; after the test, no
    console error (beyond ``page.watch.allowed``) and no foreign request.
    (It asks for ``saved_runs`` so that they run beside the first tests.)"""
    context, tab, watch = open_page(browser, served.base_url)
    tab.watch = watch
    try:
        yield tab
        watch.check()
    finally:
        context.close()


def sign_in(page, served: Served, key: str, view: str = "playground") -> None:
    """Open a view and give the key when the page asks for it."""
    page.watch.allowed.append("status of 401")  # the call that made the page ask
    page.goto(f"{served.base_url}/ui/#/{view}")
    box = page.get_by_role("textbox", name="API key")
    box.wait_for()
    box.fill(key)
    page.get_by_role("button", name="Use key").click()
    page.get_by_role("button", name="Forget key").wait_for()


def tab_to(page, locator, limit: int = 60) -> None:
    """Press Tab until ``locator`` has the focus (keyboard only)."""
    target = locator.element_handle()
    for _ in range(limit):
        if page.evaluate("(el) => document.activeElement === el", target):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {locator}")
