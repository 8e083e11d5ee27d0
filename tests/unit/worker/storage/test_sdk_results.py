"""Results as immutable segments (kubetune.storage.results): each segment written once,
merges that bound the object count, result.json assembled with every iteration
exactly once (after a restart, after a SIGKILL), bytes written bounded, and
large segments copied on the S3 server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

import kubetune
import kubetune_contract as contract
from kubetune.storage import Storage, StorageError
from kubetune.storage.base import Piece
from kubetune.storage.local import LocalStorage
from kubetune.storage.results import (
    ResultLog,
    Segment,
    build_view,
    parse_segment_name,
    read_result_bytes,
    read_results,
    segment_name,
)
from kubetune.storage.runfolder import RunStore
from kubetune.storage.s3 import S3Storage
from kubetune.storage.s3_multipart import MiB, copy_ranges

BUCKET = "kubetune-test"  # the bucket of the conftest's `s3` fixture


def lines(first: int, last: int, pad: int = 0) -> bytes:
    return b"".join(
        json.dumps({"training_iteration": i, "pad": "x" * pad}).encode() + b"\n"
        for i in range(first, last + 1)
    )


def iterations(data: bytes) -> list[int]:
    return [json.loads(line)["training_iteration"] for line in data.splitlines()]


class Counting(LocalStorage):
    """A local folder that behaves like S3 (no appends in place) and counts."""

    appends_in_place = False

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.written: Counter[str] = Counter()
        self.bytes_written = 0
        self.assembled_bytes = 0
        self.reads: list[str] = []

    def write_bytes(self, path: str, data: bytes) -> None:
        self.written[path] += 1
        self.bytes_written += len(data)
        if path == contract.RESULT_FILE:
            self.assembled_bytes += len(data)
        super().write_bytes(path, data)

    def read_bytes(self, path: str, limit: int | None = None) -> bytes | None:
        self.reads.append(path)
        return super().read_bytes(path, limit)

    def append_bytes(self, path: str, data: bytes) -> None:
        raise AssertionError("no appends on an S3-like store")


# --- names and the rule ---------------------------------------------------------


def test_segment_names_round_trip():
    assert segment_name(7, 41, 60) == "00000007-00000041-00000060.jsonl"
    seg = parse_segment_name("00000007-00000041-00000060.jsonl", 99)
    assert seg == Segment(7, 41, 60, 99) and seg.count == 20
    marker = parse_segment_name(segment_name(8, 31, 30))
    assert marker is not None and marker.count == 0 and marker.last == 30
    assert parse_segment_name("result.json") is None
    assert parse_segment_name("00000001-00000001-00000002.jsonl.tmp") is None


def test_later_segments_replace_the_iterations_they_restart_from():
    segs = [
        Segment(0, 1, 10, 0),
        Segment(1, 11, 40, 0),  # a crash after 40; the checkpoint was at 30
        Segment(2, 31, 30, 0),  # the restart's marker
        Segment(3, 31, 45, 0),
    ]
    view = build_view(segs)
    assert [(r.seg.seq, r.seg.first, r.count) for r in view] == [
        (0, 1, 10),
        (1, 11, 20),
        (3, 31, 15),
    ]
    # A merged segment (new seq, same range) supersedes its parts.
    view = build_view([*segs, Segment(4, 11, 45, 0)])
    assert [(r.seg.seq, r.count) for r in view] == [(0, 10), (4, 35)]


# --- the writer ----------------------------------------------------------------


def test_each_flush_is_one_new_object_written_once(tmp_path):
    storage = Counting(str(tmp_path / "run"))
    log = ResultLog(storage, chunk_segments=10_000)
    log.open()
    log.begin(0)
    for first in range(1, 200, 10):
        log.append(lines(first, first + 9))
    segments = [p for p in storage.written if p.startswith(contract.RESULTS_DIR)]
    assert len(segments) == 20 and set(storage.written.values()) == {1}
    assert contract.RESULT_FILE not in storage.written  # assembled at the end only
    assert storage.reads == [contract.RESULT_FILE]  # open(): is there an old result.json?
    log.finish()
    assert iterations(storage.read_bytes(contract.RESULT_FILE) or b"") == list(range(1, 201))
    assert storage.written[contract.RESULT_FILE] == 1
    assert [p for p in storage.reads if p.startswith(contract.RESULTS_DIR)] == []


def test_a_long_tail_is_merged_at_the_end(tmp_path):
    storage = Counting(str(tmp_path / "run"))
    log = ResultLog(storage)
    log.open()
    log.begin(0)
    for i in range(1, 101):
        log.append(lines(i, i))
    log.finish()
    assert [n for n, _ in storage.list_files(contract.RESULTS_DIR)] == [
        "00000100-00000001-00000100.jsonl"
    ]
    assert iterations(storage.read_bytes(contract.RESULT_FILE) or b"") == list(range(1, 101))
    short = Counting(str(tmp_path / "short"))
    log = ResultLog(short)
    log.open()
    log.begin(0)
    for i in range(1, 11):
        log.append(lines(i, i))
    log.finish()  # a short tail stays as it is
    assert len(short.list_files(contract.RESULTS_DIR)) == 10


def test_bytes_written_stay_bounded_however_long_the_run(tmp_path):
    """Merges every 16 segments, result.json at every 'checkpoint' (if cheap) and
    at the end: the bytes written stay under 3x the results (segments 1x, merges
    1x, result.json assemblies at most 2x minus what the server copies) and the
    number of objects stays small."""
    storage = Counting(str(tmp_path / "run"))
    log = ResultLog(storage, chunk_segments=16, chunk_bytes=1 << 30)
    log.open()
    log.begin(0)
    it = 1
    for flush in range(2000):
        log.append(lines(it, it + 2, pad=40))
        it += 3
        if flush % 50 == 49:
            log.assemble_if_cheap()
    log.finish()
    result = storage.read_bytes(contract.RESULT_FILE) or b""
    assert iterations(result) == list(range(1, it))
    segment_bytes = sum(
        size for name, size in storage.list_files(contract.RESULTS_DIR) if name.endswith(".jsonl")
    )
    assert segment_bytes == len(result)  # merged segments hold the results once
    # Segments and merges: twice the results. result.json (no server-side copy
    # here): the assemblies at doubling sizes, at most 2x, and the last one, 1x.
    assembled = storage.assembled_bytes
    assert storage.bytes_written - assembled <= 2 * len(result)
    assert assembled <= 3 * len(result)
    assert len(storage.list_files(contract.RESULTS_DIR)) <= 2000 // 16 + 16
    # The 40 assemblies asked for ran only when the results had doubled.
    assert storage.written[contract.RESULT_FILE] <= 12


def test_a_restart_keeps_every_iteration_once(tmp_path):
    storage = Counting(str(tmp_path / "run"))
    first = ResultLog(storage)
    first.open()
    first.begin(0)
    first.append(lines(1, 30))
    first.append(lines(31, 44))  # then the process dies; its checkpoint was 30
    again = ResultLog(storage)
    again.open()
    assert again.last_iteration == 44
    again.begin(30)
    assert read_result_bytes(storage) == lines(1, 30)  # the marker cut 31..44 at once
    again.append(lines(31, 50))
    again.finish()
    assert iterations(storage.read_bytes(contract.RESULT_FILE) or b"") == list(range(1, 51))
    assert read_result_bytes(storage) == storage.read_bytes(contract.RESULT_FILE)


def test_a_crash_between_a_merge_and_its_deletes_duplicates_nothing(tmp_path, monkeypatch):
    storage = Counting(str(tmp_path / "run"))
    log = ResultLog(storage, chunk_segments=4)
    log.open()
    log.begin(0)
    monkeypatch.setattr(storage, "delete_many", lambda paths: None)  # "killed" before deleting
    for first in range(1, 41, 5):
        log.append(lines(first, first + 4))
    names = [n for n, _ in storage.list_files(contract.RESULTS_DIR)]
    assert len(names) == 8 + 2  # the small segments and the two merged ones
    assert iterations(read_result_bytes(storage)) == list(range(1, 41))
    reopened = ResultLog(storage)
    reopened.open()
    reopened.begin(40)
    reopened.finish()
    assert iterations(storage.read_bytes(contract.RESULT_FILE) or b"") == list(range(1, 41))


def test_a_merge_across_a_restart_in_the_same_process(tmp_path):
    storage = Counting(str(tmp_path / "run"))
    log = ResultLog(storage, chunk_segments=5)
    log.open()
    log.begin(0)
    log.append(lines(1, 10))
    log.append(lines(11, 20))
    log.begin(15)  # an in-process retry from the checkpoint of iteration 15
    log.append(lines(16, 18))
    log.append(lines(19, 25))  # the fifth segment: merged
    assert len(storage.list_files(contract.RESULTS_DIR)) == 1
    assert iterations(read_result_bytes(storage)) == list(range(1, 26))
    log.begin(3)  # from before everything stored in this merge's range
    log.append(lines(4, 6))
    log.finish()
    assert iterations(storage.read_bytes(contract.RESULT_FILE) or b"") == list(range(1, 7))


def test_an_old_result_json_is_adopted(tmp_path):
    storage = LocalStorage(str(tmp_path / "run"))
    storage.write_bytes(
        contract.RESULT_FILE, lines(5, 9)
    )  # restored from 4, written before segments
    log = ResultLog(storage)
    log.open()
    assert log.last_iteration == 9
    log.begin(7)
    log.append(lines(8, 10))
    assert iterations(storage.read_bytes(contract.RESULT_FILE) or b"") == list(range(5, 11))
    assert iterations(read_result_bytes(storage)) == list(range(5, 11))


def test_local_result_json_grows_in_place(tmp_path):
    storage = LocalStorage(str(tmp_path / "run"))
    log = ResultLog(storage)
    log.open()
    log.begin(0)
    log.append(lines(1, 3))
    assert storage.read_bytes(contract.RESULT_FILE) == lines(1, 3)
    log.append(lines(4, 5))
    assert storage.read_bytes(contract.RESULT_FILE) == lines(1, 5)
    # A crash between the segment and the append: the next open repairs result.json.
    storage.write_bytes(contract.RESULT_FILE, lines(1, 3) + b'{"half')
    ResultLog(storage).open()
    assert storage.read_bytes(contract.RESULT_FILE) == lines(1, 5)


# --- through the loop -------------------------------------------------------------


FAILED_ONCE: set[int] = set()


class Model(kubetune.Trainable):
    def setup(self, config: dict[str, Any]) -> None:
        self.value = 0

    def step(self) -> dict[str, Any]:
        self.value += 1
        fail_at = self.config.get("fail_at")
        if self.value == fail_at and fail_at not in FAILED_ONCE:
            FAILED_ONCE.add(fail_at)
            raise RuntimeError("flaky")
        return {"value": self.value}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        with open(os.path.join(checkpoint_dir, "v.json"), "w") as f:
            json.dump({"value": self.value}, f)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        with open(os.path.join(checkpoint_dir, "v.json")) as f:
            self.value = json.load(f)["value"]


def test_an_in_process_retry_keeps_every_iteration_once(tmp_path):
    out = kubetune.run(
        Model,
        storage=str(tmp_path / "run"),
        config={"fail_at": 8},  # after the checkpoint at 5: 6 and 7 are stored twice
        stop={"training_iteration": 12},
        checkpoint={"frequency": 5},
        max_failures=1,
        verbose=0,
    )
    assert out.ok and out.failures == 1
    rows = RunStore(LocalStorage(str(tmp_path / "run"))).read_results()
    assert [r["training_iteration"] for r in rows] == list(range(1, 13))
    with open(tmp_path / "run" / contract.RESULT_FILE, "rb") as f:
        assert iterations(f.read()) == list(range(1, 13))


def test_a_resume_that_is_already_done_drops_the_crashed_tail(tmp_path):
    run = str(tmp_path / "run")
    kw: dict[str, Any] = {"storage": run, "verbose": 0, "checkpoint": {"frequency": 4}}
    kubetune.run(Model, stop={"training_iteration": 6}, **kw)
    store = RunStore(LocalStorage(run))
    store._delete_checkpoint("checkpoint_000006")  # as if it crashed before that commit
    out = kubetune.run(Model, stop={"training_iteration": 4}, **kw)
    assert out.ok and "at the checkpoint resumed from" in out.message
    assert [r["training_iteration"] for r in store.read_results()] == [1, 2, 3, 4]
    with open(tmp_path / "run" / contract.RESULT_FILE, "rb") as f:
        assert iterations(f.read()) == [1, 2, 3, 4]


# --- S3 ---------------------------------------------------------------------------------


class Traffic:
    def __init__(self, storage: S3Storage) -> None:
        self.sent = 0
        self.ops: Counter[str] = Counter()
        self.keys: Counter[str] = Counter()
        self.gets: Counter[str] = Counter()
        storage._client.meta.events.register("before-send.s3", self._send)
        storage._client.meta.events.register("before-parameter-build.s3", self._call)

    def _send(self, request: Any, **_: Any) -> None:
        body = request.body
        self.sent += len(body) if isinstance(body, bytes | bytearray) else 0

    def _call(self, model: Any, params: Any, **_: Any) -> None:
        self.ops[model.name] += 1
        if model.name == "PutObject":
            self.keys[params.get("Key", "")] += 1
        if model.name == "GetObject":
            self.gets[params.get("Key", "")] += 1


def test_s3_segments_are_put_once_and_result_json_is_copied_on_the_server(s3):
    storage = S3Storage(f"s3://{BUCKET}/exp/default/big")
    traffic = Traffic(storage)
    log = ResultLog(storage, chunk_bytes=6 * MiB)
    log.open()
    log.begin(0)
    it = 1
    while it < 30_000:  # ~13 MiB of results in 100 flushes, merged twice
        log.append(lines(it, it + 299, pad=400))
        it += 300
    sent_before = traffic.sent
    log.finish()
    result = storage.read_bytes(contract.RESULT_FILE) or b""
    assert iterations(result) == list(range(1, it))
    # The worker never read a segment back (only: is there an old result.json?).
    assert [k for k in traffic.gets if contract.RESULTS_DIR in k] == []
    assert traffic.ops["UploadPartCopy"] >= 2  # the merged segments, copied on the server
    assert traffic.sent - sent_before < 2 * MiB  # only the small tail went over the wire
    assert max(n for k, n in traffic.keys.items() if contract.RESULTS_DIR in k) == 1
    assert traffic.sent < 2.2 * len(result)
    assert iterations(read_result_bytes(storage)) == list(range(1, it))


def test_results_checkpoints_and_resume_on_s3_keep_each_iteration_once(s3):
    run = f"s3://{BUCKET}/exp/default/job"
    kw: dict[str, Any] = {
        "checkpoint": {"frequency": 3, "at_end": False},
        "run_id": "uid-1",
        "verbose": 0,
    }
    kubetune.run(Model, storage=run, stop={"training_iteration": 7}, **kw)
    out = kubetune.run(Model, storage=run, stop={"training_iteration": 9}, **kw)
    assert out.restored_from is not None and out.restored_from.endswith("checkpoint_000006")
    raw = s3.get_object(Bucket=BUCKET, Key="exp/default/job/result.json")["Body"].read()
    assert iterations(raw) == list(range(1, 10))
    assert json.loads(raw.splitlines()[6])["iterations_since_restore"] == 1
    assert [r["value"] for r in read_results(S3Storage(run))] == list(range(1, 10))


# --- a real SIGKILL ---------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import kubetune

    class Model(kubetune.Trainable):
        def setup(self, config):
            self.value = 0
        def step(self):
            time.sleep(0.005)
            self.value += 1
            if self.value == 30:
                return {"value": self.value, "should_checkpoint": True}
            return {"value": self.value}
        def save_checkpoint(self, d):
            with open(os.path.join(d, "v.json"), "w") as f:
                json.dump({"value": self.value}, f)
        def load_checkpoint(self, d):
            with open(os.path.join(d, "v.json")) as f:
                self.value = json.load(f)["value"]

    # One checkpoint, at iteration 30; the parent kills it once results beyond are stored.
    kubetune.run(Model, storage=sys.argv[1], run_id="uid-1", verbose=0,
                 checkpoint={"at_end": False})
    """
)


