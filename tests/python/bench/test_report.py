"""Runs saved to the store and reported: the table, the figures, the HTML;
an all-failed run; unknown ids; and `modelbench bench` end to end on a tiny
model through the CLI (result file, --save, --sweep)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelbench.bench.metrics import RequestResult, summarize
from modelbench.bench.report import (
    draw,
    figures,
    format_table,
    labels,
    pareto_front,
    report,
    table,
)
from modelbench.bench.saved_runs import list_runs, load_runs, save_run
from modelbench.cli.main import main

from ..tiny_models import build_tiny_model


def fake_result(
    name: str,
    concurrency: int | None,
    ttft: float,
    fail: bool = False,
    rate: float | str = "inf",
    duration: float = 2.0,
) -> dict:
    results = [
        RequestResult(
            success=not fail,
            prompt_len=10,
            output_tokens=5,
            ttft=ttft * (1 + i / 10),
            itl=[0.01] * 4,
            latency=ttft * (1 + i / 10) + 0.04,
            error="HTTP 500" if fail else "",
        )
        for i in range(10)
    ]
    out = summarize(results, duration)
    out["config"] = {
        "backend": "openai",
        "model": "m",
        "name": name,
        "max_concurrency": concurrency,
        "request_rate": rate,
        "num_prompts": 10,
        "percentiles": [50, 90, 95, 99],
    }
    out["environment"] = {"torch": "x"}
    return out


def test_save_load_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    ids = [save_run(fake_result("sweep", c, 0.1 * c), url) for c in (1, 4)]
    ids.append(save_run(fake_result("broken", 2, 0.1, fail=True), url))
    runs = load_runs(ids, url)
    assert [r["id"] for r in runs] == ids and len(runs[0]["requests"]) == 10
    assert runs[0]["requests"][0]["ttft_ms"] == pytest.approx(100.0)
    assert runs[2]["summary"]["completed"] == 0
    assert {r["id"] for r in list_runs(url)} == set(ids)

    path = report(ids, tmp_path / "out", url)
    for name in ("latency_cdf", "throughput", "percentiles", "pareto"):
        assert (tmp_path / "out" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = path.read_text()
    assert page.count("data:image/png;base64,") == 4 and ids[0] in page
    rows = {row[0]: row[1:] for row in table(runs)}
    assert rows["completed"] == ["10", "10", "0"] and rows["failed"] == ["0", "0", "10"]
    assert rows["output throughput (tok/s)"][0] == "25.00"  # 50 tokens over 2 s
    assert "p99 TTFT (ms)" in format_table(table(runs))
    assert rows["median E2E (ms)"][0] == "185.00" and rows["median ITL (ms)"][1] == "10.00"
    assert rows["mean TPOT (ms)"][0] == "10.00"  # (E2E - TTFT) / 4 gaps
    assert rows["max concurrency"] == ["1", "4", "2"] and rows["request rate"] == ["inf"] * 3
    # vLLM's keys say 0 ms for a run with no successful request; the report says "-".
    assert rows["mean TTFT (ms)"][2] == rows["p99 E2E (ms)"][2] == "-"
    assert f"<td>{rows['p99 TTFT (ms)'][1]}</td>" in page
    with pytest.raises(ValueError, match="run_nope"):
        load_runs([ids[0], "run_nope"], url)


def test_only_failed_runs_still_draw(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    ids = [save_run(fake_result("down", c, 0.1, fail=True), url) for c in (1, 2)]
    paths = figures(load_runs(ids, url), tmp_path / "out")
    assert [p.name for p in paths] == [
        "latency_cdf.png",
        "throughput.png",
        "percentiles.png",
        "pareto.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    drawn = draw(load_runs(ids, url))
    cdf = drawn["latency_cdf"]
    assert all(not ax.get_lines() for ax in cdf.axes)  # nothing to draw...
    assert "not drawn, no successful request: down c=1, down c=2" in cdf.texts[0].get_text()
    assert not drawn["pareto"].axes[0].collections  # ...and no point for a failed run


def test_figures_plot_the_runs_data(tmp_path: Path) -> None:
    """What each figure draws: the series, their data and the axis labels."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    ids = [save_run(fake_result("sweep", c, 0.1 * c), url) for c in (1, 4)]
    ids.append(save_run(fake_result("broken", 2, 0.1, fail=True), url))
    runs = load_runs(ids, url)
    drawn = draw(runs)
    assert list(drawn) == ["latency_cdf", "throughput", "percentiles", "pareto"]

    ttft, e2e = drawn["latency_cdf"].axes
    assert (ttft.get_title(), e2e.get_title()) == ("TTFT CDF", "End-to-end latency CDF")
    assert ttft.get_xlabel() == "ms" and ttft.get_ylabel() == "fraction of successful requests"
    assert [line.get_label() for line in ttft.get_lines()] == ["sweep c=1", "sweep c=4"]
    # The c=4 run's TTFTs are 400 ms x (1 + i/10), i < 10, as a step CDF to 1.
    x, y = ttft.get_lines()[1].get_data()
    assert list(x) == pytest.approx([400.0 * (1 + i / 10) for i in range(10)])
    assert list(y) == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert "broken c=2" in drawn["latency_cdf"].texts[0].get_text()

    by_concurrency, by_rate = drawn["throughput"].axes
    assert by_concurrency.get_xlabel() == "max concurrency (requests in flight)"
    assert by_concurrency.get_ylabel() == "tokens/s"
    (sweep, broken) = by_concurrency.get_lines()
    assert (sweep.get_label(), broken.get_label()) == ("sweep", "broken")
    assert list(sweep.get_xdata()) == [1.0, 4.0]
    assert list(sweep.get_ydata()) == pytest.approx([25.0, 25.0])  # 50 tokens over 2 s each
    assert not by_rate.get_lines()  # no run varies the rate

    ttft_bars, itl_bars = drawn["percentiles"].axes
    assert [t.get_text() for t in ttft_bars.get_xticklabels()] == ["p50", "p90", "p95", "p99"]
    heights = [bar.get_height() for bar in ttft_bars.containers[0]]
    samples = [100.0 * (1 + i / 10) for i in range(10)]
    assert heights == pytest.approx(list(np.percentile(samples, [50, 90, 95, 99])))
    assert [b.get_height() for b in itl_bars.containers[1]] == pytest.approx([10.0] * 4)

    (pareto,) = drawn["pareto"].axes
    assert pareto.get_xlabel() == "p99 end-to-end latency (ms)"
    points = [tuple(c.get_offsets()[0]) for c in pareto.collections]
    expected = [(r["summary"]["p99_e2el_ms"], 25.0) for r in runs[:2]]
    assert points == pytest.approx(expected)
    assert [a.get_text() for a in pareto.texts] == ["sweep c=1", "sweep c=4"]


