"""A deleted pod's last word survives an apiserver restart: the node agent
retries the final status and the delete until the apiserver answers, instead
of leaving the pod Terminating with a running container for ever."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # localcluster lives at the repo root, outside the package dirs
    sys.path.insert(0, str(REPO))

from localcluster.nodeagent.kube import KubeError  # noqa: E402
from localcluster.nodeagent.pods import PodWorker  # noqa: E402
from localcluster.nodeagent.runtime import Runtime  # noqa: E402


class AwayThenBack:
    """An apiserver that refuses the first `away` calls of each verb, then answers."""

    def __init__(self, away: int) -> None:
        self.away = away
        self.calls: list[tuple[str, str, bool]] = []

    def _call(self, verb: str, path: str) -> None:
        failed = sum(1 for v, _, ok in self.calls if v == verb and not ok)
        ok = failed >= self.away
        self.calls.append((verb, path, ok))
        if not ok:
            raise KubeError(0, "Unreachable", "connection refused")

    def patch(self, path: str, body: Any, content_type: str = "") -> None:
        self._call("PATCH", path)

    def delete(self, path: str, body: Any = None) -> None:
        self._call("DELETE", path)

    def create(self, path: str, body: Any) -> None:
        self._call("POST", path)


def pod() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "job-worker-1",
            "namespace": "ns",
            "uid": "u-1",
            "deletionTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"nodeName": "kt-cpu", "containers": [{"name": "worker", "image": "x"}]},
        "status": {"phase": "Running"},
    }


def test_final_status_and_delete_are_retried_until_the_apiserver_answers(
    tmp_path: Path,
) -> None:
    kube = AwayThenBack(away=1)
    rt = Runtime(kube=kube, state=tmp_path, repo=REPO, apiserver_port=6443, gpus={})  # type: ignore[arg-type]
    worker = PodWorker(rt, pod())
    worker.sandbox_ready = True
    view = worker.apps[0].view
    view.started_at, view.waiting = "2026-01-01T00:00:00Z", None
    view.terminated = {"exitCode": 75, "reason": "Error", "startedAt": view.started_at}
    worker.dir.mkdir(parents=True)

    worker._terminate()

    verbs = [(verb, ok) for verb, _, ok in kube.calls]
    assert ("PATCH", True) in verbs and ("DELETE", True) in verbs, verbs
    assert verbs.count(("PATCH", False)) == 1 and verbs.count(("DELETE", False)) == 1
    # The status went first, then the delete: the exit code (75: stopped with a
    # checkpoint) reaches the owner before the pod disappears.
    last_patch = max(i for i, (v, ok) in enumerate(verbs) if v == "PATCH" and ok)
    first_delete = min(i for i, (v, ok) in enumerate(verbs) if v == "DELETE" and ok)
    assert last_patch < first_delete
    assert worker.last_sent is not None
    assert (
        worker.last_sent["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 75
    )
    assert not worker.dir.exists()


def test_a_pod_already_gone_ends_the_retries_at_once(tmp_path: Path) -> None:
    class Gone(AwayThenBack):
        def delete(self, path: str, body: Any = None) -> None:
            self.calls.append(("DELETE", path, True))
            raise KubeError(404, "NotFound", "{}")

    kube = Gone(away=0)
    rt = Runtime(kube=kube, state=tmp_path, repo=REPO, apiserver_port=6443, gpus={})  # type: ignore[arg-type]
    worker = PodWorker(rt, pod())
    worker._terminate()
    assert [v for v, _, _ in kube.calls] == ["DELETE"]