@pytest.fixture
def s3_server(moto_server: str) -> str:
    """The conftest's moto server, with this file's bucket."""
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=BUCKET)
    return moto_server


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_sigkilled_worker_restarts_with_every_iteration_once(backend, tmp_path, request):
    if backend == "s3":
        request.getfixturevalue("s3_server")
        uri = f"s3://{BUCKET}/exp/default/killed"
    else:
        uri = str(tmp_path / "killed")
    storage: Storage = S3Storage(uri) if backend == "s3" else LocalStorage(uri)
    store = RunStore(storage)
    child = subprocess.Popen([sys.executable, "-c", CHILD, uri], env=dict(os.environ))
    try:
        # Kill it once results after a checkpoint are stored.
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "the child stored no results"
            assert child.poll() is None
            latest = store.latest_checkpoint()
            try:
                last = iterations(read_result_bytes(storage))[-1:]
            except StorageError:
                last = []
            if latest is not None and last and last[0] > latest.iteration + 5:
                break
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    latest = store.latest_checkpoint()
    assert latest is not None and latest.iteration == 30
    stored = iterations(read_result_bytes(storage))
    assert stored == list(range(1, len(stored) + 1)) and stored[-1] > 35
    stop = stored[-1] + 20
    out = kubetune.run(
        Model,
        storage=uri,
        run_id="uid-1",
        verbose=0,
        stop={"training_iteration": stop},
        checkpoint={"frequency": 30},
    )
    assert out.ok and out.restored_from == latest.path
    result = storage.read_bytes(contract.RESULT_FILE) or b""
    assert iterations(result) == list(range(1, stop + 1))
    assert read_result_bytes(storage) == result


