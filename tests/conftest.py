"""Shared fixtures. Tests read the real benchmark tables from the data directory ($ARCHSWEEP_DATA_DIR);
without them a local run skips those tests with the fix, and CI (CI=true) fails instead."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from archsweep.benchmarks import files
from archsweep.settings import data_dir as resolve_data_dir


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Enumerations and parsed tables are built fresh for the test session, never read from a user's cache."""
    old = os.environ.get("ARCHSWEEP_CACHE_DIR")
    os.environ["ARCHSWEEP_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("ARCHSWEEP_CACHE_DIR", None)
    else:
        os.environ["ARCHSWEEP_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = resolve_data_dir()
    problems = [p for f in files.FILES if not f.optional and (p := files.check(root, f))]
    if problems:
        message = f"benchmark data not usable in {root}: {problems[0]}; run `archsweep data fetch`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture
def data_copy(data_dir, tmp_path) -> Path:
    """A writable copy of the data directory, for tests that damage files."""
    copy = tmp_path / "data"
    for f in files.FILES:
        if not f.optional:
            (copy / f.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data_dir / f.path, copy / f.path)
    return copy


@pytest.fixture(scope="session")
def nb101_cells():
    """The NAS-Bench-101 enumeration, built once per session (about 25 s on 2 cores)."""
    from archsweep.spaces import get_space

    return get_space("nasbench101").enumerate()
