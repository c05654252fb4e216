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

import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np

ROWS = [
    ("backend", "backend"),
    ("model", "model"),
    ("name", "name"),
    ("request rate", "request_rate"),
    ("max concurrency", "max_concurrency"),
    ("completed", "completed"),
    ("failed", "failed"),
    ("request throughput (req/s)", "request_throughput"),
    ("output throughput (tok/s)", "output_throughput"),
    *[
        (f"{stat} {title} (ms)", f"{stat}_{metric}_ms")
        for metric, title in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2E"))
        for stat in ("mean", "median", "p99")
    ],
]
PERCENTILES = (50, 90, 95, 99)


def cell(run: dict[str, Any], key: str) -> str:
    value = run[key] if key in run else run["summary"].get(key, (run["config"] or {}).get(key))
    # With no successful request vLLM's keys say 0 ms; a report would read that as fast.
    if value is None or (key.endswith("_ms") and not run["summary"].get("completed")):
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _rate(run: dict[str, Any]) -> float | None:
    """The run's request rate, or None when requests were all sent at once."""
    rate = (run["config"] or {}).get("request_rate")
    return float(rate) if isinstance(rate, (int, float)) and math.isfinite(rate) else None


def _concurrency(run: dict[str, Any]) -> int | None:
    """Requests in flight at most: --max-concurrency, or all of them when they
    were sent at once with no limit."""
    config = run["config"] or {}
    if config.get("max_concurrency"):
        return int(config["max_concurrency"])
    return config.get("num_prompts") if _rate(run) is None else None


def labels(runs: list[dict[str, Any]]) -> list[str]:
    """Legend names: the run's name (or backend) with its concurrency or rate,
    since a sweep's runs share one name; the id's tail where that still collides."""
    names = []
    for run in runs:
        parts = [run["name"] or run["backend"]]
        if (run["config"] or {}).get("max_concurrency"):
            parts.append(f"c={run['config']['max_concurrency']}")
        if _rate(run) is not None:
            parts.append(f"{_rate(run):g} req/s")
        names.append(" ".join(parts))
    return [f"{n} ({r['id'][-6:]})" if names.count(n) > 1 else n for n, r in zip(names, runs)]


