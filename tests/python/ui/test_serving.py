"""How the page is served: ``/`` redirects to ``/ui/``, every asset comes
with its content type and the strict Content-Security-Policy, no key is
needed for the page itself, and nothing in it runs inline."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx

from modelbench.ui.mount import CONTENT_SECURITY_POLICY, STATIC

from .conftest import Served

TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
}


def test_root_redirects_to_the_page(served: Served) -> None:
    root = httpx.get(served.base_url + "/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    bare = httpx.get(served.base_url + "/ui", follow_redirects=True)
    assert bare.status_code == 200 and str(bare.url).endswith("/ui/")


def test_every_asset_has_its_type_and_the_policy(served: Served) -> None:
    assets = sorted(p for p in STATIC.rglob("*") if p.is_file())
    assert {p.suffix for p in assets} <= set(TYPES), "an asset type the test does not know"
    assert len([p for p in assets if p.suffix == ".js"]) >= 10
    for path in assets:
        url = f"{served.base_url}/ui/{path.relative_to(STATIC).as_posix()}"
        response = httpx.get(url)  # no key: the page is public, its data is not
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith(TYPES[path.suffix]), url
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "default-src 'self'" in CONTENT_SECURITY_POLICY
        assert "unsafe" not in CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == path.read_bytes()
    assert httpx.get(served.base_url + "/ui/../../keys.json").status_code == 404
    assert httpx.get(served.base_url + "/ui/nothing.js").status_code == 404


def test_no_inline_script_style_or_foreign_url_in_the_assets() -> None:
    html = (STATIC / "index.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all("src=" in s for s in scripts)
    assert " style=" not in html and "<style" not in html
    assert not re.search(r"\bon[a-z]+=", html)  # no inline event handlers
    for path in STATIC.rglob("*"):
        if path.suffix in (".js", ".css", ".html"):
            text = path.read_text()
            found = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text)
            foreign = [u for u in found if u != "http://www.w3.org"]  # SVG's namespace name
            assert foreign == [], (path, foreign)
            assert ".innerHTML" not in text and "eval(" not in text, path


def test_the_api_still_needs_a_key(served: Served) -> None:
    assert httpx.get(served.base_url + "/v1/models").status_code == 401
    assert httpx.get(served.base_url + "/v1/bench/runs").status_code == 401
    assert served.get("/v1/bench/runs").status_code == 200
    bad = served.get("/v1/bench/runs/not-a-run")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "run_id"
    missing = served.get("/v1/eval/runs/eval_0123456789ab")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "run_not_found"


def test_the_wheel_takes_the_assets() -> None:
    """scikit-build-core copies every file of the package folder
    (wheel.packages) that no exclude and no .gitignore pattern leaves out."""
    root = Path(__file__).parents[3]
    pyproject = (root / "pyproject.toml").read_text()
    assert 'wheel.packages = ["python/modelbench"]' in pyproject
    assert "wheel.exclude" not in pyproject and "sdist.exclude" not in pyproject
    # The source tree's files (STATIC may be an installed copy, outside the repository).
    source = root / "python" / "modelbench" / "ui" / "static"
    assets = [str(p) for p in source.rglob("*") if p.is_file()]
    assert len(assets) >= len([p for p in STATIC.rglob("*") if p.is_file()]) > 0
    ignored = subprocess.run(["git", "check-ignore", *assets], cwd=root, capture_output=True)
    assert ignored.returncode == 1, ignored.stdout.decode()  # 1: none is ignored
