"""Ends the end-to-end run (its name sorts last): no secret value appears in
any log, event or TrainableJob status of the whole run.

It runs last in the serial phase, after the parallel one (conftest.py). The
values are every Opaque Secret's created during the run's two phases (the
jobs' S3 credentials, any test's own Secret) and the local S3 server's
secret key. The
places are what evidence.py kept (every container log, event and job status
the API server showed), the cluster's own logs and the operators' logs under
`.cluster/logs/`, the logs of pods still running under `.cluster/pods/`, and
the events and TrainableJobs that exist now. A leak fails with file:line and
the value masked.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from evidence import EvidenceKeeper
from operator_fixtures import report_figure
from secret_scan import (
    Leak,
    needles,
    register_secret_value,
    registered_secret_values,
    scan_files,
    scan_text,
)

from localcluster.testing import Cluster


def test_no_secret_value_in_logs_events_or_status(
    cluster: Cluster, evidence: EvidenceKeeper
) -> None:
    values = registered_secret_values() | evidence.kept_secret_values()
    values.add(cluster.s3_env["AWS_SECRET_ACCESS_KEY"])
    wanted = needles(values)
    assert wanted, "no secret value long enough to look for"
    state = evidence.pods.parent
    evidence._keep_logs_once()

    # One file may be reachable twice (a live pod's log and its kept link).
    files: dict[tuple[int, int], Path] = {}
    for path in [*sorted((state / "logs").rglob("*")), *sorted(state.glob("pods/*/*/*.log"))]:
        if path.is_file():
            st = path.stat()
            files.setdefault((st.st_dev, st.st_ino), path)
    leaks: list[Leak] = list(scan_files(files.values(), wanted, state.parent))

    for kind in ("events", "trainablejobs.kubetune.io"):
        listed = cluster.kubectl("get", kind, "--all-namespaces", "-o", "json", check=False)
        for item in json.loads(listed.stdout or "{}").get("items") or []:
            meta = item["metadata"]
            shown = {"message": item.get("message"), "status": item.get("status")}
            where = f"{kind} {meta.get('namespace')}/{meta['name']}"
            leaks.extend(scan_text(where, json.dumps(shown, indent=1), wanted))

    size = sum(path.stat().st_size for path in files.values()) / 2**20
    report_figure(
        f"secret-leak scan: {len(wanted) // 2} secret values (and their base64) in {len(files)} "
        f"files ({size:.1f} MiB), events and TrainableJobs: {len(leaks)} leaks"
    )
    assert not leaks, f"{len(leaks)} secret value(s) leaked:\n" + "\n".join(
        str(leak) for leak in leaks[:50]
    )


def test_the_scan_finds_a_value_and_its_base64_masked(tmp_path: Path) -> None:
    """The check above can fail: a planted value is found, in both forms, and
    never shown."""
    value = register_secret_value("s3cr3t-" + "9f" * 12)
    log = tmp_path / "logs" / "worker.log"
    log.parent.mkdir()
    log.write_text(f"start\nenv AWS_SECRET_ACCESS_KEY={value}\ndata {b64(value)}\nshort abc\n")
    leaks = list(scan_files([log], needles([value, "abc"]), tmp_path))
    assert [leak.where for leak in leaks] == ["logs/worker.log:2", "logs/worker.log:3"]
    assert all(value not in str(leak) and b64(value) not in str(leak) for leak in leaks)
    assert leaks[0].masked_line == "env AWS_SECRET_ACCESS_KEY=****"
    assert value in registered_secret_values()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
