"""Shared fixtures. Tests read the real benchmark tables from the data directory ($ARCHSWEEP_DATA_DIR);
without them a local run skips those tests with the fix, and CI (CI=true) fails instead."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest

from archsweep.benchmarks import files
from archsweep.settings import absolute
from archsweep.settings import data_dir as resolve_data_dir

# `ARCHSWEEP_DATA_DIR=../shared/data make test` (the README's form) names the data from where pytest started; the
# tests run commands from other directories too, so the path is made absolute here, once, as the CLI does.
if os.environ.get("ARCHSWEEP_DATA_DIR"):
    os.environ["ARCHSWEEP_DATA_DIR"] = str(absolute(os.environ["ARCHSWEEP_DATA_DIR"]))


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


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs, shared by the tests of one module; yields the environment its workers get."""
    import ray

    from archsweep.runtime import init_local_ray, worker_env

    init_local_ray(num_cpus=2)
    yield worker_env()
    ray.shutdown()


@pytest.fixture
def wandb_offline(monkeypatch):
    """W&B offline and with no API key: it must work without a network or a login, and never prompt."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")


@pytest.fixture
def wandb_secret_key(monkeypatch) -> str:
    """W&B offline with a made-up API key set, which nothing may write anywhere; returns the key."""
    key = secrets.token_hex(20)
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("WANDB_MODE", "offline")
    return key


@pytest.fixture(scope="session")
def nb101_cells():
    """The NAS-Bench-101 enumeration, built once per session (about 25 s on 2 cores)."""
    from archsweep.spaces import get_space

    return get_space("nasbench101").enumerate()


# --- measured figures of the reliability tests, written into docs/RELIABILITY.md -------------------------------
MEASURED_DOC = Path(__file__).resolve().parents[1] / "docs" / "RELIABILITY.md"
MEASURED_BEGIN, MEASURED_END = "<!-- reliability:measured -->", "<!-- /reliability:measured -->"
MEASURED: dict[str, list[str]] = {}


@pytest.fixture
def measured(request):
    """`measured(fault, units, finished, lost, notes)`: a row of what this test measured, written into
    docs/RELIABILITY.md (with the machine, date and command) when the run has ARCHSWEEP_WRITE_DOCS=1."""
    def record(*cells):
        MEASURED[request.node.name] = [f"`{request.node.name}`", *map(str, cells)]
    return record


def pytest_sessionfinish(session, exitstatus):
    if not MEASURED or not os.environ.get("ARCHSWEEP_WRITE_DOCS") or exitstatus != 0:
        return
    import re
    import shlex
    import sys

    from bench._report import header

    text = MEASURED_DOC.read_text()
    before, rest = text.split(MEASURED_BEGIN, 1)
    block, after = rest.split(MEASURED_END, 1)
    rows = {m.group(1): line for line in block.splitlines() if (m := re.match(r"\| `(\w+)`", line))}
    rows |= {name: "| " + " | ".join(cells) + " |" for name, cells in MEASURED.items()}
    command = "ARCHSWEEP_WRITE_DOCS=1 python -m pytest " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    machine_and_date = [line for line in header().splitlines() if not line.startswith("- command")]
    lines = [*machine_and_date, f"- command: `{command}`", "",
             "| Test | Fault | Trials (queries) | Finished | Lost | Notes |", "|---|---|---|---|---|---|",
             *rows.values()]
    MEASURED_DOC.write_text(f"{before}{MEASURED_BEGIN}\n" + "\n".join(lines) + f"\n{MEASURED_END}{after}")


@pytest.fixture(scope="session")
def pretrained_checkpoint(tmp_path_factory):
    """`pretrained_checkpoint("gpt2" | "llama" | "t5")`: a small checkpoint saved as a hub model is (weights and a
    BPE tokenizer, pretrained briefly on number strings), made once per session: `pretrained:` with no hub."""
    from archsweep.lm.checkpoints import save_small_checkpoint

    made = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = save_small_checkpoint(tmp_path_factory.mktemp(f"pretrained-{family}"), family)
        return made[family]

    return get
