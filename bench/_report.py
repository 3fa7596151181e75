"""Shared by the bench scripts: the machine/date/command header, and writing a result block into
docs/BENCHMARKS.md between `<!-- bench:NAME -->` markers, so that no figure there is typed by hand."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "BENCHMARKS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def command() -> str:
    """How this process was started, as typed from the repository root (`python -m bench.lm --write`)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    script = ["-m", spec.name] if spec is not None and spec.name else [os.path.relpath(sys.argv[0], ROOT)]
    return "python " + " ".join(shlex.quote(a) for a in [*script, *sys.argv[1:]])


def header() -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"- machine: {machine()}\n- date: {now}\n- command: `{command()}`\n" + versions()


def footer(head: str) -> str:
    """One line for a figure's bottom edge: the command, machine and date of `head` (what `header()` returned)."""
    lines = head.splitlines()
    return f"{lines[2][2:].replace('`', '')} | {machine()} | {lines[1][2:]}"


def versions() -> str:
    """The project's commit (marked when the working tree differs from it outside docs/, which the bench scripts
    write themselves) and the stack's package versions."""
    import importlib.metadata as md
    import subprocess

    def version(name: str) -> str:
        try:
            return md.version(name.replace("_", "-"))
        except md.PackageNotFoundError:  # e.g. W&B on a GPU machine that runs the stages only
            return "not installed"

    names = ("torch", "ray", "deepspeed", "transformers", "torch_geometric", "wandb")
    found = ", ".join(f"{n} {version(n)}" for n in names)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs"],
                               cwd=ROOT, capture_output=True, text=True, check=False)
        rev = (commit.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")) or "unknown"
    except OSError:  # no git here
        rev = "unknown"
    return f"- versions: archsweep {rev}; {found}\n"


def write_block(name: str, body: str) -> None:
    """Replace (or append) the block `name` in docs/BENCHMARKS.md."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
