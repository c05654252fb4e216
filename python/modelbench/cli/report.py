"""``modelbench report``: compare saved benchmark runs in a table, PNG
figures and an HTML page (bench/report.py draws them)."""

from __future__ import annotations

import argparse

from modelbench.bench.report import report


def run(args: argparse.Namespace) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from modelbench.bench.saved_runs import list_runs
    from modelbench.cli.db import redact
    from modelbench.config import store_url

    try:
        if args.list or not args.run_ids:
            from modelbench.eval.saved import list_eval_runs

            runs = list_runs(args.database_url)
            evals = list_eval_runs(args.database_url)
            if not runs and not evals:
                print(
                    "no saved runs: `modelbench bench ... --save` and "
                    "`modelbench eval humaneval` save them"
                )
            for e in evals:
                passes = "  ".join(
                    f"{k}={v:.3f}" for k, v in e["summary"].items() if k.startswith("pass@")
                )
                print(
                    f"{e['id']} {e['created_at']:%Y-%m-%d %H:%M}  {e['benchmark']:<12} "
                    f"{(e['model'] or '-')[:30]:<30} {passes}"
                )
            for r in runs:
                tput = (
                    f"{r['output_throughput']:.1f} tok/s"
                    if r["output_throughput"] is not None
                    else "-"
                )
                print(
                    f"{r['id']}  {r['created_at']:%Y-%m-%d %H:%M}  {r['backend']:<12} "
                    f"{(r['model'] or '-')[:30]:<30} {r['name'] or '-':<20} {tput}"
                )
            return
        report(args.run_ids, args.out, args.database_url)
    except ValueError as exc:
        raise SystemExit(f"modelbench report: {exc}") from exc
    except SQLAlchemyError as exc:
        # Most often a store that never saved a run (no bench tables yet).
        raise SystemExit(
            "modelbench report: cannot read benchmark runs from "
            f"{redact(store_url(args.database_url))}: "
            f"{getattr(exc, 'orig', None) or exc}. `modelbench bench ... --save` saves runs there; "
            "`modelbench db upgrade` brings an older store up to date"
        ) from exc
    except OSError as exc:
        raise SystemExit(
            f"modelbench report: cannot write the report to {args.out}: {exc}"
        ) from exc


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "report",
        help="compare saved benchmark runs (run_...) and evaluation runs (eval_...): "
        "tables, PNG figures, HTML",
    )
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    p.add_argument("--out", default="modelbench-report", help="folder for the PNGs and report.html")
    p.add_argument("--list", action="store_true", help="list the saved runs")
    p.add_argument("--database-url", help="default: MODELBENCH_DATABASE_URL, else the SQLite file")
    p.set_defaults(func=run)
