"""The `archsweep` command, run as a user runs it: the installed entry point in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import archsweep


def run(*args, env=None, data_dir=None):
    return archsweep(*args, env={**(env or {}), **({"ARCHSWEEP_DATA_DIR": str(data_dir)} if data_dir else {})})


def test_help_lists_the_commands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("data", "space", "benchmark", "demo"):
        assert command in result.stdout


def test_core_packages_import_neither_torch_nor_ray():
    code = ("import sys, archsweep.cli, archsweep.spaces, archsweep.benchmarks; "
            "print(sorted(m for m in ('torch', 'ray', 'torch_geometric', 'deepspeed', 'transformers', 'wandb') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_cli_module_imports_only_click_up_front():
    code = "import sys, archsweep.cli; print('numpy' in sys.modules, 'rich' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"


def test_data_verify(data_dir):
    result = run("data", "verify", data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" ok ") == 7


def test_data_verify_flags_a_damaged_file(data_copy):
    path = data_copy / "nasbench201" / "nasbench201_cifar10.csv"
    path.write_bytes(path.read_bytes()[:-10])
    result = run("--data-dir", str(data_copy), "data", "verify")
    assert result.returncode == 1
    assert "corrupted or truncated" in result.stdout and "nasbench201_cifar10.csv" in result.stdout


def test_data_fetch_from_mirror(data_dir, tmp_path):
    result = run("--data-dir", str(tmp_path / "d"), "data", "fetch", "--from", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("copied from") == 7


def test_space_stats_nasbench201():
    result = run("space", "stats", "nasbench201")
    assert result.returncode == 0, result.stderr
    assert "15,625" in result.stdout and "6,466" in result.stdout


def test_space_stats_of_a_space_too_large_to_enumerate():
    result = run("space", "stats", "darts")
    assert result.returncode == 0, result.stderr
    assert "1,076,746,950,455,072,400" in result.stdout and "too many to enumerate" in result.stdout
    assert "train.dataset_size" in result.stdout and "100,000" in result.stdout
    assert "searches are refused" in result.stdout


def test_benchmark_stats(data_dir):
    result = run("benchmark", "stats", "nasbench201", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    for figure in ("91.61 (6111)", "94.37", "73.49 (9930)", "73.51", "47.31 (857)"):
        assert figure in result.stdout


def test_every_benchmark_by_default_and_the_demos_summaries(data_dir, monkeypatch):
    from rich.console import Console

    from archsweep.cli import print_summaries

    result = run("benchmark", "stats", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert "NAS-Bench-101" in result.stdout and "91.61 (6111)" in result.stdout

    monkeypatch.setenv("ARCHSWEEP_DATA_DIR", str(data_dir))
    console = Console(record=True, width=200)
    print_summaries(console)  # what `archsweep demo` prints before its sweep: darts has no table, and says so
    text = console.export_text()
    assert "423,624" in text and "6,466" in text and "1,076,746,950,455,072,400" in text and "91.61 (6111)" in text
    assert re.search(r"accuracy table +│ none", text)


@pytest.mark.parametrize("args, message", [
    (("space", "stats", "nasbench301"), "error: unknown search space 'nasbench301'; allowed: nasbench101, nasbench201"),
    (("benchmark", "stats", "nasbench301"), "error: unknown benchmark 'nasbench301'"),
])
def test_errors_are_one_clear_line(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_missing_data_is_a_clear_error(tmp_path):
    result = run("--data-dir", str(tmp_path / "nothing"), "benchmark", "stats", "nasbench201")
    assert result.returncode == 2
    assert "missing" in result.stderr and "archsweep data fetch" in result.stderr
