"""The benchmark data files: where they come from, their checksums, and fetch/verify into the data directory.

Every loader goes through `require`, which checks the sha256 on every load (about 30 ms for all pinned
files), so a truncated or corrupted table is reported, never silently read.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from archsweep.benchmarks.tfrecord import scan
from archsweep.errors import DataError
from archsweep.settings import DATA_DIR_ENV
from archsweep.settings import data_dir as resolve_data_dir


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the data directory
    url: str
    sha256: str | None  # None: too large to pin here; its records carry their own CRCs
    optional: bool = False


_NB201 = "https://raw.githubusercontent.com/Zhenhan-Huang/NASGraph-Public/1f8fd621c60a48728fcc890818b6b94eee62e4dc/data"
_NB101 = "https://raw.githubusercontent.com/tiga1231/nasbench-vis/7aec0e76fbcd963371799af25f78223069897b58/static/data"

FILES: tuple[DataFile, ...] = (
    DataFile("nasbench201/nats_bench_test_acc.csv",
             "https://raw.githubusercontent.com/v-tao/nats-bench-landscape/b307ae5fe6e8d7043cd4fe7d1c3532288271adb7/nats_bench.csv",
             "cb5d777ec3368be83c8f9b3aa4d520696051cb0eb8d94b8f85b519f9ea4afa3e"),
    DataFile("nasbench201/nasbench201_cifar10.csv", f"{_NB201}/nasbench201_cifar10.csv",
             "c82e70b5ffb0dba0f09d88ecc8df5a6d3ce8da8a99ad223285104f4537314033"),
    DataFile("nasbench201/nasbench201_cifar100.csv", f"{_NB201}/nasbench201_cifar100.csv",
             "87a42005d7005fdb5e4a938ed83dd306d907523f23e70af907dfd276dd5fe35d"),
    DataFile("nasbench201/nasbench201_ImageNet16-120.csv", f"{_NB201}/nasbench201_ImageNet16-120.csv",
             "f5225573584977b283f473b0ded7fe51ae599a67063b3bd02b18de36b29fcd6b"),
    DataFile("nasbench101/nb101_val_acc_20k.json", f"{_NB101}/data-20k.json",
             "7eaca9658aebf16443d3df5b38e61fe75d85787abc485cfc9a2088328443c3e9"),
    DataFile("nasbench101/nb101_val_acc_10k.json", f"{_NB101}/data-10k.json",
             "2c4c46e44c8ed252f7118d7a73304137ea0a6fa26377e6795baf985369ff3c09"),
    DataFile("nasbench101/nb101_specs_500.json",
             "https://raw.githubusercontent.com/automl/NASLib/ab1509d7bce2b9e98747384da7a72bd4c9deec31/naslib/data/zc_nasbench101.json",
             "c34840bc9af68b6ebaa7f052e42c1749a9a737d7243078be2a5548052bc5a0c2"),
    DataFile("nasbench101/nasbench_only108.tfrecord",
             "https://storage.googleapis.com/nasbench/nasbench_only108.tfrecord", None, optional=True),
)
BY_PATH = {f.path: f for f in FILES}
FULL_NB101 = BY_PATH["nasbench101/nasbench_only108.tfrecord"]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _missing_hint(root: Path) -> str:
    return (f"Run `archsweep data fetch` to download it into {root}, `archsweep data fetch --from MIRROR_DIR` "
            f"to copy it from a local copy, or point ${DATA_DIR_ENV} (or --data-dir) at a directory that has it.")


def check(root: Path, f: DataFile) -> str | None:
    """What is wrong with one file in the data directory `root`, or None when it is present and intact."""
    path = root / f.path
    if not path.is_file():
        return f"missing: {path}"
    if f.sha256 is not None:
        digest = sha256_of(path)
        if digest != f.sha256:
            return (f"corrupted or truncated: {path} ({path.stat().st_size} bytes) has sha256 {digest}, "
                    f"expected {f.sha256}")
    return None


def require(relpath: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The verified path of a data file, or a DataError that names the file and the fix."""
    root = resolve_data_dir(data_dir)
    problem = check(root, BY_PATH[relpath])
    if problem is None:
        return root / relpath
    if problem.startswith("missing"):
        raise DataError(f"benchmark data file {problem}. {_missing_hint(root)}")
    raise DataError(f"benchmark data file {problem}. Delete it and run `archsweep data fetch` again.")


def _transient(exc: Exception) -> bool:
    """A failure that may pass: the network, a timeout, a server's 5xx or 429; not a 404 or a refused request."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    return True


def _download(url: str, dest: Path, timeout: float, retries: int = 0, pause_s: float = 2.0) -> None:
    """Download `url` into `dest`; a transient failure is tried again `retries` times, `pause_s`, twice that, four
    times ... apart (a cluster's nodes fetch at once when it starts, and one flaky connection must not leave a node
    without data)."""
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
            return
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            if attempt < retries and _transient(exc):
                time.sleep(pause_s * 2**attempt)
                continue
            reason = getattr(exc, "reason", exc)
            tries = f" (after {attempt + 1} attempts)" if attempt else ""
            raise DataError(
                f"cannot download {url}: {reason}{tries}. Without network access, copy the files from a local copy "
                f"with `archsweep data fetch --from MIRROR_DIR`, or set ${DATA_DIR_ENV} to a directory that holds "
                "them.") from None


def fetch(
    data_dir: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    include_optional: bool = False,
    timeout: float = 30.0,
    on_file: Callable[[DataFile, str], None] | None = None,
    files: Sequence[DataFile] = FILES,
    retries: int = 0,
    pause_s: float = 2.0,
) -> dict[str, str]:
    """Make the data directory hold every (required) file, intact. Returns {path: what was done}.

    Files already present with the right sha256 are left alone, so a read-only complete mirror works as a
    data directory. Others are copied from `mirror` or downloaded, written to a temporary file, checked, and
    only then moved into place: a failed or corrupted transfer never replaces anything.
    """
    root = resolve_data_dir(data_dir)
    done: dict[str, str] = {}
    for f in files:
        if f.optional and not include_optional:
            continue
        if check(root, f) is None:
            done[f.path] = "ok"
        else:
            dest = root / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=dest.name, suffix=".part", dir=dest.parent)
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                if mirror is not None:
                    source = Path(mirror).expanduser() / f.path
                    if not source.is_file():
                        raise DataError(f"the mirror has no {f.path} (looked for {source})")
                    shutil.copyfile(source, tmp)
                    action = f"copied from {source}"
                else:
                    _download(f.url, tmp, timeout, retries, pause_s)
                    action = f"downloaded from {f.url}"
                if f.sha256 is not None and (digest := sha256_of(tmp)) != f.sha256:
                    raise DataError(f"{f.path} from {mirror or f.url} has sha256 {digest}, expected {f.sha256}; "
                                    "nothing was replaced")
                os.chmod(tmp, 0o644)
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            done[f.path] = action
        if on_file is not None:
            on_file(f, done[f.path])
    return done


def verify(data_dir: str | os.PathLike | None = None) -> dict[str, str | None]:
    """{path: problem or None} for every known file; optional files that are absent are not problems."""
    root = resolve_data_dir(data_dir)
    report: dict[str, str | None] = {}
    for f in FILES:
        problem = check(root, f)
        if f.optional and problem is not None and problem.startswith("missing"):
            continue
        if problem is None and f.sha256 is None:

            try:
                scan(root / f.path)
            except DataError as exc:
                problem = str(exc)
        report[f.path] = problem
    return report