def test_labels_tell_a_sweeps_runs_apart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    ids = [save_run(fake_result("sweep", c, 0.1), url) for c in (1, 4)]
    ids += [save_run(fake_result("rates", None, 0.1, rate=r), url) for r in (2.0, 2.0)]
    names = labels(load_runs(ids, url))
    assert names[:2] == ["sweep c=1", "sweep c=4"]
    assert names[2] == f"rates 2 req/s ({ids[2][-6:]})" and names[3].endswith(f"({ids[3][-6:]})")


def test_cli_report_list_and_unknown_ids(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = save_run(fake_result("one", 1, 0.1), url)
    main(["report", "--list", "--database-url", url])
    listed = capsys.readouterr().out
    assert run_id in listed and "openai" in listed and "25.0 tok/s" in listed

    main(["report", run_id, "--out", str(tmp_path / "out"), "--database-url", url])
    assert (
        "p99 TTFT (ms)" in capsys.readouterr().out
        and (tmp_path / "out" / "report.html").stat().st_size
    )

    with pytest.raises(SystemExit) as exc:
        main(["report", run_id, "run_missing", "--database-url", url])
    assert exc.value.code != 0 and "run_missing" in str(exc.value.code)
    assert "modelbench report --list" in str(exc.value.code)

    empty = f"sqlite:///{tmp_path / 'empty.db'}"  # never saved a run: no bench tables
    with pytest.raises(SystemExit, match="cannot read benchmark runs.*--save"):
        main(["report", "--list", "--database-url", empty])


def test_pareto_front() -> None:
    points = [(100.0, 10.0), (200.0, 30.0), (150.0, 5.0), (300.0, 25.0), (400.0, 40.0)]
    assert pareto_front(points) == [(100.0, 10.0), (200.0, 30.0), (400.0, 40.0)]


def test_bench_cli_end_to_end(tmp_path: Path) -> None:
    model = build_tiny_model("llama_gqa", tmp_path / "llama")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result_file = tmp_path / "sweep.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelbench",
            "bench",
            "--backend",
            "engine",
            "--model",
            str(model),
            "--num-prompts",
            "6",
            "--random-input-len",
            "24",
            "--random-output-len",
            "8",
            "--sweep",
            "max-concurrency=1,3",
            "--goodput",
            "ttft:10000",
            "--save",
            "--database-url",
            url,
            "--result-file",
            str(result_file),
            "--name",
            "tiny",
            "--no-progress",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("Serving Benchmark Result") == 2
    runs = json.loads(result_file.read_text())
    assert [r["max_concurrency"] for r in runs] == [1, 3]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parent,
    ).stdout.strip()
    for run in runs:
        assert run["completed"] == 6 and run["total_output_tokens"] == 48
        assert run["request_goodput"] == pytest.approx(run["request_throughput"])
        env = run["environment"]
        assert env["torch"] and run["run_id"].startswith("run_")
        # What it ran from: the source tree, the build's record, or git in the cwd (this checkout).
        if head:  # run from a checkout (CI): the revision is this tree's or the build's
            assert re.fullmatch(r"[0-9a-f]{40}", env["git_revision"])
            assert env["git_revision_from"] in ("source tree", "build", "current directory")
            if env["git_revision_from"] != "build":  # a build may predate the last commits
                assert env["git_revision"] == head
        else:  # no git here: only a revision recorded at build time can be named
            assert env["git_revision"] is None or env["git_revision_from"] == "build", env
        # What it measured: the checkpoint, by path and weights file.
        assert env["model"]["path"] == str(model.resolve()) and env["model"]["name"] == str(model)
        weights = {f["name"]: f for f in env["model"]["files"]}
        assert weights["model.safetensors"]["size"] == (model / "model.safetensors").stat().st_size
        assert weights["model.safetensors"]["mtime"]
    listed = subprocess.run(
        [sys.executable, "-m", "modelbench", "report", "--list", "--database-url", url],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert all(r["run_id"] in listed.stdout for r in runs)
    bad = subprocess.run(
        [sys.executable, "-m", "modelbench", "bench", "--backend", "openai", "--num-prompts", "1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "need --model" in bad.stderr


def test_a_run_without_model_is_saved_under_the_model_the_server_served(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = fake_result("default", 1, 0.1)
    result["config"]["model"] = None
    result["environment"]["model"] = {"name": None, "served": "SmolLM2-135M-Instruct"}
    run_id = save_run(result, url)
    [run] = [r for r in list_runs(url) if r["id"] == run_id]
    assert run["model"] == "SmolLM2-135M-Instruct"
