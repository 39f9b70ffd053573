"""Where run records live: one SQLite file under the cache dir (FAIRING_RUNS moves it).

Each record is one row: a few columns to filter and sort on, and the whole record as JSON. A
recorder only ever rewrites its own row, so concurrent `fair train` processes never overwrite each
other; WAL lets readers read while a writer writes, and the busy timeout makes a writer wait for
another rather than fail."""
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

from .. import settings
from ..errors import ConfigError

BUSY_MS = 30_000
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        command TEXT NOT NULL,
        entry TEXT,
        status TEXT NOT NULL,
        parent TEXT,
        doc TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS runs_created ON runs(created)",
)


def default_path() -> Path:
    """FAIRING_RUNS (a file, or a directory to hold runs.db), else <cache>/runs/runs.db."""
    env = settings.runs_store()
    if env:
        p = Path(env).expanduser()
        return p / "runs.db" if p.is_dir() or env.endswith("/") else p
    from ..oci.cache import cache_root  # the one $FAIRING_CACHE root

    return cache_root() / "runs" / "runs.db"


def busy(e: sqlite3.Error) -> bool:
    """Another connection holds the database (SQLITE_BUSY or SQLITE_LOCKED, extended codes
    included): worth a moment's wait, unlike a read-only or corrupt file."""
    code = getattr(e, "sqlite_errorcode", None)  # Python 3.11+, with the SQLITE_* constants
    if code is not None:  # an extended code (SQLITE_BUSY_SNAPSHOT) keeps the primary one in its low byte
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    # Python 3.10 has no codes on the exception, only sqlite's text for them ("database is
    # locked", "database table is locked").
    return isinstance(e, sqlite3.OperationalError) and "is locked" in str(e)


class Store:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else default_path()
        self._conn: sqlite3.Connection | None = None

    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Autocommit (isolation_level=None): every write below is one statement, so one
                # atomic transaction, and no transaction is left open between them.
                c = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None)
            except (OSError, sqlite3.Error) as e:
                raise ConfigError(f"cannot open the run store {self.path}: {e}",
                                  hint="set FAIRING_RUNS to a writable file path") from None
            c.execute(f"PRAGMA busy_timeout={BUSY_MS}")
            # Switching to WAL needs a moment of exclusive access; a second process opening the
            # file for the first time at the same instant gets SQLITE_BUSY without the busy handler.
            for attempt in range(100):
                try:
                    c.execute("PRAGMA journal_mode=WAL")
                    c.execute("PRAGMA synchronous=NORMAL")
                    for stmt in SCHEMA:
                        c.execute(stmt)
                    break
                except sqlite3.OperationalError as e:
                    if not busy(e) or attempt == 99:
                        raise ConfigError(f"cannot use the run store {self.path}: {e}",
                                          hint="set FAIRING_RUNS to a writable file path") from None
                    time.sleep(0.05)
            self._conn = c
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def put(self, doc: dict) -> None:
        """Insert or replace the record `doc` (its own row only)."""
        self.conn().execute(
            "INSERT INTO runs (id, created, command, entry, status, parent, doc) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET status=excluded.status, entry=excluded.entry, doc=excluded.doc",
            (doc["id"], doc["created"], doc["command"], doc.get("entry"), doc.get("status") or "Unknown",
             doc.get("parent"), json.dumps(doc, default=str, sort_keys=True)))

    def get(self, run_id: str) -> dict:
        """The record with this id, or the one whose id starts with it (like a short git hash)."""
        rows = self.conn().execute("SELECT doc FROM runs WHERE id = ? OR id LIKE ? ESCAPE '\\' ORDER BY id LIMIT 3",
                                   (run_id, _like_prefix(run_id))).fetchall()
        exact = [r for r in rows if json.loads(r[0])["id"] == run_id]
        if exact:
            return json.loads(exact[0][0])
        if len(rows) == 1:
            return json.loads(rows[0][0])
        if not rows:
            raise ConfigError(f"no run {run_id!r} in {self.path}", hint="`fair runs` lists the recorded runs")
        raise ConfigError(f"run id {run_id!r} is ambiguous", hint="give more characters of the id (`fair runs`)")

    def list(self, *, last: int | None = None, status: str | None = None, command: str | None = None,
             parent: str | None = None) -> list[dict]:
        """Newest first."""
        where, args = [], []
        if status:
            where.append("lower(status) = lower(?)")
            args.append(status)
        if command:
            where.append("command = ?")
            args.append(command)
        if parent:
            where.append("parent = ?")
            args.append(parent)
        sql = "SELECT doc FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created DESC, rowid DESC"
        if last:
            sql += f" LIMIT {int(last)}"
        return [json.loads(r[0]) for r in self.conn().execute(sql, args)]

    def __iter__(self) -> Iterator[dict]:
        return iter(self.list())


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def open_store(path: Any = None) -> Store:
    return Store(path)
