"""API keys: a file of hashed keys, shared by ``modelbench keys`` and the
server.

A key is ``mb-`` and 43 random URL-safe characters; only its SHA-256 is
stored, with an id (``key_...``, what logs and the request log show), a name,
a display prefix, an admin flag, per-key limits (requests and tokens per
minute; None: the server's defaults), whether request text may be stored,
and when it was created and revoked. The file is JSON, written atomically
with mode 0600 under a lock, in a folder made 0700 (and refused when every
user may write to it); the server re-reads it when it changes, so a revoked
key stops working without a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import platformdirs

KEY_PREFIX = "mb-"


def default_keys_file() -> Path:
    return platformdirs.user_data_path("modelbench") / "keys.json"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class ApiKey:
    id: str
    name: str
    prefix: str  # the first characters, to recognise a key in a list
    hash: str
    admin: bool = False
    rpm: int | None = None  # requests per minute; None: the server's default
    tpm: int | None = None  # tokens per minute; None: the server's default
    store_text: bool = True
    share_cache: bool = False  # its cached answers may serve every key (docs/cache.md)
    created_at: str = ""
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyStore:
    def __init__(self, path: str | Path | None = None, reload_interval_s: float = 1.0) -> None:
        self.path = Path(path) if path else default_keys_file()
        self.reload_interval_s = reload_interval_s
        self._keys: list[ApiKey] = []
        self._mtime: float | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._load()

    # ---- reading ------------------------------------------------------

    def _load(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._keys, self._mtime = [], None
            return
        if stat.st_mtime_ns == self._mtime:
            return
        try:
            raw = json.loads(self.path.read_text() or "{}")
            keys = [ApiKey(**k) for k in raw.get("keys", [])]
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"keys file {self.path} is not valid: {exc}") from exc
        self._keys = keys
        self._mtime = stat.st_mtime_ns

    def refresh(self) -> None:
        """Re-read the file if it changed (at most every reload_interval_s)."""
        now = time.monotonic()
        if now - self._checked < self.reload_interval_s:
            return
        with self._lock:
            self._checked = now
            try:
                self._load()
            except ValueError:
                pass  # a half-written file from another tool: keep the keys we had

    def keys(self) -> list[ApiKey]:
        self.refresh()
        return list(self._keys)

    def is_active(self, key_id: str) -> bool:
        """Whether the key with this id exists and is not revoked."""
        return any(k.id == key_id and k.active for k in self.keys())

    def has_active_keys(self) -> bool:
        return any(k.active for k in self.keys())

    def verify(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None.

        The secret's hash is compared with every key's hash by
        ``hmac.compare_digest``, without stopping at a match, so the time
        taken says nothing about how much of a guess was right, nor which key
        matched. (A dict lookup by hash would also be safe here, the hash
        being of 256 random bits: timing could leak at most bits of a guess's
        SHA-256, which says nothing about any real key's secret; comparing
        them all costs about 0.1 us per key and needs no such argument.)"""
        self.refresh()
        digest = hash_key(secret)
        found: ApiKey | None = None
        for key in self._keys:
            if hmac.compare_digest(key.hash, digest):
                found = key
        return found if found is not None and found.active else None

    # ---- writing (the CLI) ------------------------------------------------

    def _check_folder(self) -> None:
        """The keys file's folder: made private when new; refused when anyone
        may write to it, since anyone could then swap in a keys file of their
        own (an admin key they know)."""
        folder = self.path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(folder.stat().st_mode)
        if mode & stat.S_IWOTH:
            raise ValueError(
                f"the keys file's folder {folder} is writable by every user (mode {mode:o}), "
                f"so anyone could replace the keys: run `chmod o-w {folder}` or choose another "
                "--keys-file"
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._check_folder()
        lock_fd = os.open(self.path.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(lock_fd, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._mtime = None
                self._load()
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self) -> None:
        data = json.dumps({"keys": [asdict(k) for k in self._keys]}, indent=2)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(data + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._mtime = None
        self._load()

    def create(
        self,
        name: str,
        admin: bool = False,
        rpm: int | None = None,
        tpm: int | None = None,
        store_text: bool = True,
        share_cache: bool = False,
    ) -> tuple[ApiKey, str]:
        """A new key; returns it and its secret (shown once, never stored)."""
        if not name.strip():
            raise ValueError("name must not be empty")
        for label, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._locked():
            key = ApiKey(
                id=f"key_{secrets.token_hex(4)}",
                name=name,
                prefix=secret[:7],
                hash=hash_key(secret),
                admin=admin,
                rpm=rpm,
                tpm=tpm,
                store_text=store_text,
                share_cache=share_cache,
                created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            self._keys.append(key)
            self._write()
        return key, secret

    def revoke(self, key_id: str) -> ApiKey:
        with self._locked():
            key = next((k for k in self._keys if k.id == key_id), None)
            if key is None:
                known = ", ".join(k.id for k in self._keys) or "none"
                raise ValueError(f"no key {key_id!r} in {self.path}; keys: {known}")
            if key.revoked_at is None:
                key.revoked_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
                self._write()
        return key