def test_s3_compose_follows_the_multipart_rules(s3):
    storage = S3Storage(f"s3://{BUCKET}/exp/default/parts")
    big = b"a" * (5 * MiB) + b"\n"
    storage.write_bytes("big1", big)
    storage.write_bytes("big2", big)
    storage.write_bytes("small", b"s\n")
    pieces = [
        Piece(data=b"head\n"),  # under 5 MiB before a copy: big1 is read, not copied
        Piece(path="big1", size=len(big)),
        Piece(path="small", size=2),
        Piece(path="big2", size=len(big)),
        Piece(data=b"tail\n"),
    ]
    plan = storage._plan(pieces)
    assert [kind for kind, _src, _n in plan] == ["data", "copy", "data"]
    assert plan[0][2] == 5 + len(big) + 2 and plan[1][1][0].endswith("/big2")
    expected = b"head\n" + big + b"s\n" + big + b"tail\n"
    assert storage.compose("out", pieces) == len(expected)
    assert storage.read_bytes("out") == expected
    # A server without UploadPartCopy gets the whole object written instead.
    real = storage._client.upload_part_copy

    def not_implemented(**kw: Any) -> Any:
        raise ClientError({"Error": {"Code": "NotImplemented", "Message": "no"}}, "UploadPartCopy")

    storage._client.upload_part_copy = not_implemented
    try:
        assert storage.compose("out2", pieces[1:]) == len(expected) - 5
    finally:
        storage._client.upload_part_copy = real
    assert storage.read_bytes("out2") == expected[5:]


def test_copies_over_5_gib_are_split_evenly():
    parts = copy_ranges("k", 11 * 1024 * MiB)
    assert len(parts) == 3 and sum(n for _k, _s, n in parts) == 11 * 1024 * MiB
    assert all(5 * MiB <= n <= 5 * 1024 * MiB for _k, _s, n in parts)
    assert parts[0][1] == ("k", 0, parts[0][2] - 1)
