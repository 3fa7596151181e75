"""Errors a user can act on. The CLI prints their message and exits non-zero; nothing else is shown."""

import difflib
from collections.abc import Iterable


class ArchsweepError(Exception):
    """Base class: the message names what is wrong and how to fix it."""


def one_line(error: str) -> str:
    """The line of an error (or a traceback, whose last line is the exception) that says what went wrong."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error")[:400]


def did_you_mean(key: str, known: Iterable[str], prefix: str = "") -> str:
    """The hint `; did you mean 'prefix.close'?` for the known name closest to a mistyped one, or "". A dotted key
    that matches nothing closely is matched by its last part (`codebook_size` -> `vqvae.codebook_size`)."""
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close and "." in "".join(known):
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in known if k.rsplit(".", 1)[-1] == leaf][:1]
    return f"; did you mean {prefix + close[0]!r}?" if close else ""


class UnknownNameError(ArchsweepError, KeyError):
    """A name (space, benchmark, dataset, split, ...) that no registry knows."""

    def __init__(self, kind: str, name: object, allowed, hint: str | None = None):
        self.kind, self.name, self.allowed = kind, name, tuple(allowed)
        message = f"unknown {kind} {name!r}; allowed: {', '.join(map(str, self.allowed))}"
        super().__init__(message + (f". {hint}" if hint else ""))

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class DataError(ArchsweepError):
    """A data file is missing, truncated or corrupted."""


class InvalidCellError(ArchsweepError, ValueError):
    """A cell that breaks its space's rules was used where a valid one is required."""


class NotInTableError(ArchsweepError, KeyError):
    """A valid cell that the loaded benchmark table has no entry for (a gap in the table, not in the space)."""

    def __str__(self) -> str:
        return self.args[0]
