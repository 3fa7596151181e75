"""Data directory: fetch (mirror, HTTP on loopback), verify, and damaged files that must never load."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import threading
import time

import pytest

from archsweep.benchmarks import files, load_benchmark
from archsweep.errors import DataError

REQUIRED = [f for f in files.FILES if not f.optional]


@pytest.fixture
def http_mirror(data_dir):
    """A real HTTP server on 127.0.0.1 serving the data directory; yields the file list pointed at it."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(data_dir))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield [dataclasses.replace(f, url=f"{base}/{f.path}") for f in files.FILES]
    server.shutdown()
    server.server_close()


def test_shared_data_verifies(data_dir):
    assert files.verify(data_dir) == {f.path: None for f in REQUIRED}


def test_missing_file_names_it_and_the_fix(data_copy):
    (data_copy / "nasbench201/nasbench201_cifar100.csv").unlink()
    with pytest.raises(DataError) as info:
        load_benchmark("nasbench201", data_copy)
    message = str(info.value)
    assert "missing" in message and "nasbench201_cifar100.csv" in message
    assert "archsweep data fetch" in message and "ARCHSWEEP_DATA_DIR" in message


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_file_is_never_loaded(data_copy, damage):
    path = data_copy / "nasbench101/nb101_val_acc_10k.json"
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[1000] ^= 0x01  # one bit: still valid JSON-looking text, wrong numbers
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupted or truncated: .*nb101_val_acc_10k.json"):
        load_benchmark("nasbench101", data_copy)
    assert files.verify(data_copy)["nasbench101/nb101_val_acc_10k.json"].startswith("corrupted or truncated")


def test_fetch_from_mirror_then_nothing_to_do(data_dir, tmp_path):
    target = tmp_path / "fresh"
    done = files.fetch(target, mirror=data_dir)
    assert set(done) == {f.path for f in REQUIRED}
    assert all(action.startswith("copied from") for action in done.values())
    assert files.verify(target) == {f.path: None for f in REQUIRED}
    mtimes = {f.path: (target / f.path).stat().st_mtime_ns for f in REQUIRED}
    assert set(files.fetch(target, mirror=data_dir).values()) == {"ok"}
    assert mtimes == {f.path: (target / f.path).stat().st_mtime_ns for f in REQUIRED}


def test_complete_data_dir_needs_no_source(data_dir):
    # what CI does: the shared mirror is the data directory; fetch verifies and touches nothing
    assert set(files.fetch(data_dir).values()) == {"ok"}


def test_fetch_downloads_over_http(http_mirror, tmp_path):
    target = tmp_path / "downloaded"
    done = files.fetch(target, files=http_mirror)
    assert all(action.startswith("downloaded from http://127.0.0.1:") for action in done.values())
    assert load_benchmark("nasbench201", target).best("cifar10", "test")[0] == 6111


def test_corrupted_download_replaces_nothing(http_mirror, tmp_path):
    target = tmp_path / "target"
    files.fetch(target, files=http_mirror)
    victim = target / "nasbench201/nats_bench_test_acc.csv"
    victim.write_bytes(b"old, damaged copy")
    bad_sum = [dataclasses.replace(f, sha256="0" * 64) if f.path == "nasbench201/nats_bench_test_acc.csv" else f
               for f in http_mirror]
    with pytest.raises(DataError, match="nothing was replaced"):
        files.fetch(target, files=bad_sum)
    assert victim.read_bytes() == b"old, damaged copy"
    assert not list(target.rglob("*.part"))


def test_offline_fetch_fails_fast_with_the_fix(tmp_path):
    closed = [dataclasses.replace(f, url=f"http://127.0.0.1:9/{f.path}") for f in files.FILES]
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        files.fetch(tmp_path / "offline", files=closed, timeout=5)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "cannot download http://127.0.0.1:9/" in message and "--from MIRROR_DIR" in message
    assert not list((tmp_path / "offline").rglob("*.csv"))


def test_mirror_without_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="the mirror has no nasbench201/nats_bench_test_acc.csv"):
        files.fetch(tmp_path / "target", mirror=tmp_path / "empty")


def test_a_flaky_server_is_tried_again_and_a_missing_file_is_not(data_dir, tmp_path):
    """A real HTTP server on 127.0.0.1 that answers 503 to each file's first request: fetch with retries gets
    every file (each asked for twice); a file the server does not have fails on its 404, with retries left."""
    asked: dict[str, int] = {}

    class Flaky(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            asked[self.path] = asked.get(self.path, 0) + 1
            if asked[self.path] == 1:
                self.send_error(503, "busy")
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Flaky, directory=str(data_dir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        served = [dataclasses.replace(f, url=f"{base}/{f.path}") for f in REQUIRED]
        done = files.fetch(tmp_path / "flaky", files=served, retries=1, pause_s=0.05)
        assert all(action.startswith("downloaded from") for action in done.values())
        assert sorted(asked.values()) == [2] * len(REQUIRED)
        with pytest.raises(DataError, match=r"cannot download .*/nowhere.csv: File not found \(after 2 attempts\)"):
            files.fetch(tmp_path / "missing", files=[dataclasses.replace(REQUIRED[0], url=f"{base}/nowhere.csv")],
                        retries=3, pause_s=0.05)
        assert asked["/nowhere.csv"] == 2  # the 503, then the 404, which is not tried again
    finally:
        server.shutdown()
        server.server_close()
