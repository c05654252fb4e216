"""What a run records about itself: the git revision (the source tree, the
build's record, or git in the current directory, in that order; never git
run inside site-packages), the build's record written by CMake, and the
model's identity for in-process and HTTP backends."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import modelbench
from modelbench.bench import session
from modelbench.bench.session import BenchConfig, checkpoint_identity, git_revision, model_identity

REPO = Path(__file__).resolve().parents[3]


def head(folder: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, cwd=folder
    ).stdout.strip()


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """modelbench as if installed in a site-packages inside some other git repository."""
    site = tmp_path / "other-repo" / "site-packages" / "modelbench"
    site.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(tmp_path / "other-repo")], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path / "other-repo"),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "not modelbench",
        ],
        check=True,
    )
    monkeypatch.setattr(modelbench, "__file__", str(site / "__init__.py"))
    # git_revision reads where its own module lies, wherever modelbench was imported from.
    monkeypatch.setattr(session, "__file__", str(site / "bench" / "session.py"))
    monkeypatch.setitem(
        sys.modules, "modelbench._build_info", None
    )  # built before builds recorded it
    return site


@pytest.mark.skipif(not head(REPO), reason="not a git checkout")
def test_the_source_tree_first() -> None:
    if Path(modelbench.__file__).resolve().parent != REPO / "python" / "modelbench":
        pytest.skip("modelbench is not imported from this source tree")
    assert git_revision() == (head(REPO), "source tree")


@pytest.mark.skipif(not head(REPO), reason="not a git checkout")
def test_installed_reads_the_build_record_then_the_cwd(
    installed: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    other = head(installed.parent.parent)
    monkeypatch.chdir(REPO)
    assert git_revision() == (head(REPO), "current directory")  # not the other repo's
    monkeypatch.chdir(tmp_path)  # no git here
    assert git_revision() == (None, None)
    built = "0123456789abcdef0123456789abcdef01234567"
    record = types.ModuleType("modelbench._build_info")
    record.GIT_REVISION = built  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelbench._build_info", record)
    assert git_revision() == (built, "build") and built != other


@pytest.mark.skipif(
    shutil.which("cmake") is None or not head(REPO), reason="needs cmake and a git checkout"
)
def test_cmake_writes_the_build_record(tmp_path: Path) -> None:
    script = REPO / "cmake" / "build_info.cmake"
    for source, expected in ((REPO, head(REPO)), (tmp_path, None)):
        out = tmp_path / "out" / "_build_info.py"
        subprocess.run(
            ["cmake", f"-DSOURCE_DIR={source}", f"-DOUTPUT={out}", "-P", str(script)], check=True
        )
        namespace: dict = {}
        exec(out.read_text(), namespace)
        assert namespace["GIT_REVISION"] == expected


def test_model_identity(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 123)
    (folder / "config.json").write_text("{}")
    (folder / "notes.txt").write_text("not weights")
    identity = checkpoint_identity(str(folder))
    assert identity["path"] == str(folder.resolve())
    assert {f["name"]: f["size"] for f in identity["files"]} == {
        "config.json": 2,
        "model.safetensors": 123,
    }
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"g" * 7)
    assert [f["size"] for f in checkpoint_identity(str(gguf))["files"]] == [7]

    default = checkpoint_identity(None)
    assert default["name"] == "default" and default["files"][0]["name"].endswith(".gguf")
    assert default["files"][0]["size"] > 1_000_000

    served = types.SimpleNamespace(model="smollm2", served_model="smollm2:1")
    assert model_identity(BenchConfig(backend="openai", model="smollm2"), served) == {
        "name": "smollm2",
        "served": "smollm2:1",
    }
    assert model_identity(BenchConfig(backend="engine", model=str(gguf)), None)["path"] == str(
        gguf.resolve()
    )
