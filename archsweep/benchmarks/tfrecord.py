"""Read NAS-Bench-101's TFRecord files without TensorFlow.

A TFRecord is a sequence of records: uint64 length, masked CRC32C of those 8 bytes, the data, masked CRC32C of
the data (all little-endian). In NAS-Bench-101 each record's data is a UTF-8 JSON list
`[module_hash, epochs, raw_adjacency, raw_operations, raw_metrics]`: the adjacency as a string of 0/1
(row-major), the ops comma-separated, and the metrics a base64 `ModelMetrics` protobuf:

    message ModelMetrics   { repeated EvaluationData evaluation_data = 1; optional int32 trainable_parameters = 2;
                             optional double total_time = 3; }
    message EvaluationData { optional double current_epoch = 1; optional double training_time = 2;
                             optional double train_accuracy = 3; optional double validation_accuracy = 4;
                             optional double test_accuracy = 5; optional string checkpoint_path = 6; }

Every CRC is checked: a truncated or corrupted file raises DataError naming the byte offset.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import google_crc32c
import numpy as np

from archsweep.errors import DataError

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def records(path: str | Path) -> Iterator[bytes]:
    """The data of every record, in order, each checked against both of its CRCs."""
    offset = 0
    with open(path, "rb") as f:
        while header := f.read(12):
            if len(header) < 12:
                raise DataError(f"{path}: truncated record header at byte {offset}")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != length_crc:
                raise DataError(f"{path}: corrupted record length at byte {offset} (CRC mismatch)")
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise DataError(f"{path}: truncated record at byte {offset} ({len(data)} of {length} bytes)")
            if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise DataError(f"{path}: corrupted record data at byte {offset} (CRC mismatch)")
            yield data
            offset += 16 + length


def scan(path: str | Path) -> int:
    """Check every record's framing and CRCs; return the record count."""
    return sum(1 for _ in records(path))


# --- protobuf wire format (only what ModelMetrics uses) -----------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) for each field of a message; unknown fields are skipped by callers."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("protobuf message ends inside a field")
        yield number, wire, value


@dataclass
class EvaluationData:
    current_epoch: float = 0.0
    training_time: float = 0.0
    train_accuracy: float = 0.0
    validation_accuracy: float = 0.0
    test_accuracy: float = 0.0


@dataclass
class ModelMetrics:
    evaluation_data: list[EvaluationData] = field(default_factory=list)
    trainable_parameters: int = 0
    total_time: float = 0.0


_EVAL_FIELDS = {1: "current_epoch", 2: "training_time", 3: "train_accuracy", 4: "validation_accuracy",
                5: "test_accuracy"}


def parse_model_metrics(buf: bytes) -> ModelMetrics:
    metrics = ModelMetrics()
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            data = EvaluationData()
            for n2, w2, v2 in _fields(value):
                if n2 in _EVAL_FIELDS and w2 == 1:
                    setattr(data, _EVAL_FIELDS[n2], struct.unpack("<d", v2)[0])
            metrics.evaluation_data.append(data)
        elif number == 2 and wire == 0:
            metrics.trainable_parameters = value
        elif number == 3 and wire == 1:
            metrics.total_time = struct.unpack("<d", value)[0]
    return metrics


@dataclass
class Nb101Record:
    module_hash: str
    epochs: int
    adjacency: np.ndarray
    ops: list[str]
    metrics: ModelMetrics


def parse_record(data: bytes) -> Nb101Record:
    module_hash, epochs, raw_adjacency, raw_operations, raw_metrics = json.loads(data.decode("utf-8"))
    dim = int(round(len(raw_adjacency) ** 0.5))
    if dim * dim != len(raw_adjacency) or set(raw_adjacency) - {"0", "1"}:
        raise ValueError(f"adjacency {raw_adjacency!r} is not a square 0/1 matrix")
    adjacency = np.frombuffer(raw_adjacency.encode(), dtype=np.uint8).reshape(dim, dim) - ord("0")
    metrics = parse_model_metrics(base64.b64decode(raw_metrics, validate=True))
    return Nb101Record(str(module_hash), int(epochs), adjacency, raw_operations.split(","), metrics)


def read_nasbench101(path: str | Path) -> Iterator[Nb101Record]:
    """Every NAS-Bench-101 training run in a TFRecord file (one record per run: 3 repeats per cell and budget)."""
    for i, data in enumerate(records(path)):
        try:
            yield parse_record(data)
        except (ValueError, TypeError, UnicodeDecodeError, binascii.Error, IndexError) as exc:
            raise DataError(f"{path}: record {i} is not a NAS-Bench-101 row ({exc})") from None
