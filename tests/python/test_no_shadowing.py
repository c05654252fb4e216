"""No file of ours shadows an importable package of the environment.

A script run as `python3 benchmarks/x.py` has `benchmarks/` first on
sys.path, and pytest puts the repository root first (tests/ is a package):
a module there named like an installed package answers every `import` of
that name, including the imports inside third-party code (transformers
imports the PyPI package `kernels`, which `benchmarks/kernels.py` once
shadowed). Each folder that reaches sys.path this way is checked against
what a clean interpreter resolves, the standard library and the installed
distributions' top-level names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter, isolated (-I: no cwd, no PYTHONPATH on sys.path), run
# from a folder with nothing in it, says which names it can import.
RESOLVE = r"""
import importlib.metadata, importlib.util, json, sys
names = json.loads(sys.stdin.read())
top_level = importlib.metadata.packages_distributions()
found = {}
for name in names:
    where = []
    if name in sys.stdlib_module_names:
        where.append("the standard library")
    if name in top_level:
        where.append("the distribution(s) " + ", ".join(sorted(set(top_level[name]))))
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    # A namespace portion (a folder without __init__.py) never shadows: a
    # regular module anywhere on sys.path wins over it.
    if spec is not None and spec.origin not in (None, "namespace"):
        where.append(spec.origin)
    if where:
        found[name] = where
print(json.dumps(found))
"""


def module_files(folder: Path) -> dict[str, Path]:
    """The names `import NAME` finds in `folder` when it is on sys.path, and
    the file or package each one is."""
    found = {p.name.split(".")[0]: p for p in [*folder.glob("*.py"), *folder.glob("*.so")]}
    found.update(
        {p.name: p for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    )
    return found


def folders_put_on_sys_path() -> list[Path]:
    folders = [ROOT / "benchmarks", ROOT / "scripts", ROOT]
    # pytest (import mode "prepend") puts the first folder above a test
    # module that is not a package on sys.path.
    for test_file in (ROOT / "tests").rglob("*.py"):
        folder = test_file.parent
        while (folder / "__init__.py").is_file():
            folder = folder.parent
        if folder not in folders:
            folders.append(folder)
    return folders


def shadowed(names: set[str], tmp_path: Path) -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-I", "-c", RESOLVE],
        input=json.dumps(sorted(names)),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout)


def test_no_module_of_ours_shadows_an_installed_one(tmp_path: Path) -> None:
    ours: dict[str, Path] = {}
    for folder in folders_put_on_sys_path():
        for name, path in module_files(folder).items():
            ours.setdefault(name, path)
    clashes = shadowed(set(ours), tmp_path)
    assert not clashes, (
        "rename these (a name that says what the file measures or holds): "
        + "; ".join(
            f"{ours[name].relative_to(ROOT)} shadows {name} from {', '.join(where)}"
            for name, where in clashes.items()
        )
    )


def test_the_check_finds_a_shadowing_name(tmp_path: Path) -> None:
    """The check itself: names that are installed here are reported."""
    clashes = shadowed({"json", "pytest", "torch", "no_such_module_here"}, tmp_path)
    assert set(clashes) == {"json", "pytest", "torch"}
    assert any("standard library" in where for where in clashes["json"])
    assert any("distribution" in where for where in clashes["torch"])
