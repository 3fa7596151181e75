"""An offline W&B run's files: its transaction log (`run-<id>.wandb`), read and rewritten, its artifact files
found again after the run's directory moved, and the staging copies W&B makes kept inside the run's directory.

W&B records an artifact file added with `policy="immutable"` by its absolute path on the machine that logged it,
and `wandb sync` uploads it from there. A sweep directory copied off a cluster (`ray rsync-down`) or moved keeps
its layout but not that path: `relocate` finds each file under the directory's new place by the end of its old
path, checked against the digest W&B recorded, and `rewrite` points the log at it, so the upload finds it.

The log is LevelDB-style: a 7-byte file header, then 32 KiB blocks of records `[checksum, length, type]` + data,
a record split across blocks as first/middle/last fragments; the checksum is zlib's CRC-32 of the data, seeded
with the CRC-32 of the type byte."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    """The records of a transaction log; a record cut off by a killed writer ends it (what precedes is kept)."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # block trailer padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        if len(chunk) < length:
            return
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (FULL, LAST):
            yield pending
            pending = b""


def encode(header: bytes, items: list[bytes]) -> bytes:
    """A transaction log of `items` (serialized records) after the 7-byte file `header`, framed as W&B frames it."""
    out = bytearray(header)
    for data in items:
        first = True
        while True:
            room = BLOCK - len(out) % BLOCK
            if room < HEADER:
                out += bytes(room)
                continue
            chunk, data = data[:room - HEADER], data[room - HEADER:]
            kind = (FULL if not data else FIRST) if first else (LAST if not data else MIDDLE)
            out += struct.pack("<IHB", zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF, len(chunk), kind)
            out += chunk
            first = False
            if not data:
                break
    return bytes(out)


@dataclass(frozen=True)
class ArtifactFile:
    artifact: str
    path: str  # its name inside the artifact
    recorded: str  # the absolute path the log names
    digest: str  # base64 md5, as W&B records it
    found: Path | None  # where it is now: `recorded` itself, or found again under the run's new place

    @property
    def moved(self) -> bool:
        return self.found is not None and str(self.found) != self.recorded


def md5_b64(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()


def relocate(recorded: str, digest: str, root: Path) -> Path | None:
    """`recorded` if it holds the file; else the file under `root` whose path ends as `recorded` does, with
    `recorded`'s digest (the longest such ending first); else None."""
    here = Path(recorded)
    if here.is_file() and md5_b64(here) == digest:
        return here
    parts = here.parts[1:]
    for start in range(len(parts)):
        candidate = root.joinpath(*parts[start:])
        if candidate.is_file() and md5_b64(candidate) == digest:
            return candidate
    return None


def artifact_files(log: Path, root: Path) -> list[ArtifactFile]:
    """Every file of the artifacts `log` records, and where it is now (looked for under `root`)."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for raw in records(log):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "artifact":
            continue
        for entry in record.artifact.manifest.contents:
            if entry.local_path:  # a reference entry (ref) has no file to upload
                out.append(ArtifactFile(record.artifact.name, entry.path, entry.local_path, entry.digest,
                                        relocate(entry.local_path, entry.digest, root)))
    return out


def rewrite(log: Path, files: list[ArtifactFile]) -> int:
    """Point `log`'s artifact entries at where `files` found them (replacing the log atomically); returns how many
    entries changed. Files not found are left as recorded."""
    from wandb.proto import wandb_internal_pb2 as pb

    moved = {(f.artifact, f.path): str(f.found) for f in files if f.moved}
    if not moved:
        return 0
    items, changed = [], 0
    for raw in records(log):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "artifact":
            for entry in record.artifact.manifest.contents:
                if (new := moved.get((record.artifact.name, entry.path))) and entry.local_path != new:
                    entry.local_path = new
                    changed += 1
            raw = record.SerializeToString()
        items.append(raw)
    temporary = log.with_name(log.name + ".rewrite")
    temporary.write_bytes(encode(log.read_bytes()[:HEADER], items))
    os.replace(temporary, log)
    return changed


@contextlib.contextmanager
def staged_in(run):
    """W&B copies a logged table into its data directory (~/.local/share/wandb by default) and uploads it from
    there at sync: keep that copy inside the run's own directory, so that it goes wherever the run's directory is
    copied (`ray rsync-down`) and `archsweep sync` finds it there."""
    old = os.environ.get("WANDB_DATA_DIR")
    os.environ["WANDB_DATA_DIR"] = str(Path(run.dir).parent)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("WANDB_DATA_DIR", None)
        else:
            os.environ["WANDB_DATA_DIR"] = old
