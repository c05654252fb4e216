"""The server against its own OpenAPI spec, fuzzed from the outside by
schemathesis with every check (scripts/fuzz_api.py): a real ``modelbench
serve`` over a tiny model per setup, no API keys, a plain key and an admin
key, and no check may fail. Bounded: a few examples per operation; the
coverage phase (every boundary and type of every field, the slow one) runs
without keys, where nothing stops a request before its body is read; the
keyed setups run the examples, fuzzing and stateful phases, where the keys
and the admin routes differ. ``python3 scripts/fuzz_api.py`` runs longer."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "fuzz_api.py"
PHASES = {
    "keys_off": "examples,coverage,fuzzing,stateful",
    "plain_key": "examples,fuzzing,stateful",
    "admin_key": "examples,fuzzing,stateful",
}


@pytest.fixture(scope="module")
def fuzzed(tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Each setup's summary; the three run at once, each a server and a schemathesis."""
    work = tmp_path_factory.mktemp("fuzz")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    runs = {}
    for setup, phases in PHASES.items():
        command = [
            sys.executable,
            str(SCRIPT),
            "--model",
            str(tiny_llama_path),
            "--setups",
            setup,
            "--phases",
            phases,
            "--max-examples",
            "4",
            "--seed",
            "20",
            "--out",
            str(work / f"{setup}.json"),
            "--work-dir",
            str(work / setup),
        ]
        runs[setup] = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    summaries = {}
    for setup, run in runs.items():
        output, _ = run.communicate(timeout=600)
        summary_path = work / f"{setup}.json"
        assert summary_path.exists(), output
        summaries[setup] = json.loads(summary_path.read_text())["setups"][setup]
    return summaries


@pytest.mark.slow
@pytest.mark.parametrize("setup", list(PHASES))
def test_every_check_passes_on_every_operation(fuzzed: dict[str, dict], setup: str) -> None:
    summary = fuzzed[setup]
    report = f"{setup}: {summary['output_tail']}"
    assert summary["failures"] == [], report
    assert summary["errors"] == [], report
    assert summary["exit_code"] == 0, report
    operations = summary["operations"]
    assert operations["tested"] == operations["total"] >= 25, operations
    for phase in PHASES[setup].split(","):
        # Examples is skipped where the spec gives none; the others must have run clean.
        assert summary["phases"][phase]["status"] in ("success", "skip"), summary["phases"]
    assert summary["phases"]["fuzzing"]["status"] == "success"
    assert summary["test_cases"]["generated"] >= 50, summary["test_cases"]


@pytest.mark.slow
def test_the_fuzz_reached_the_model(fuzzed: dict[str, dict]) -> None:
    """Fuzzed bodies named the served model and got answers, not only
    validation errors: the server's request log holds succeeded
    generations, and the 400s dropped as contextual (the model's context,
    vocabulary, ...) were met."""
    store = Path(fuzzed["keys_off"]["work_dir"]) / "store.db"
    with sqlite3.connect(store) as db:
        succeeded = dict(
            db.execute(
                "SELECT endpoint, COUNT(*) FROM requests WHERE status = 'succeeded' "
                "GROUP BY endpoint"
            ).fetchall()
        )
    for endpoint in ("/v1/completions", "/v1/chat/completions", "/v1/infer"):
        assert succeeded.get(endpoint, 0) > 0, succeeded
    assert fuzzed["keys_off"]["dropped_by_code"], "no contextual 400 met"
