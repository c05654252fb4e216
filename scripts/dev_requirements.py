"""What the development environment asks for, read from pyproject.toml: the
build requirements, the package's dependencies and its `test` and `dev`
extras, one requirement a line. scripts/setup.sh installs these under
constraints.txt; scripts/lock_constraints.py pins what they pull in.

    python3 scripts/dev_requirements.py
"""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
    extras = project["project"].get("optional-dependencies", {})
    for extra in ("test", "dev"):
        wanted += extras.get(extra, [])
    return list(dict.fromkeys(wanted))


if __name__ == "__main__":
    print("\n".join(requirements()))
