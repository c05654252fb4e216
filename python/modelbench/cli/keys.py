"""``modelbench keys create|list|revoke``: API keys in the keys file the
server reads (``--keys-file``, else ``MODELBENCH_KEYS_FILE``, else the user's
data directory). A new key's secret is printed once; only its hash is kept."""

from __future__ import annotations

import argparse

from modelbench.config import Settings


def run(args: argparse.Namespace) -> None:
    from modelbench.server.keys import KeyStore

    try:
        path = args.keys_file or Settings().keys_file
        store = KeyStore(path)
        if args.keys_command == "create":
            key, secret = store.create(
                args.name,
                admin=args.admin,
                rpm=args.rpm,
                tpm=args.tpm,
                store_text=not args.no_store_text,
                share_cache=args.share_cache,
            )
            print(f"created {key.id} ({key.name}{', admin' if key.admin else ''}) in {store.path}")
            print(f"key: {secret}")
            print("Keep it now: it is not stored and cannot be shown again.")
        elif args.keys_command == "list":
            print(
                f"{'id':<14} {'name':<20} {'prefix':<8} {'admin':<6} {'rpm':>6} {'tpm':>8} "
                f"{'text':<5} {'created':<26} revoked"
            )
            for k in store.keys():
                print(
                    f"{k.id:<14} {k.name[:20]:<20} {k.prefix:<8} {str(k.admin).lower():<6} "
                    f"{k.rpm if k.rpm else '-':>6} {k.tpm if k.tpm else '-':>8} "
                    f"{str(k.store_text).lower():<5} {k.created_at:<26} {k.revoked_at or '-'}"
                )
        else:
            key = store.revoke(args.key_id)
            print(f"revoked {key.id} ({key.name}) at {key.revoked_at}")
    except ValueError as exc:
        raise SystemExit(f"modelbench keys: {exc}") from exc


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("keys", help="create, list and revoke API keys")
    sub = p.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="a new key (its secret is printed once)")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument("--admin", action="store_true", help="may load and unload models")
    create.add_argument("--rpm", type=int, help="requests per minute (default: the server's)")
    create.add_argument("--tpm", type=int, help="tokens per minute (default: the server's)")
    create.add_argument(
        "--no-store-text",
        action="store_true",
        help="the request log keeps this key's metadata, not its prompts and outputs",
    )
    create.add_argument(
        "--share-cache",
        action="store_true",
        help="answers the response cache keeps for this key may serve every other key "
        "(default: only this one)",
    )
    sub.add_parser("list", help="every key, revoked ones included (no secrets)")
    revoke = sub.add_parser("revoke", help="a key stops working at once")
    revoke.add_argument("key_id", help="the key's id, key_...")
    for q in sub.choices.values():
        q.add_argument(
            "--keys-file", help="default: MODELBENCH_KEYS_FILE, else the user's data directory"
        )
        q.set_defaults(func=run)
