"""The Argo CD health check shipped in the chart, run as Argo CD runs it: a Lua 5.1
chunk with the live TrainableJob in the global `obj`, returning {status, message}."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

lupa = pytest.importorskip(
    "lupa",
    reason="the Lua runtime binding lupa is not installed: pip install 'lupa>=2.0' "
    "(or install the test extra) to run the Argo CD health check",
)

ROOT = Path(__file__).resolve().parents[3]
HEALTH_LUA = ROOT / "charts" / "kubetune" / "argocd-health.lua"
GITOPS_DOC = ROOT / "docs" / "gitops.md"
ARGOCD_KEY = "resource.customizations.health.kubetune.io_TrainableJob"
ARGOCD_HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
# Argo CD opens only the safe standard libraries; a check that needs more fails there.
UNSAFE_GLOBALS = ("io", "os", "debug", "package", "require", "dofile", "loadfile", "load")


def _runtime() -> Any:
    # Argo CD embeds gopher-lua, a Lua 5.1; lupa ships a 5.1 runtime in most builds.
    try:
        from lupa import lua51

        return lua51.LuaRuntime(unpack_returned_tuples=True)
    except ImportError:
        return lupa.LuaRuntime(unpack_returned_tuples=True)


def _to_lua(lua: Any, value: Any) -> Any:
    """JSON-shaped Python into Lua tables, as Argo CD converts the live object."""
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def run_health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = _runtime()
    env = lua.globals()
    for name in UNSAFE_GLOBALS:
        env[name] = None
    env.obj = _to_lua(lua, obj)
    result = lua.execute(HEALTH_LUA.read_text())
    assert result is not None, "the health check returned nothing"
    return result["status"], result["message"]


def cond(ctype: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": 1,
    }


def job(
    *,
    generation: int = 1,
    observed: int | None = 1,
    phase: str | None = "Running",
    iteration: int | None = None,
    conditions: list[dict[str, Any]] | None = None,
    with_status: bool = True,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TrainableJob",
        "metadata": {"name": "mnist", "namespace": "ml", "generation": generation},
        "spec": {"trainable": "examples.mnist:MNISTTrainable", "storage": {"uri": "s3://b/x"}},
    }
    if not with_status:
        return body
    status: dict[str, Any] = {"conditions": conditions or []}
    if observed is not None:
        status["observedGeneration"] = observed
    if phase is not None:
        status["phase"] = phase
    if iteration is not None:
        status["iteration"] = iteration
    body["status"] = status
    return body


def running_conditions(
    running: tuple[str, str, str] = ("True", "Running", "worker pod mnist-worker-1 is running"),
    suspended: tuple[str, str, str] = ("False", "NotSuspended", ""),
    complete: str = "False",
    failed: str = "False",
) -> list[dict[str, Any]]:
    return [
        cond("Running", *running),
        cond("Suspended", *suspended),
        cond("Checkpointed", "True", "CheckpointCommitted", "s3://b/x/ml/mnist/checkpoint_000015"),
        cond("Complete", complete, "NotFinished"),
        cond("Failed", failed, "NotFinished"),
        cond("Finished", "False", "NotFinished"),
    ]


def finished_conditions(succeeded: bool, reason: str, message: str) -> list[dict[str, Any]]:
    ctype = "Complete" if succeeded else "Failed"
    conds = [
        c for c in running_conditions(running=("False", reason, message)) if c["type"] != ctype
    ]
    conds.append(cond(ctype, "True", reason, message))
    conds = [c for c in conds if c["type"] != "Finished"]
    conds.append(cond("Finished", "True", "Succeeded" if succeeded else "Failed", message))
    return conds


STOP = "the trainable reached its stop criterion"
CONFLICT = "s3://b/x/ml/mnist holds another run (uid 1234): delete that folder or use another name"
STALE = "worker pod mnist-worker-1 runs but has reported nothing for 180s"

CASES = [
    pytest.param(
        job(
            phase="Succeeded",
            iteration=100,
            conditions=finished_conditions(True, "Succeeded", STOP),
        ),
        "Healthy",
        f"Succeeded: {STOP}",
        id="complete-is-healthy",
    ),
    pytest.param(
        job(phase="Failed", conditions=finished_conditions(False, "RunFolderConflict", CONFLICT)),
        "Degraded",
        f"RunFolderConflict: {CONFLICT}",
        id="failed-is-degraded-with-its-message",
    ),
    pytest.param(
        job(
            generation=3,
            observed=2,
            phase="Failed",
            conditions=finished_conditions(False, "MaxFailuresExceeded", "exit code 1"),
        ),
        "Degraded",
        "MaxFailuresExceeded: exit code 1",
        id="finished-job-edited-later-stays-failed",
    ),
    pytest.param(
        job(
            generation=2,
            observed=1,
            phase="Succeeded",
            conditions=finished_conditions(True, "Succeeded", STOP),
        ),
        "Healthy",
        f"Succeeded: {STOP}",
        id="finished-job-edited-later-stays-healthy",
    ),
    pytest.param(
        job(
            phase="Suspended",
            iteration=15,
            conditions=running_conditions(
                running=("False", "UserSuspended", "suspended at s3://b/x/ml/mnist/ckpt"),
                suspended=("True", "UserSuspended", "suspended at s3://b/x/ml/mnist/ckpt"),
            ),
        ),
        "Suspended",
        "UserSuspended: suspended at s3://b/x/ml/mnist/ckpt",
        id="suspended",
    ),
    pytest.param(
        job(
            generation=2,
            observed=1,
            phase="Suspended",
            conditions=running_conditions(suspended=("True", "UserSuspended", "suspended")),
        ),
        "Progressing",
        "waiting for the operator to observe generation 2",
        id="resume-committed-not-yet-observed",
    ),
    pytest.param(
        job(with_status=False),
        "Progressing",
        "waiting for the operator to observe generation 1",
        id="just-created-no-status",
    ),
    pytest.param(
        job(generation=4, observed=None, phase=None, conditions=[]),
        "Progressing",
        "waiting for the operator to observe generation 4",
        id="status-without-observed-generation",
    ),
    pytest.param(
        job(
            iteration=42,
            conditions=running_conditions(running=("Unknown", "HeartbeatStale", STALE)),
        ),
        "Progressing",
        f"HeartbeatStale: {STALE}",
        id="heartbeat-stale",
    ),
    pytest.param(
        job(iteration=17, conditions=running_conditions()),
        "Progressing",
        "Running, iteration 17: worker pod mnist-worker-1 is running",
        id="running-with-iteration",
    ),
    pytest.param(
        job(
            phase="Suspending",
            iteration=20,
            conditions=running_conditions(
                running=("False", "Suspending", "waiting for the worker to save a checkpoint")
            ),
        ),
        "Progressing",
        "Suspending, iteration 20: waiting for the worker to save a checkpoint",
        id="suspending-is-not-yet-suspended",
    ),
    pytest.param(
        job(
            phase="Pending",
            conditions=running_conditions(
                running=("False", "Unschedulable", "0/3 nodes have nvidia.com/gpu")
            ),
        ),
        "Progressing",
        "Pending: 0/3 nodes have nvidia.com/gpu",
        id="pending-unschedulable-no-iteration",
    ),
    pytest.param(
        job(
            phase="Pending",
            conditions=running_conditions(
                running=("Unknown", "Initializing", "the job was just created")
            ),
        ),
        "Progressing",
        "Pending: the job was just created",
        id="running-unknown-but-not-stale",
    ),
    pytest.param(
        job(
            phase="Restarting",
            iteration=30,
            conditions=running_conditions(
                running=("False", "Restarting", "starting worker pod mnist-worker-2")
            ),
        ),
        "Progressing",
        "Restarting, iteration 30: starting worker pod mnist-worker-2",
        id="restarting-after-a-failure",
    ),
]


@pytest.mark.parametrize("order", ["as-written", "reversed"])
@pytest.mark.parametrize(("obj", "want_status", "want_message"), CASES)
def test_health_maps_conditions_by_type(
    obj: dict[str, Any], want_status: str, want_message: str, order: str
) -> None:
    obj = copy.deepcopy(obj)
    if order == "reversed" and "status" in obj:
        obj["status"]["conditions"].reverse()  # position must not matter
    status, message = run_health(obj)
    assert status in ARGOCD_HEALTH
    assert (status, message) == (want_status, want_message)


def test_health_ignores_condition_types_it_does_not_know() -> None:
    # Another controller may add its own condition, and it may come last: a check
    # reading conditions[-1] would call this job stalled; only the types we own decide.
    conditions = [*running_conditions(), cond("Stalled", "True", "Other", "unrelated")]
    status, message = run_health(job(iteration=3, conditions=conditions))
    assert status == "Progressing" and message.startswith("Running, iteration 3")


def _yaml_blocks(markdown: str) -> list[Any]:
    blocks = re.findall(r"^```yaml\n(.*?)^```", markdown, flags=re.S | re.M)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


def test_gitops_doc_embeds_the_shipped_health_check() -> None:
    # The argocd-cm example in the docs is a copy: it must be the chart's file, byte for byte.
    shipped = HEALTH_LUA.read_text()
    configmaps = [
        doc
        for doc in _yaml_blocks(GITOPS_DOC.read_text())
        if isinstance(doc, dict) and ARGOCD_KEY in (doc.get("data") or {})
    ]
    assert configmaps, f"docs/gitops.md shows no argocd-cm with {ARGOCD_KEY}"
    for configmap in configmaps:
        assert configmap["metadata"]["name"] == "argocd-cm"
        assert configmap["data"][ARGOCD_KEY] == shipped, (
            "docs/gitops.md's health check differs from charts/kubetune/argocd-health.lua: "
            "copy the file into the docs"
        )
