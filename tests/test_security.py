"""Security properties that hold by construction, checked over the source: registries only (no config value is
ever imported, evaluated or executed), `trust_remote_code` never on, checkpoints read as data only. The
behaviour behind them is tested elsewhere: checkpoints with pickled code and config interpolations are refused
(tests/test_bad_input.py), the W&B key and the Ray token appear in no file or log (tests/test_sweep.py,
tests/test_submit.py), token auth on `archsweep submit` (tests/test_submit.py)."""

from __future__ import annotations

import re
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "archsweep"


def _code() -> dict[Path, str]:
    return {p: p.read_text() for p in SOURCE.rglob("*.py")}


def test_no_dynamic_imports_eval_or_exec():
    pattern = re.compile(r"(?<![.\w])(eval|exec|compile|__import__)\(|import_module\(|pickle\.loads?\(|"
                         r"yaml\.load\(|yaml\.unsafe_load|shell=True")
    found = [f"{p.relative_to(SOURCE)}: {m.group(0)}" for p, text in _code().items() for m in pattern.finditer(text)]
    assert not found, found


def test_trust_remote_code_is_never_enabled():
    uses = [(p, m.group(0)) for p, text in _code().items() for m in re.finditer(r"trust_remote_code\s*=\s*\w+", text)]
    assert uses and all(use.endswith("False") for _, use in uses), uses


def test_torch_files_are_read_as_data_only():
    loads = [(p.relative_to(SOURCE), line.strip()) for p, text in _code().items() for line in text.splitlines()
             if "torch.load(" in line]
    assert loads == [(Path("checkpoint.py"), "return torch.load(path, map_location=map_location, weights_only=True)")]


def test_the_wandb_key_is_never_passed_on():
    from archsweep.tracking.wandb import PASSED_ON

    assert "WANDB_API_KEY" not in PASSED_ON
