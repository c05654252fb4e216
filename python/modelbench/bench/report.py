"""``modelbench report RUN_ID...``: saved runs side by side, as a table on the
terminal and as PNG figures with one self-contained HTML page (``--out``):

- latency CDFs: TTFT and end-to-end latency, one curve per run;
- output throughput against concurrency or request rate, one line per
  (backend, model, name) group: what ``--sweep`` runs are for;
- TTFT and ITL percentiles (p50, p90, p95, p99) per run;
- output throughput against p99 end-to-end latency, with the Pareto front.

``modelbench report --list`` shows the saved runs.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np

ROWS = [
    ("backend", "backend"), ("model", "model"), ("name", "name"), ("request rate", "request_rate"),
    ("max concurrency", "max_concurrency"), ("completed", "completed"), ("failed", "failed"),
    ("request throughput (req/s)", "request_throughput"), ("output throughput (tok/s)", "output_throughput"),
    ("mean TTFT (ms)", "mean_ttft_ms"), ("median TTFT (ms)", "median_ttft_ms"), ("p99 TTFT (ms)", "p99_ttft_ms"),
    ("mean TPOT (ms)", "mean_tpot_ms"), ("p99 TPOT (ms)", "p99_tpot_ms"),
    ("mean ITL (ms)", "mean_itl_ms"), ("p99 ITL (ms)", "p99_itl_ms"),
    ("mean E2E (ms)", "mean_e2el_ms"), ("p99 E2E (ms)", "p99_e2el_ms"),
]
PERCENTILES = (50, 90, 95, 99)


def cell(run: dict[str, Any], key: str) -> str:
    value = run.get(key, run["summary"].get(key))
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def label(run: dict[str, Any]) -> str:
    return run["name"] or f"{run['backend']} {run['id'][-6:]}"


def table(runs: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of [metric, run 1, run 2, ...]."""
    head = ["run", *[r["id"] for r in runs]]
    return [head, *[[title, *[cell(r, key) for r in runs]] for title, key in ROWS]]


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows)


def _successes(run: dict[str, Any], field: str) -> list[float]:
    return [r[field] for r in run["requests"] if r["success"] and r[field] is not None]


def figures(runs: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, field, title in ((axes[0], "ttft_ms", "TTFT"), (axes[1], "latency_ms", "End-to-end latency")):
        for run in runs:
            values = np.sort(_successes(run, field))
            if values.size:
                ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", label=label(run))
        ax.set(title=f"{title} CDF", xlabel="ms", ylabel="fraction of requests", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    paths.append(_save(fig, out / "latency_cdf.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for run in runs:
        config = run["config"] or {}
        concurrency, rate = config.get("max_concurrency"), config.get("request_rate")
        x = concurrency if concurrency else (rate if isinstance(rate, (int, float)) and math.isfinite(rate) else None)
        if x is not None:
            groups.setdefault((run["backend"], run["model"], run["name"]), []).append(
                (float(x), run["summary"].get("output_throughput", 0.0)))
    for (backend, model, name), points in groups.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name or f"{backend} {model or ''}")
    ax.set(title="Output throughput", xlabel="max concurrency (or request rate, req/s)", ylabel="tokens/s")
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=8)
    paths.append(_save(fig, out / "throughput.png"))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(runs))
    for ax, metric in ((axes[0], "ttft"), (axes[1], "itl")):
        for i, run in enumerate(runs):
            values = [run["summary"].get(f"p{p}_{metric}_ms") or 0.0 for p in PERCENTILES]
            ax.bar(np.arange(len(PERCENTILES)) + i * width, values, width, label=label(run))
        ax.set_xticks(np.arange(len(PERCENTILES)) + width * (len(runs) - 1) / 2, [f"p{p}" for p in PERCENTILES])
        ax.set(title=f"{metric.upper()} percentiles", ylabel="ms")
    axes[0].legend(fontsize=8)
    paths.append(_save(fig, out / "percentiles.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    points = [(run["summary"].get("p99_e2el_ms") or 0.0, run["summary"].get("output_throughput") or 0.0, label(run))
              for run in runs]
    for x, y, name in points:
        ax.scatter(x, y)
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = pareto_front([(x, y) for x, y, _ in points])
    if len(front) > 1:
        ax.plot([p[0] for p in front], [p[1] for p in front], linestyle="--", alpha=0.6, label="Pareto front")
        ax.legend(fontsize=8)
    ax.set(title="Throughput against p99 latency", xlabel="p99 end-to-end latency (ms)", ylabel="tokens/s")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out / "pareto.png"))
    return paths


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other beats on both lower latency and higher throughput, by latency."""
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_html(runs: list[dict[str, Any]], images: list[Path], out: Path) -> Path:
    rows = table(runs)
    head = "".join(f"<th>{html.escape(v)}</th>" for v in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows[1:])
    imgs = "".join(f'<h2>{html.escape(p.stem.replace("_", " "))}</h2><img src="data:image/png;base64,'
                   f'{base64.b64encode(p.read_bytes()).decode()}">' for p in images)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>modelbench report</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}</style>"
            f"</head><body><h1>modelbench report</h1><table><tr>{head}</tr>{body}</table>{imgs}</body></html>")
    path = out / "report.html"
    path.write_text(page)
    return path


def report(run_ids: list[str], out: str | Path, database_url: str | None = None) -> Path:
    """Load the runs, print the table, write the figures and report.html; returns its path."""
    from modelbench.bench.store import load_runs

    runs = load_runs(run_ids, database_url)
    print(format_table(table(runs)))
    out = Path(out)
    path = write_html(runs, figures(runs, out), out)
    print(f"wrote {path}")
    return path


def run(args: argparse.Namespace) -> None:
    from modelbench.bench.store import list_runs

    try:
        if args.list or not args.run_ids:
            runs = list_runs(args.database_url)
            if not runs:
                print("no saved runs: `modelbench bench ... --save` saves one")
            for r in runs:
                tput = f"{r['output_throughput']:.1f} tok/s" if r["output_throughput"] is not None else "-"
                print(f"{r['id']}  {r['created_at']:%Y-%m-%d %H:%M}  {r['backend']:<12} "
                      f"{(r['model'] or '-')[:30]:<30} {r['name'] or '-':<20} {tput}")
            return
        report(args.run_ids, args.out, args.database_url)
    except ValueError as exc:
        raise SystemExit(f"modelbench report: {exc}") from exc


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("report", help="compare saved benchmark runs: table, PNG figures, HTML")
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    p.add_argument("--out", default="modelbench-report", help="folder for the PNGs and report.html")
    p.add_argument("--list", action="store_true", help="list the saved runs")
    p.add_argument("--database-url", help="default: MODELBENCH_DATABASE_URL, else the SQLite file")
    p.set_defaults(func=run)