def table(runs: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of [metric, run 1, run 2, ...]."""
    head = ["run", *[r["id"] for r in runs]]
    return [head, *[[title, *[cell(r, key) for r in runs]] for title, key in ROWS]]


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows)


def _successes(run: dict[str, Any], field: str) -> np.ndarray:
    """Per-request samples (ms) of the successful requests; ITL flattened."""
    if field == "itl_ms":
        return np.array(
            [gap for r in run["requests"] if r["success"] for gap in r["itl_ms"]], dtype=float
        )
    return np.array(
        [r[field] for r in run["requests"] if r["success"] and r[field] is not None], dtype=float
    )


def draw(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The four figures (matplotlib ``Figure`` objects, by file stem), drawn
    but not saved: ``figures`` writes them. Runs with no successful request
    are left out of the latency figures (they have no latency) and noted
    under them."""
    import matplotlib

    matplotlib.use("Agg")  # no display: reports are written on servers and in CI
    import matplotlib.pyplot as plt

    names = labels(runs)
    failed = [n for n, r in zip(names, runs) if not r["summary"].get("completed")]
    return {
        "latency_cdf": _latency_cdfs(plt, runs, names, failed),
        "throughput": _throughput(plt, runs),
        "percentiles": _percentiles(plt, runs, names, failed),
        "pareto": _pareto(plt, runs, names, failed),
    }


def figures(runs: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write the four figures as PNGs into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    return [_save(fig, out / f"{stem}.png") for stem, fig in draw(runs).items()]


def _note_failed(fig: Any, failed: list[str]) -> None:
    """Name the runs a latency figure leaves out, under the plots."""
    if failed:
        fig.text(
            0.01,
            0.01,
            "not drawn, no successful request: " + ", ".join(failed),
            fontsize=8,
            color="firebrick",
            va="bottom",
        )


def _legend(axes: Any) -> None:
    """One legend right of the figure for both panels, clear of the data."""
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        axes[-1].legend(handles, names, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))


def _latency_cdfs(plt: Any, runs: list, names: list[str], failed: list[str]) -> Any:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, field, title in (
        (axes[0], "ttft_ms", "TTFT"),
        (axes[1], "latency_ms", "End-to-end latency"),
    ):
        for run, name in zip(runs, names):
            values = np.sort(_successes(run, field))
            if values.size:
                ax.step(
                    values, np.arange(1, values.size + 1) / values.size, where="post", label=name
                )
        ax.set(
            title=f"{title} CDF",
            xlabel="ms",
            ylabel="fraction of successful requests",
            ylim=(0, 1.02),
        )
        ax.grid(alpha=0.3)
    _note_failed(fig, failed)
    _legend(axes)
    return fig


def _throughput(plt: Any, runs: list) -> Any:
    """One line per (backend, model, name), against whichever of concurrency
    and request rate the group varies (a --sweep varies one)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["backend"], run["model"], run["name"]), []).append(run)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (backend, model, name), members in groups.items():
        concurrencies = {_concurrency(r) for r in members} - {None}
        rates = {_rate(r) for r in members} - {None}
        by_rate = len(rates) > len(concurrencies) or not concurrencies
        x_of = _rate if by_rate else _concurrency
        points = sorted(
            (float(x), r["summary"].get("output_throughput") or 0.0)
            for r in members
            if (x := x_of(r)) is not None
        )
        if points:
            axes[1 if by_rate else 0].plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="o",
                label=name or f"{backend} {Path(model or '').name}".strip(),
            )
    for ax, xlabel in (
        (axes[0], "max concurrency (requests in flight)"),
        (axes[1], "request rate (req/s)"),
    ):
        ax.set(
            title=f"Output throughput against {xlabel.split(' (')[0]}",
            xlabel=xlabel,
            ylabel="tokens/s",
        )
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
            ax.set_ylim(bottom=0)
        else:
            ax.text(
                0.5, 0.5, "no runs vary this", transform=ax.transAxes, ha="center", color="gray"
            )
    return fig


def _percentiles(plt: Any, runs: list, names: list[str], failed: list[str]) -> Any:
    # From the per-request records, so every run has all four percentiles
    # whichever --percentiles it was run with.
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(runs))
    ticks = np.arange(len(PERCENTILES))
    for ax, field, title in ((axes[0], "ttft_ms", "TTFT"), (axes[1], "itl_ms", "ITL")):
        for i, (run, name) in enumerate(zip(runs, names)):
            sample = _successes(run, field)
            if sample.size:
                ax.bar(ticks + i * width, np.percentile(sample, PERCENTILES), width, label=name)
        ax.set_xticks(ticks + width * (len(runs) - 1) / 2, [f"p{p}" for p in PERCENTILES])
        ax.set(title=f"{title} percentiles", ylabel="ms")
        ax.grid(alpha=0.3, axis="y")
    _note_failed(fig, failed)
    _legend(axes)
    return fig


def _pareto(plt: Any, runs: list, names: list[str], failed: list[str]) -> Any:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = [
        (run["summary"]["p99_e2el_ms"], run["summary"].get("output_throughput") or 0.0, name)
        for run, name in zip(runs, names)
        if run["summary"].get("completed") and run["summary"].get("p99_e2el_ms") is not None
    ]
    for x, y, name in points:
        ax.scatter(x, y)
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = pareto_front([(x, y) for x, y, _ in points])
    if len(front) > 1:
        ax.plot(
            [p[0] for p in front],
            [p[1] for p in front],
            linestyle="--",
            alpha=0.6,
            label="Pareto front",
        )
        ax.legend(fontsize=8)
    ax.set(
        title="Output throughput against p99 latency (up and left is better)",
        xlabel="p99 end-to-end latency (ms)",
        ylabel="tokens/s",
    )
    ax.grid(alpha=0.3)
    _note_failed(fig, failed)
    return fig


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other beats on both lower latency and higher throughput, by latency."""
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout(rect=(0, 0.04, 1, 1) if fig.texts else None)  # room for a note
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_html(tables: list[list[list[str]]], images: list[Path], out: Path) -> Path:
    def render(rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(v)}</th>" for v in rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
            for row in rows[1:]
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    imgs = "".join(
        f'<h2>{html.escape(p.stem.replace("_", " "))}</h2><img src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}">'
        for p in images
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>modelbench report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style>"
        "</head><body><h1>modelbench report</h1>"
        f"{''.join(render(t) for t in tables)}{imgs}</body></html>"
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    path.write_text(page)
    return path


def pass_at_k_figure(evals: list[dict[str, Any]]) -> Any:
    """Bars of pass@k per evaluation run (one group per k), labelled by model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(
        {k for run in evals for k in run["summary"] if k.startswith("pass@")},
        key=lambda k: int(k.split("@")[1]),
    )
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(evals))
    ticks = np.arange(len(ks))
    for i, run in enumerate(evals):
        values = [run["summary"].get(k, 0.0) for k in ks]
        config = run["config"]
        style = f", {config['style']}" if config.get("style") else ""
        temp = f", T={config['temperature']:g}" if config.get("temperature") is not None else ""
        label = f"{run['model'] or '-'}{style}{temp} ({run['id'][-6:]})"
        ax.bar(ticks + i * width, values, width, label=label)
    ax.set_xticks(ticks + width * (len(evals) - 1) / 2, ks)
    ax.set(title="HumanEval pass@k (unbiased estimate)", ylabel="fraction of problems", ylim=(0, 1))
    ax.grid(alpha=0.3, axis="y")
    if evals:
        ax.legend(fontsize=8)
    return fig


def eval_table(evals: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of [field, eval run 1, ...]: model, pass@k, samples, isolation."""
    ks = sorted(
        {k for run in evals for k in run["summary"] if k.startswith("pass@")},
        key=lambda k: int(k.split("@")[1]),
    )
    rows = [["eval run", *[r["id"] for r in evals]], ["model", *[r["model"] or "-" for r in evals]]]
    for k in ks:
        rows.append([k, *[f"{r['summary'][k]:.4f}" if k in r["summary"] else "-" for r in evals]])
    for key in ("problems", "samples", "isolation", "score_s"):
        rows.append([key, *[str(r["summary"].get(key, "-")) for r in evals]])
    return rows


def report(run_ids: list[str], out: str | Path, database_url: str | None = None) -> Path:
    """Load the runs (benchmark runs ``run_...`` and evaluation runs
    ``eval_...``, side by side), print the tables, write the figures and
    report.html; returns its path."""
    from modelbench.bench.saved_runs import load_runs
    from modelbench.eval.saved import load_eval_runs

    eval_ids = [i for i in run_ids if i.startswith("eval_")]
    runs = load_runs([i for i in run_ids if i not in eval_ids], database_url)
    evals = load_eval_runs(eval_ids, database_url) if eval_ids else []
    out = Path(out)
    images = figures(runs, out) if runs else []
    tables = []
    if runs:
        print(format_table(table(runs)))
        tables.append(table(runs))
    if evals:
        print(format_table(eval_table(evals)))
        tables.append(eval_table(evals))
        out.mkdir(parents=True, exist_ok=True)
        images.append(_save(pass_at_k_figure(evals), out / "pass_at_k.png"))
    path = write_html(tables, images, out)
    print(f"wrote {path}")
    return path
