"""``modelbench db upgrade|downgrade|current``: the store's migrations."""

from __future__ import annotations

import argparse

from modelbench.config import Settings


def run(args: argparse.Namespace) -> None:
    from modelbench.db import migrate

    try:
        url = Settings(**({"database_url": args.url} if args.url else {})).store_url()
        if args.db_command == "upgrade":
            migrate.upgrade(url, args.revision)
        elif args.db_command == "downgrade":
            migrate.downgrade(url, args.revision)
        print(
            f"{redact(url)}: at revision {migrate.current_revision(url) or 'none (empty)'}"
            f" (latest: {migrate.head_revision()})"
        )
    except ValueError as exc:
        raise SystemExit(f"modelbench db: {exc}") from exc


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("db", help="the store: apply or revert migrations, show the revision")
    sub = p.add_subparsers(dest="db_command", required=True)
    for name, help_text, default in [
        ("upgrade", "apply migrations up to REVISION (default: the latest)", "head"),
        ("downgrade", "revert migrations down to REVISION (base: an empty database)", None),
        ("current", "show the database's revision", None),
    ]:
        q = sub.add_parser(name, help=help_text)
        if name == "downgrade":
            q.add_argument("revision", help="a revision id, -1 for one step, or base")
        elif name == "upgrade":
            q.add_argument("revision", nargs="?", default=default)
        q.add_argument(
            "--url",
            help="database URL (default: MODELBENCH_DATABASE_URL, else the "
            "SQLite file in the user's data directory)",
        )
        q.set_defaults(func=run)
