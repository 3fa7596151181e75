"""The TF-free NAS-Bench-101 TFRecord reader, on a file written here in the exact format: TFRecord framing with
masked CRC32C, the JSON row, and metrics encoded by the protobuf library from the benchmark's message schema."""

from __future__ import annotations

import base64
import json
import struct

import google_crc32c
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from archsweep.benchmarks import load_benchmark
from archsweep.benchmarks.tfrecord import masked_crc32c, read_nasbench101, scan
from archsweep.errors import DataError
from archsweep.spaces import Cell, get_space

F = descriptor_pb2.FieldDescriptorProto


def model_metrics_class():
    """ModelMetrics built by protobuf from the schema in nasbench/lib/model_metrics.proto."""
    proto = descriptor_pb2.FileDescriptorProto(name="archsweep_test_model_metrics.proto", package="nasbench",
                                               syntax="proto2")
    evaluation = proto.message_type.add(name="EvaluationData")
    for number, name in enumerate(
            ["current_epoch", "training_time", "train_accuracy", "validation_accuracy", "test_accuracy"], start=1):
        evaluation.field.add(name=name, number=number, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    evaluation.field.add(name="checkpoint_path", number=6, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    metrics = proto.message_type.add(name="ModelMetrics")
    metrics.field.add(name="evaluation_data", number=1, type=F.TYPE_MESSAGE, type_name=".nasbench.EvaluationData",
                      label=F.LABEL_REPEATED)
    metrics.field.add(name="trainable_parameters", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    metrics.field.add(name="total_time", number=3, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("nasbench.ModelMetrics"))


def mask(crc: int) -> int:
    rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
    return (rotated + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", mask(google_crc32c.value(length))) + data
            + struct.pack("<I", mask(google_crc32c.value(data))))


CELLS = [
    Cell([[0, 1], [0, 0]], ["input", "output"]),
    Cell([[0, 1, 1], [0, 0, 1], [0, 0, 0]], ["input", "maxpool3x3", "output"]),
]


def runs():
    """(cell, repeat, final train/val/test accuracy, training time) of the records written below."""
    for c, cell in enumerate(CELLS):
        for repeat in range(3):
            yield cell, repeat, (0.9 + 0.01 * repeat, 0.8 + 0.02 * repeat + 0.05 * c, 0.79 + 0.01 * repeat), 100.0 + repeat


def write_nb101_tfrecord(path):
    space, ModelMetrics = get_space("nasbench101"), model_metrics_class()
    with open(path, "wb") as out:
        for cell, repeat, (train, val, test), seconds in runs():
            metrics = ModelMetrics(trainable_parameters=1000 + repeat, total_time=seconds + 5)
            for epoch, scale in ((0.0, 0.0), (54.0, 0.5), (108.0, 1.0)):
                metrics.evaluation_data.add(current_epoch=epoch, training_time=seconds * scale,
                                            train_accuracy=train * scale, validation_accuracy=val * scale,
                                            test_accuracy=test * scale, checkpoint_path=f"/ckpt/{repeat}")
            row = [space.canonical_hash(cell), 108, "".join(map(str, cell.adjacency.ravel())), ",".join(cell.ops),
                   base64.b64encode(metrics.SerializeToString()).decode()]
            out.write(frame(json.dumps(row).encode()))


def test_crc32c_known_answer():
    assert google_crc32c.value(b"123456789") == 0xE3069283
    assert masked_crc32c(b"123456789") == mask(0xE3069283)


def test_reads_every_record_exactly(tmp_path):
    path = tmp_path / "nb.tfrecord"
    write_nb101_tfrecord(path)
    records = list(read_nasbench101(path))
    assert len(records) == scan(path) == 6
    space = get_space("nasbench101")
    for record, (cell, repeat, (train, val, test), seconds) in zip(records, runs()):
        assert record.module_hash == space.canonical_hash(cell) and record.epochs == 108
        assert np.array_equal(record.adjacency, cell.adjacency) and record.ops == list(cell.ops)
        assert record.metrics.trainable_parameters == 1000 + repeat
        final = record.metrics.evaluation_data[-1]
        assert (final.train_accuracy, final.validation_accuracy, final.test_accuracy) == (train, val, test)
        assert final.training_time == seconds and final.current_epoch == 108.0
        assert record.metrics.evaluation_data[1].validation_accuracy == val * 0.5


def test_full_table_is_the_mean_over_runs(data_copy):
    write_nb101_tfrecord(data_copy / "nasbench101" / "nasbench_only108.tfrecord")
    for _ in range(2):  # parsed, then from the cache
        bench = load_benchmark("nasbench101", data_copy, table="full")
        assert len(bench) == 2 and bench.splits == ("train", "val", "test") and bench.epochs == (108,)
        assert "full table" in bench.label
        assert bench.query(CELLS[1], split="test") == pytest.approx(100 * np.mean([0.79, 0.80, 0.81]))
        assert bench.query(CELLS[1], split="val") == pytest.approx(100 * np.mean([0.85, 0.87, 0.89]))
        assert bench.budget.seconds == pytest.approx(101.0)
        assert bench.best(split="val")[0] == bench.index_of(CELLS[1])


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-3], "truncated record at byte"),
    (lambda raw: raw[:-len(raw) // 3 * 2 + 5], "truncated record"),
    (lambda raw: raw[:40] + bytes([raw[40] ^ 1]) + raw[41:], "corrupted record data at byte 0"),
    (lambda raw: bytes([raw[0] ^ 1]) + raw[1:], "corrupted record length at byte 0"),
])
def test_damaged_tfrecord_is_reported(tmp_path, damage, message):
    path = tmp_path / "nb.tfrecord"
    write_nb101_tfrecord(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=message):
        list(read_nasbench101(path))


def test_garbage_row_is_reported(tmp_path):
    path = tmp_path / "nb.tfrecord"
    path.write_bytes(frame(b'["abc", 108, "0110", "input,output", "!!not base64!!"]'))
    with pytest.raises(DataError, match="record 0 is not a NAS-Bench-101 row"):
        list(read_nasbench101(path))
