"""Measurement scripts, run from the repository root as modules (`python -m bench.lm --write`); each writes its
measured block into docs/BENCHMARKS.md (or docs/REPORT.md) with the machine, date and command."""
