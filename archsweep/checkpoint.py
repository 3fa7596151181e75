"""Reading checkpoints safely and with a clear error.

Every torch file archsweep reads is loaded with `weights_only=True`: tensors, numbers, strings and containers,
never pickled code, so a checkpoint (or a prior a config points at) cannot run anything when it is read. A
damaged or cut-off file is an error that names it and says how to get a good one back.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from archsweep.errors import ArchsweepError


class CheckpointError(ArchsweepError):
    pass


def _numpy_scalars() -> list:
    """Numpy scalars and dtypes (plain data; checkpoints written before the learning-rate schedule returned floats
    hold some)."""
    import numpy as np

    return [np._core.multiarray.scalar, np.dtype, *{type(np.dtype(t)) for t in ("f8", "f4", "i8", "i4")}]


_NUMPY_SCALARS = _numpy_scalars()


def unreadable(path: str | Path, exc: BaseException, fix: str) -> CheckpointError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:160]
    return CheckpointError(f"cannot read the checkpoint {path} ({type(exc).__name__}: {reason}); it is damaged or "
                           f"incomplete. {fix}")


def torch_load(path: str | Path, fix: str, map_location="cpu"):
    """`torch.load` of a file archsweep wrote, data only; a missing or damaged file is a CheckpointError."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}. {fix}")
    try:
        with torch.serialization.safe_globals(_NUMPY_SCALARS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"refusing to load {path}: it holds pickled objects other than tensors and plain "
                              "data, which could run code when loaded (archsweep never writes any). Use a "
                              f"checkpoint archsweep wrote. {fix}") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError ... for a damaged file
        raise unreadable(path, exc, fix) from None
