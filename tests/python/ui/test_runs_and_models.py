"""The Benchmarks view over runs that ``modelbench bench`` and ``modelbench
eval`` saved into the server's store, the Models view (load and unload
with an admin key), the Live view from /metrics, and the page served by
``modelbench gateway`` showing its upstream's health."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx

from modelbench.config import DEFAULT_MODEL_NAME

from .conftest import SavedRuns, Served, free_port, open_page, sign_in, start, stop, wait_ready

TOKENS_FLOWING = (
    "() => Number(document.querySelector('[data-metric=tps]').textContent.replace(/,/g, '')) > 0"
)


def test_benchmarks_draw_saved_runs(
    page, served: Served, saved_runs: SavedRuns, screenshots
) -> None:
    saved_runs.wait()
    runs = served.get("/v1/bench/runs").json()["data"]
    sweep = [r for r in runs if r["name"] == "ui-sweep"]
    assert sorted(r["config"]["max_concurrency"] for r in sweep) == [1, 2, 4]
    sign_in(page, served, served.admin_key, "benchmarks")
    chart = page.get_by_role("img", name="Output throughput against concurrency")
    chart.wait_for()
    dots = chart.locator("g[data-series] circle")
    assert dots.count() == 3
    # each point is the run's own throughput, at its concurrency
    titles = sorted(dots.evaluate_all("ds => ds.map(d => d.querySelector('title').textContent)"))
    expected = sorted(
        f"ui-sweep · {r['model']}: {r['summary']['output_throughput']:.1f}"
        f" at {r['config']['max_concurrency']}"
        for r in sweep
    )
    assert titles == expected
    newest, second = runs[0], runs[1]
    side = page.locator("table", has=page.locator("caption", has_text="Two runs side by side"))
    assert side.locator("thead th").all_inner_texts()[1:] == [newest["id"], second["id"]]
    row = side.locator("tr", has=page.locator("td", has_text="median TTFT ms"))
    assert row.locator("td").nth(1).inner_text() == f"{newest['summary']['median_ttft_ms']:,.2f}"
    assert page.get_by_role("heading", name=re.compile(f"Percentiles: {newest['id']}")).count() == 1
    evals = served.get("/v1/eval/runs").json()["data"]
    assert len(evals) == 1
    table = page.locator("[aria-label='Evaluation runs'] table")
    table.wait_for()
    cells = table.locator("tbody td").all_inner_texts()
    assert cells[0] == evals[0]["id"] and f"{evals[0]['summary']['pass@1']:.3f}" in cells
    assert "pass@1" in table.locator("thead").inner_text()
    page.screenshot(path=str(screenshots / "ui-benchmarks.png"), full_page=True)


def test_models_load_and_unload_with_an_admin_key(page, served: Served, screenshots) -> None:
    sign_in(page, served, served.admin_key, "models")
    versions = page.locator("table").first
    versions.get_by_text(f"{DEFAULT_MODEL_NAME}:1").wait_for()
    assert "ready" in versions.inner_text()
    page.get_by_text("This server has no upstreams").wait_for()
    page.get_by_label("Name", exact=True).fill(DEFAULT_MODEL_NAME)
    page.get_by_label("Version").fill("2")
    page.get_by_label("Max model length").fill("512")
    page.get_by_label("KV cache MiB").fill("32")
    page.get_by_role("button", name="Load", exact=True).click()
    page.get_by_text(f"{DEFAULT_MODEL_NAME}:2: ready").wait_for(timeout=120_000)
    versions.get_by_text(f"{DEFAULT_MODEL_NAME}:2").wait_for()
    page.screenshot(path=str(screenshots / "ui-models.png"), full_page=True)
    page.get_by_role("button", name=f"Unload {DEFAULT_MODEL_NAME}:2").click()
    page.wait_for_function(
        "id => ![...document.querySelectorAll('main table td')].some(td => td.textContent === id)",
        arg=f"{DEFAULT_MODEL_NAME}:2",
        timeout=60_000,
    )
    ids = [m["id"] for m in served.get("/v1/models").json()["data"]]
    assert f"{DEFAULT_MODEL_NAME}:2" not in ids and f"{DEFAULT_MODEL_NAME}:1" in ids


def test_live_shows_running_requests_and_tokens_per_second(
    page, served: Served, screenshots
) -> None:
    sign_in(page, served, served.admin_key, "models")  # /metrics itself asks for no key
    page.get_by_role("link", name="Live", exact=True).click()
    page.locator("[data-metric='kv']").wait_for()
    stop_load = threading.Event()

    def load() -> None:
        while not stop_load.is_set():
            served.post(
                "/v1/completions",
                json={"model": DEFAULT_MODEL_NAME, "prompt": "Once upon a time", "max_tokens": 16},
            )

    workers = [threading.Thread(target=load) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        page.wait_for_function(
            TOKENS_FLOWING,
            timeout=60_000,
        )
        page.get_by_role("img", name="Generated tokens per second").wait_for()
        page.screenshot(path=str(screenshots / "ui-live.png"), full_page=True)
    finally:
        stop_load.set()
        for w in workers:
            w.join()
    assert "KV cache use · " + f"{DEFAULT_MODEL_NAME}:1" in page.locator("main").inner_text()
    assert page.locator("[data-metric='running']").inner_text().isdigit()


def test_the_gateway_serves_the_page_with_upstream_health(
    browser, served: Served, tmp_path: Path, screenshots
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[[upstreams]]\n"
        'name = "smol"\n'
        f'url = "{served.base_url}/v1"\n'
        f'model = "{DEFAULT_MODEL_NAME}"\n'
        'api_key_env = "UI_UPSTREAM_KEY"\n'
    )
    port = free_port()
    env = {
        **served.env,
        "UI_UPSTREAM_KEY": served.admin_key,
        "MODELBENCH_KEYS_FILE": str(tmp_path / "keys.json"),  # none: open, on loopback
        "MODELBENCH_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
    }
    log = tmp_path / "gateway.log"
    proc = start(["gateway", "--config", str(config), "--port", str(port)], env, log)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base_url, log)
        assert httpx.get(base_url + "/").headers["location"] == "/ui/"
        context, page, watch = open_page(browser, base_url)
        try:
            page.goto(f"{base_url}/ui/#/models")
            upstreams = page.locator("[aria-label='Upstreams'] table")
            upstreams.wait_for()
            text = upstreams.inner_text()
            assert f"{served.base_url}/v1" in text and "healthy" in text and "unhealthy" not in text
            assert "No local version is loaded." in page.locator("main").inner_text()
            page.screenshot(path=str(screenshots / "ui-gateway-models.png"), full_page=True)
            page.get_by_role("link", name="Live", exact=True).click()
            page.get_by_text("No local model on this server").wait_for()
            watch.check()
        finally:
            context.close()
    finally:
        stop(proc)
