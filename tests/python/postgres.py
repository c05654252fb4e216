"""A PostgreSQL for tests, the first of:

1. the server at ``MODELBENCH_TEST_PG_URL`` (default the machine's,
   ``postgresql://postgres@127.0.0.1:5432/test``), when it answers;
2. the machine's Debian cluster, started with ``pg_ctlcluster`` when it is
   installed but down (what scripts/test.sh does too);
3. a throwaway cluster: ``initdb`` into a temporary directory (as the
   ``postgres`` user when we are root, since initdb refuses root), started
   on a free port with its socket in that directory, and stopped and deleted
   when the test process exits.

Each test session gets a database of its own, dropped at the end.

Under ``CI=true`` a missing PostgreSQL fails the tests instead of skipping them."""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

DEFAULT_URL = os.environ.get("MODELBENCH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN_URL = DEFAULT_URL  # becomes the throwaway cluster's when one is started


def _connect(url: str) -> tuple[psycopg.Connection | None, str]:
    """A connection, or None and why not."""
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=3), ""
    except psycopg.OperationalError as exc:
        return None, str(exc)


def _start_debian_cluster() -> bool:
    """Start the Debian cluster if one is installed; whether there was one to start."""
    etc = Path("/etc/postgresql")
    versions = sorted(etc.glob("*")) if etc.exists() and shutil.which("pg_ctlcluster") else []
    for version in versions:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version.name, "main", "start"],
            capture_output=True,
            check=False,
        )
    return bool(versions)


def postgres_bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: the newest /usr/lib/postgresql/*/bin, else PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).resolve().parent == Path(pg_ctl).resolve().parent:
        return Path(initdb).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ThrowawayCluster:
    """A PostgreSQL cluster in a temporary directory, trust auth, user ``postgres``."""

    root: Path  # data/, the socket and the server log
    port: int
    bin_dir: Path
    run_as: str | None  # the user the server runs as, when we are root

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> None:
        data = self.root / "data"
        done = self._run(
            "initdb",
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"initdb failed in {data}: {done.stderr.strip() or done.stdout.strip()}"
            )
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        done = self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        if done.returncode != 0:
            log = (
                (self.root / "server.log").read_text()
                if (self.root / "server.log").exists()
                else ""
            )
            raise RuntimeError(
                f"pg_ctl start failed on port {self.port}: {done.stderr.strip()}\n{log}"
            )

    def stop(self) -> None:
        """Stop the server (at once: its data is thrown away) and delete the directory."""
        if (self.root / "data" / "postmaster.pid").exists():
            self._run(
                "pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop", timeout=60
            )
        shutil.rmtree(self.root, ignore_errors=True)


def start_throwaway_cluster(bin_dir: Path | None = None) -> ThrowawayCluster:
    """initdb into a new temporary directory and start it on a free port.
    The caller stops it (``stop()``); ``RuntimeError`` says why it could not start."""
    bin_dir = bin_dir or postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("no initdb and pg_ctl (looked in /usr/lib/postgresql/*/bin and PATH)")
    run_as = None
    root = Path(tempfile.mkdtemp(prefix="modelbench-pg-"))
    if os.geteuid() == 0:  # initdb refuses root: the server runs as postgres (or nobody)
        for name in ("postgres", "nobody"):
            try:
                user = pwd.getpwnam(name)
            except KeyError:
                continue
            run_as = name
            os.chown(root, user.pw_uid, user.pw_gid)
            break
        else:
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError("running as root and no postgres or nobody user to run initdb as")
    cluster = ThrowawayCluster(root, _free_port(), bin_dir, run_as)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


_throwaway: ThrowawayCluster | None = None


def _use_throwaway_cluster() -> psycopg.Connection | None:
    """Start this process's throwaway cluster (once) and point ADMIN_URL at it."""
    global ADMIN_URL, _throwaway
    if _throwaway is None:
        _throwaway = start_throwaway_cluster()
        atexit.register(_throwaway.stop)
        ADMIN_URL = _throwaway.url
    return _connect(ADMIN_URL)[0]


def admin_connection() -> psycopg.Connection:
    conn, why = _connect(ADMIN_URL)
    if conn is None and _throwaway is None and _start_debian_cluster():
        deadline = time.monotonic() + 30
        # Wait while it starts; a server that answers with FATAL (no such
        # database, another auth method) will not change its mind.
        while conn is None and "FATAL" not in why and time.monotonic() < deadline:
            time.sleep(0.5)
            conn, why = _connect(ADMIN_URL)
    if conn is None and postgres_bin_dir() is not None:
        try:
            conn = _use_throwaway_cluster()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            why = f"{why}; a throwaway cluster did not start either: {exc}"
    if conn is None:
        message = (
            f"no PostgreSQL at {ADMIN_URL} ({why.strip()}); start one, install one "
            "(initdb on PATH or in /usr/lib/postgresql/*/bin), or set MODELBENCH_TEST_PG_URL"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return conn


def create_database() -> tuple[str, str]:
    """A new empty database; returns (its SQLAlchemy URL, its name)."""
    name = f"modelbench_test_{uuid.uuid4().hex[:12]}"
    with admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}", name


def drop_database(name: str) -> None:
    with admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def set_connections(dbname: str, allowed: bool) -> None:
    """Take a database away from its clients (the store is down) or give it back."""
    with admin_connection() as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )
