"""Faults inside the worker: SIGKILLed again and again while it uploads a
checkpoint to the real S3 server (each next attempt resumes from the last
complete checkpoint; nothing incomplete is listed, restored or best), and its
local disk filling up while it writes a checkpoint (a clear reason naming the
disk; the previous checkpoint intact and restorable)."""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import random
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaos_fixtures import (
    Tally,
    WorkerPodWatch,
    iterations_lost,
    restore_points,
    run_store,
    run_uri,
)
from operator_fixtures import (
    OperatorProcess,
    apply,
    cluster_env,
    condition,
    get_job,
    job_manifest,
    read_results,
    wait_condition,
    wait_for,
)

from kubetune.sdk.class_checkpoint import DICT_CHECKPOINT_FILE
from kubetune.storage.checkpoints import download_checkpoint
from kubetune.storage.runfolder import RunStore
from kubetune_contract import CHECKPOINT_MANIFEST as MANIFEST
from localcluster.config import Layout
from localcluster.procs import start_time
from localcluster.testing import Cluster
from localcluster.testing import wait_for as wait_until

pytestmark = pytest.mark.e2e

KILLS = 4
LAST = 150


def _worker_pid(lay: Layout, namespace: str, pod: str) -> int | None:
    """The process group of the pod's running container, from the node agent's records."""
    for pids in lay.pods.glob(f"{namespace}_{pod}_*/pids"):
        for line in reversed(pids.read_text().splitlines()):
            pid_text, _, started = line.partition(" ")
            if started and start_time(int(pid_text)) == started:
                return int(pid_text)
    return None


def _checkpointed_past(lay: Layout, namespace: str, pod: str, store: RunStore, after: int) -> bool:
    """The pod runs, and the run has a complete checkpoint newer than `after`."""
    latest = store.latest_checkpoint()
    return _worker_pid(lay, namespace, pod) is not None and (
        latest is not None and latest.iteration > after
    )


def _uploading(store: RunStore) -> list[str]:
    """Checkpoint folders newer than the latest complete one that hold files but
    no manifest yet: an upload under way (one listing, cheap enough to poll)."""
    folders: dict[str, set[str]] = {}
    for path, _size in store.storage.list_files():
        folder, _, name = path.partition("/")
        if folder.startswith("checkpoint_") and name:
            folders.setdefault(folder, set()).add(name)
    complete = [int(f.rsplit("_", 1)[1]) for f, names in folders.items() if MANIFEST in names]
    newest = max(complete, default=0)
    return sorted(
        f
        for f, names in folders.items()
        if MANIFEST not in names and int(f.rsplit("_", 1)[1]) > newest
    )


def test_worker_sigkilled_mid_upload_resumes_from_complete_checkpoints(
    cluster: Cluster, job_ns: str, operator: OperatorProcess, s3: Any
) -> None:
    """About 90 s, and must: four SIGKILLs, each timed to fall inside a 16 MiB
    upload of 32 shards, and after each a new pod that downloads the last
    complete checkpoint and goes on; the run reaches iteration 150."""
    rng = random.Random(20261130)
    lay = Layout.discover()
    tally = Tally("worker SIGKILLed mid-upload")
    watcher = WorkerPodWatch(cluster.api, job_ns)
    watcher.start()
    manifest = job_manifest(
        "kill-upload",
        trainable="tests.e2e.trainables:ShardedCounter",
        config={"sleep": 0.1, "payload_mb": 16, "shards": 32},
        stop={"training_iteration": LAST},
        checkpoint={"frequency": 2, "numToKeep": 2, "scoreAttribute": "score"},
        maxFailures=-1,
    )
    apply(job_ns, manifest)
    store = run_store(manifest, job_ns)
    expected_restores: list[int] = []
    mid_upload = 0
    try:
        for attempt in range(1, KILLS + 1):
            pod = f"kill-upload-worker-{attempt}"
            after = expected_restores[-1] if expected_restores else 0
            wait_until(
                f"{pod} to run and checkpoint past iteration {after}",
                functools.partial(_checkpointed_past, lay, job_ns, pod, store, after),
                timeout=120,
                every=0.2,
            )
            time.sleep(rng.uniform(0.0, 2.0))
            # Then wait for an upload to be under way, and kill the worker in it.
            deadline = time.monotonic() + 10
            while not _uploading(store) and time.monotonic() < deadline:
                time.sleep(0.02)
            pid = _worker_pid(lay, job_ns, pod)
            assert pid is not None, f"{pod} is not running"
            os.killpg(pid, signal.SIGKILL)
            tally.faults += 1
            if _uploading(store):
                mid_upload += 1
            latest = store.latest_checkpoint()
            expected_restores.append(latest.iteration if latest else 0)
        wait_condition(job_ns, "kill-upload", "Finished", 300)
    finally:
        watcher.stop()
    status = tally.check_job(s3, job_ns, manifest, LAST)
    assert status.get("failures") == KILLS, status
    rows = read_results(s3, run_uri(manifest, job_ns))
    assert restore_points(rows) == expected_restores
    tally.duplicate_pods = watcher.duplicates()
    tally.notes.append(
        f"{mid_upload} of {KILLS} kills with an upload under way; "
        f"attempts resumed from iterations {expected_restores}"
    )
    tally.report()
    tally.assert_zeros()
    assert mid_upload >= KILLS // 2, "the kills missed the uploads: the test proves little"


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 16 MiB tmpfs: the worker's local staging folder (TMPDIR)."""
    folder = Path(tempfile.mkdtemp(prefix="kubetune-chaos-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        with contextlib.suppress(OSError):
            folder.rmdir()


def fill_to_one_mib_free(disk: Path) -> None:
    stat = os.statvfs(disk)
    extra = stat.f_bavail * stat.f_frsize - 1024 * 1024
    if extra > 0:
        with (disk / "filler").open("ab") as fh:
            fh.write(b"\0" * extra)


def test_disk_full_while_writing_a_checkpoint(
    cluster: Cluster, job_ns: str, operator: OperatorProcess, s3: Any, small_disk: Path
) -> None:
    tally = Tally("worker disk full")
    watcher = WorkerPodWatch(cluster.api, job_ns)
    watcher.start()
    scratch = str(small_disk)
    manifest = job_manifest(
        "disk-full",
        config={"sleep": 0.1, "payload_mb": 4},
        stop={"training_iteration": 1000},
        checkpoint={"frequency": 5},
        maxFailures=1,
        template={
            "spec": {
                "volumes": [{"name": "scratch", "hostPath": {"path": scratch}}],
                "containers": [
                    {
                        "name": "worker",
                        "env": [{"name": "TMPDIR", "value": scratch}],
                        "volumeMounts": [{"name": "scratch", "mountPath": scratch}],
                    }
                ],
            }
        },
    )
    apply(job_ns, manifest)
    job = wait_for(
        job_ns,
        "disk-full",
        lambda job: (
            ((job.get("status") or {}).get("latestCheckpoint") or {}).get("iteration", 0) >= 10
        ),
        timeout=120,
        what="a checkpoint before the disk fills",
    )
    # Another process fills the disk: 1 MiB stays free, the next checkpoint needs 4.
    # It tops the disk up while it waits: filled while a checkpoint was being
    # staged, the disk would get that checkpoint's 4 MiB back once it is sent.
    tally.faults += 1
    deadline = time.monotonic() + 180
    try:
        while condition(get_job(job_ns, "disk-full"), "Failed").get("status") != "True":
            assert time.monotonic() < deadline, "disk-full never Failed with its disk full"
            for _ in range(10):
                fill_to_one_mib_free(small_disk)
                time.sleep(0.1)
    finally:
        watcher.stop()
    job = get_job(job_ns, "disk-full")
    failed = condition(job, "Failed")
    tally.runs += 1
    message = failed.get("message", "")
    # The last attempt failed writing a checkpoint, or fetching one to resume.
    clear = "No space left on device while" in message and scratch in message
    # The previous checkpoint is intact, and restores what it saved.
    store = run_store(manifest, job_ns)
    latest = store.latest_checkpoint()
    intact = latest is not None and job["status"]["latestCheckpoint"]["path"] == latest.path
    if latest is not None:
        cenv = cluster_env()
        with tempfile.TemporaryDirectory() as tmp:
            download_checkpoint(
                latest.path,
                Path(tmp),
                endpoint_url=cenv["AWS_ENDPOINT_URL"],
                credentials={k: cenv[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
            )
            saved = pickle.loads((Path(tmp) / DICT_CHECKPOINT_FILE).read_bytes())
            intact = intact and saved["total"] == latest.iteration
            intact = intact and not (Path(tmp) / MANIFEST).exists()
    # By design the job ends Failed (the disk does not free itself): it is lost
    # only if it ended any other way, or without its previous checkpoint.
    tally.jobs_lost = int(not (clear and intact))
    rows = read_results(s3, run_uri(manifest, job_ns))
    missing, repeated = iterations_lost(rows, int(rows[-1]["training_iteration"]))
    tally.iterations_lost = missing + repeated
    tally.duplicate_pods = watcher.duplicates()
    tally.notes.append(f"ended {failed.get('reason')}: {message[:160]}")
    tally.report()
    assert clear, failed
    assert intact, (latest, job["status"].get("latestCheckpoint"))
    tally.assert_zeros()
