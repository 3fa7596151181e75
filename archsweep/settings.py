"""Where archsweep reads data and keeps caches: one place, overridable by environment variable or CLI flag."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "ARCHSWEEP_DATA_DIR"
CACHE_DIR_ENV = "ARCHSWEEP_CACHE_DIR"


def absolute(path: str | os.PathLike) -> Path:
    """`path` as the user meant it: `~` expanded, a relative path taken from this process's working directory.
    Resolved once, where the user gave it; every process Ray starts sees only the absolute result."""
    return Path(os.path.abspath(Path(path).expanduser()))


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """The benchmark data directory: `override`, else $ARCHSWEEP_DATA_DIR, else the per-user data dir."""
    if override:
        return absolute(override)
    if os.environ.get(DATA_DIR_ENV):
        return absolute(os.environ[DATA_DIR_ENV])
    import platformdirs

    return Path(platformdirs.user_data_dir("archsweep")) / "data"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Derived, rebuildable files (enumerations, parsed tables): `override`, $ARCHSWEEP_CACHE_DIR, or the
    per-user cache dir."""
    if override:
        return absolute(override)
    if os.environ.get(CACHE_DIR_ENV):
        return absolute(os.environ[CACHE_DIR_ENV])
    import platformdirs

    return Path(platformdirs.user_cache_dir("archsweep"))
