"""archsweep: distributed sweeps for discrete-latent neural-architecture generation."""

import subprocess
from pathlib import Path

__version__ = "0.1.0"


def commit() -> str | None:
    """The git commit of this checkout (an editable install), with `+dirty` for uncommitted changes; None where
    archsweep is not a git checkout. What tells two runs of the same version but different code apart."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def version() -> str:
    """`0.1.0 (commit 1a2b3c4d5e6f)`, or the bare version outside a git checkout."""
    found = commit()
    return f"{__version__} (commit {found})" if found else __version__
