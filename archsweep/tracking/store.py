"""archsweep's own result store: one row per trial (config, metrics, status, artifact paths) in a SQLite file in
the sweep directory. It is the source of truth the report reads; W&B mirrors it.

SQLite because a sweep's driver and a later `archsweep report` or `resume` may read it while it is written, and
each upsert is atomic: a crash never leaves a half-written row.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# STOPPED: ended by the scheduler (ASHA) or the time budget before it finished; its metrics are its last report
STATUSES = ("PENDING", "RUNNING", "TERMINATED", "STOPPED", "ERROR")
FILE = "results.db"


@dataclass
class Row:
    trial_id: str
    status: str
    config: dict
    metrics: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    error: str | None = None
    updated: float = 0.0


class ResultStore:
    def __init__(self, sweep_dir: str | Path):
        self.path = Path(sweep_dir) / FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS trials (trial_id TEXT PRIMARY KEY, status TEXT NOT NULL, "
                       "config TEXT NOT NULL, metrics TEXT NOT NULL, paths TEXT NOT NULL, error TEXT, "
                       "updated REAL NOT NULL)")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    def put(self, row: Row) -> None:
        if row.status not in STATUSES:
            raise ValueError(f"status {row.status!r}; allowed: {', '.join(STATUSES)}")
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO trials VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (row.trial_id, row.status, json.dumps(row.config), json.dumps(row.metrics),
                        json.dumps(row.paths), row.error, time.time()))

    def rows(self) -> list[Row]:
        with self._connect() as db:
            found = db.execute("SELECT trial_id, status, config, metrics, paths, error, updated FROM trials "
                               "ORDER BY trial_id").fetchall()
        return [Row(t, s, json.loads(c), json.loads(m), json.loads(p), e, u) for t, s, c, m, p, e, u in found]

    def delete(self, trial_id: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM trials WHERE trial_id = ?", (trial_id,))

    def get(self, trial_id: str) -> Row | None:
        return next((r for r in self.rows() if r.trial_id == trial_id), None)
