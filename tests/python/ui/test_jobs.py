"""The Jobs view: the request log with its filters and a request's detail,
a batch submitted from a JSONL file followed to the end; and a plain key,
which sees only its own requests and no admin action."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from modelbench.config import DEFAULT_MODEL_NAME

from .conftest import Served, sign_in


def chat(served: Served, content: str, key: str | None = None) -> str:
    response = served.post(
        "/v1/chat/completions",
        key=key,
        json={
            "model": DEFAULT_MODEL_NAME,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 8,
            "temperature": 0,
        },
    )
    assert response.status_code == 200, response.text
    return response.headers["x-modelbench-record-id"]


def listed_ids(page) -> list[str]:
    return page.locator("[aria-label='Requests'] tbody tr td:first-child").all_inner_texts()


def wait_for_record(served: Served, record_id: str) -> None:
    """Records are written in the background: wait until this one is."""
    for _ in range(100):
        if served.get(f"/v1/requests/{record_id}").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"{record_id} never reached the store")


def test_requests_filters_and_detail(page, served: Served, screenshots) -> None:
    record_id = chat(served, "Say hello to the jobs view.")
    wait_for_record(served, record_id)
    sign_in(page, served, served.admin_key, "jobs")
    page.locator("[aria-label='Requests'] tbody tr").first.wait_for()
    assert record_id in listed_ids(page)
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    failed = served.get("/v1/requests?status=failed&limit=25").json()["data"]
    if failed:
        page.get_by_role("link", name=failed[0]["id"]).wait_for()
    else:
        page.get_by_text("No requests match.").wait_for()
    assert listed_ids(page) == [r["id"] for r in failed] and record_id not in listed_ids(page)
    page.get_by_label("Status").select_option("succeeded")
    page.get_by_label("Model").fill(DEFAULT_MODEL_NAME)
    page.get_by_label("Task").select_option("generate")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("link", name=record_id).click()
    page.get_by_role("heading", name=f"Request {record_id}").wait_for()
    page.get_by_role("heading", name="Prompt").wait_for()
    text = page.locator("main").inner_text()
    assert "user: Say hello to the jobs view." in text
    stored = served.get(f"/v1/requests/{record_id}").json()
    assert stored["output_text"] and stored["output_text"] in text
    assert '"max_tokens": 8' in text and "time to first token" in text
    page.screenshot(path=str(screenshots / "ui-job.png"), full_page=True)


def test_a_batch_from_a_jsonl_file_runs_to_the_end(
    page, served: Served, screenshots, tmp_path: Path
) -> None:
    lines = [
        {
            "custom_id": f"ui-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": DEFAULT_MODEL_NAME,
                "messages": [{"role": "user", "content": f"Count to {i}."}],
                "max_tokens": 6,
            },
        }
        for i in range(3)
    ]
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    sign_in(page, served, served.admin_key, "jobs")
    page.get_by_label("Batch JSONL file").set_input_files(str(path))
    page.get_by_role("button", name="Submit batch").click()
    submitted = page.get_by_text(re.compile(r"Submitted (batch_\w+) \(3 requests\)"))
    submitted.wait_for()
    batch_id = re.search(r"(batch_\w+)", submitted.inner_text()).group(1)
    row = page.locator(f"[data-batch='{batch_id}']")
    row.get_by_text("completed: 3 succeeded, 0 failed").wait_for(timeout=120_000)
    assert row.locator("progress").evaluate("p => [p.value, p.max]") == [3, 3]
    assert served.get(f"/v1/batch/{batch_id}").json()["status"] == "completed"
    page.screenshot(path=str(screenshots / "ui-jobs.png"), full_page=True)
    # a file with bad lines: each fails alone, and the page shows the server's reason
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(lines[0]) + "\nnot json\n")
    page.get_by_label("Batch JSONL file").set_input_files(str(bad))
    page.get_by_role("button", name="Submit batch").click()
    submitted = page.get_by_text(re.compile(r"Submitted (batch_\w+) \(2 requests\)"))
    submitted.wait_for()
    bad_id = re.search(r"(batch_\w+)", submitted.inner_text()).group(1)
    row = page.locator(f"[data-batch='{bad_id}']")
    row.get_by_text("completed: 1 succeeded, 1 failed").wait_for(timeout=120_000)
    reason = row.locator("li.error")
    reason.wait_for()
    assert "line 2: not valid JSON" in reason.inner_text()
    # Opened again, the page lists the key's batches from the server, newest first.
    page.reload()
    page.locator(f"[data-batch='{batch_id}']").wait_for()
    listed = page.locator("[data-batch]").evaluate_all("rows => rows.map(r => r.dataset.batch)")
    assert listed.index(bad_id) < listed.index(batch_id)


def test_a_plain_key_sees_only_its_own_requests(page, served: Served) -> None:
    mine = chat(served, "Only mine.", key=served.plain_key)
    others = chat(served, "Not yours.")
    wait_for_record(served, mine)
    wait_for_record(served, others)
    sign_in(page, served, served.plain_key, "jobs")
    page.get_by_role("link", name=mine).wait_for()
    # nor anyone else's batches (GET /v1/batch lists the key's own)
    assert served.get("/v1/batch", key=served.plain_key).json()["data"] == []
    assert page.locator("[data-batch]").count() == 0
    shown = listed_ids(page)
    own = served.get(f"/v1/requests?api_key_id={served.plain_key_id}&limit=25").json()["data"]
    assert shown == [r["id"] for r in own] and others not in shown
    page.goto(f"{served.base_url}/ui/#/jobs/{others}")
    page.watch.allowed.append("status of 404")  # the server will not show another key's
    assert "is not on record" in page.get_by_role("alert").inner_text()
    page.watch.allowed.append("status of 403")  # the admin check: refused
    page.get_by_role("link", name="Models", exact=True).click()
    page.get_by_text("Loading and unloading need an admin key.").wait_for()
    assert page.get_by_role("button", name="Load").count() == 0
    assert page.get_by_role("button", name=re.compile("^Unload")).count() == 0
