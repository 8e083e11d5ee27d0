"""Acceptance of the local cluster's node agent: pods run as local processes
and end as the kubelet would report them; logs, environment, volumes,
termination messages and restarts behave as on a real node."""

# The typed client takes models and marks every field Optional; these tests pass
# manifests as dicts (the client validates them) and read fields the API always sets.
# mypy: disable-error-code="arg-type,union-attr,index"

from __future__ import annotations

import datetime
import json
import re
import time
from typing import Any

import pytest

from localcluster.testing import Cluster, python_pod

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _conditions(pod: Any) -> dict[str, Any]:
    return {c.type: c for c in pod.status.conditions}


def test_pod_succeeds_and_kubectl_logs_shows_its_output(cluster: Cluster, namespace: str) -> None:
    code = "import sys; print('hello from a pod'); print('and from stderr', file=sys.stderr)"
    cluster.core.create_namespaced_pod(namespace, python_pod("ok", code))

    pod = cluster.wait_pod_phase(namespace, "ok", ("Succeeded", "Failed"))

    assert pod.status.phase == "Succeeded"
    assert pod.spec.node_name.startswith("kt-")
    assert pod.status.pod_ip == "127.0.0.1" and pod.status.host_ip == "127.0.0.1"
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (0, "Completed")
    assert term.started_at and term.finished_at
    conds = _conditions(pod)
    assert conds["PodScheduled"].status == "True"
    assert conds["Initialized"].status == "True"
    assert (conds["Ready"].status, conds["Ready"].reason) == ("False", "PodCompleted")
    logs = cluster.logs(namespace, "ok")
    assert "hello from a pod" in logs and "and from stderr" in logs


def test_failing_command_ends_failed_with_its_exit_code(cluster: Cluster, namespace: str) -> None:
    code = "import sys; print('about to fail'); sys.exit(3)"
    cluster.core.create_namespaced_pod(namespace, python_pod("bad", code))

    pod = cluster.wait_pod_phase(namespace, "bad", ("Succeeded", "Failed"))

    assert pod.status.phase == "Failed"
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (3, "Error")
    assert "about to fail" in cluster.logs(namespace, "bad")


def test_killed_process_reports_signal_and_exit_code(cluster: Cluster, namespace: str) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    cluster.core.create_namespaced_pod(namespace, python_pod("killed", code))

    pod = cluster.wait_pod_phase(namespace, "killed", ("Succeeded", "Failed"))

    term = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, term.exit_code, term.signal) == ("Failed", 137, 9)


def test_termination_message_from_file_and_from_logs(cluster: Cluster, namespace: str) -> None:
    from_file = "open('/dev/termination-log', 'w').write('trained 42 steps')"
    custom = "open('/mnt/kubetune-e2e/message', 'w').write('custom path'); raise SystemExit(1)"
    from_logs = "print('line one'); print('last words'); raise SystemExit(2)"
    cluster.core.create_namespaced_pod(namespace, python_pod("file", from_file))
    cluster.core.create_namespaced_pod(
        namespace,
        python_pod(
            "custom", custom, container={"terminationMessagePath": "/mnt/kubetune-e2e/message"}
        ),
    )
    cluster.core.create_namespaced_pod(
        namespace,
        python_pod(
            "logs", from_logs, container={"terminationMessagePolicy": "FallbackToLogsOnError"}
        ),
    )

    messages = {}
    for name in ("file", "custom", "logs"):
        pod = cluster.wait_pod_phase(namespace, name, ("Succeeded", "Failed"))
        messages[name] = pod.status.container_statuses[0].state.terminated.message

    assert messages["file"] == "trained 42 steps"
    assert messages["custom"] == "custom path"
    assert "last words" in messages["logs"] and "line one" in messages["logs"]


def test_environment_is_the_pods_own(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}}
    )
    cluster.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"LR": "0.01", "EPOCHS": "3"}}
    )
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    container = {
        "env": [
            {"name": "PLAIN", "value": "x"},
            {"name": "EXPANDED", "value": "$(PLAIN)-y-$$(PLAIN)"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {
                "name": "LR_COPY",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LR"}},
            },
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
    }
    cluster.core.create_namespaced_pod(namespace, python_pod("env", code, container=container))

    pod = cluster.wait_pod_phase(namespace, "env", ("Succeeded", "Failed"))
    assert pod.status.phase == "Succeeded", cluster.logs(namespace, "env")
    env = json.loads(cluster.logs(namespace, "env"))

    assert env["PLAIN"] == "x" and env["EXPANDED"] == "x-y-$(PLAIN)"
    assert env["TOKEN"] == "s3cr3t" and env["LR_COPY"] == "0.01"
    assert (env["CFG_LR"], env["CFG_EPOCHS"]) == ("0.01", "3")
    assert (env["POD_NAME"], env["POD_NS"], env["NODE"]) == ("env", namespace, pod.spec.node_name)
    assert env["HOSTNAME"] == "env"
    assert env["PATH"].startswith(str(cluster.repo / ".venv" / "bin"))
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # no GPU asked: none visible
    # Nothing of the node agent's own environment leaks in.
    pod_set = {"PLAIN", "EXPANDED", "TOKEN", "LR_COPY", "POD_NAME", "POD_NS", "NODE"}
    allowed = {"PATH", "HOME", "HOSTNAME", "LANG", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"}
    allowed |= pod_set | {"CFG_LR", "CFG_EPOCHS"}
    leaked = {k for k in env if k not in allowed and not k.startswith("KUBERNETES_")}
    assert not leaked


def test_volumes_init_containers_and_working_dir(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "files"}, "data": {"config.json": '{"lr": 0.1}'}}
    )
    init = {
        "name": "prepare",
        "image": "kubetune-local",
        "command": [
            "python",
            "-c",
            "open('/mnt/kubetune-e2e/scratch/from-init', 'w').write('seeded')",
        ],
        "volumeMounts": [{"name": "scratch", "mountPath": "/mnt/kubetune-e2e/scratch"}],
    }
    code = (
        "import os; print(open('from-init').read()); print(os.getcwd());"
        "print(open('/mnt/kubetune-e2e/config/config.json').read());"
        "print(sorted(os.listdir('/var/run/secrets/kubernetes.io/serviceaccount')))"
    )
    container = {
        "workingDir": "/mnt/kubetune-e2e/scratch",
        "volumeMounts": [
            {"name": "scratch", "mountPath": "/mnt/kubetune-e2e/scratch"},
            {"name": "files", "mountPath": "/mnt/kubetune-e2e/config", "readOnly": True},
        ],
    }
    spec = {
        "initContainers": [init],
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "files", "configMap": {"name": "files"}},
        ],
    }
    cluster.core.create_namespaced_pod(
        namespace, python_pod("vols", code, container=container, extra_spec=spec)
    )

    pod = cluster.wait_pod_phase(namespace, "vols", ("Succeeded", "Failed"))

    out = cluster.logs(namespace, "vols")
    assert pod.status.phase == "Succeeded", out
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 0
    lines = out.splitlines()
    assert lines[:3] == ["seeded", "/mnt/kubetune-e2e/scratch", '{"lr": 0.1}']
    assert lines[3] == "['ca.crt', 'namespace', 'token']"


def test_on_failure_restarts_in_place_and_keeps_previous_logs(
    cluster: Cluster, namespace: str
) -> None:
    code = (
        "import os, sys\n"
        "first = not os.path.exists('/mnt/kubetune-e2e/state/ran')\n"
        "open('/mnt/kubetune-e2e/state/ran', 'a').close()\n"
        "print('first run' if first else 'second run')\n"
        "sys.exit(1 if first else 0)\n"
    )
    container = {"volumeMounts": [{"name": "state", "mountPath": "/mnt/kubetune-e2e/state"}]}
    spec = {"volumes": [{"name": "state", "emptyDir": {}}]}
    cluster.core.create_namespaced_pod(
        namespace,
        python_pod("retry", code, restart="OnFailure", container=container, extra_spec=spec),
    )

    pod = cluster.wait_pod_phase(namespace, "retry", ("Succeeded", "Failed"), timeout=60)

    status = pod.status.container_statuses[0]
    assert pod.status.phase == "Succeeded"
    assert status.restart_count == 1
    assert status.last_state.terminated.exit_code == 1
    assert cluster.logs(namespace, "retry").strip() == "second run"
    assert cluster.logs(namespace, "retry", "--previous").strip() == "first run"


def test_logs_follow_tail_and_timestamps(cluster: Cluster, namespace: str) -> None:
    code = "import time\nfor i in range(6):\n    print(f'line {i}', flush=True); time.sleep(0.4)\n"
    cluster.core.create_namespaced_pod(namespace, python_pod("talk", code))
    cluster.wait_pod_phase(namespace, "talk", ("Running", "Succeeded"))

    followed = cluster.logs(namespace, "talk", "--follow")
    cluster.wait_pod_phase(namespace, "talk", ("Succeeded",))
    tail = cluster.logs(namespace, "talk", "--tail=2")
    stamped = cluster.logs(namespace, "talk", "--timestamps")

    assert followed.splitlines() == [f"line {i}" for i in range(6)]
    assert tail.splitlines() == ["line 4", "line 5"]
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z line \d", ln)
        for ln in stamped.splitlines()
    ), stamped


def test_status_patch_keeps_conditions_the_agent_does_not_own(
    cluster: Cluster, namespace: str
) -> None:
    code = "import time; time.sleep(3)"
    cluster.core.create_namespaced_pod(namespace, python_pod("keep", code))
    cluster.wait_pod_phase(namespace, "keep", ("Running",))
    # With a fresh lastTransitionTime, the disruption controller leaves it for 2 minutes.
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {
        "type": "DisruptionTarget",
        "status": "True",
        "lastTransitionTime": stamp,
        "reason": "EvictionByEvictionAPI",
        "message": "set by the test",
    }
    cluster.core.patch_namespaced_pod_status(
        "keep", namespace, {"status": {"conditions": [condition]}}
    )

    pod = cluster.wait_pod_phase(namespace, "keep", ("Succeeded", "Failed"))

    conds = _conditions(pod)
    assert (
        "DisruptionTarget" in conds and conds["DisruptionTarget"].reason == "EvictionByEvictionAPI"
    )
    assert conds["Ready"].status == "False"


def test_ready_while_running(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_pod(
        namespace, python_pod("runner", "import time; time.sleep(60)")
    )
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/runner", "--timeout=60s")

    pod = cluster.pod(namespace, "runner")

    status = pod.status.container_statuses[0]
    assert pod.status.phase == "Running" and status.ready and status.started
    assert status.state.running.started_at is not None
    begin = time.monotonic()
    cluster.core.delete_namespaced_pod("runner", namespace)
    cluster.wait_pod_gone(namespace, "runner")
    assert time.monotonic() - begin < 10  # python's default SIGTERM action ends it at once


def test_a_volume_over_the_projects_parent_hides_neither_it_nor_other_volumes(
    cluster: Cluster, namespace: str
) -> None:
    # The chart mounts an emptyDir on /tmp; with the project folder (the pods'
    # "image") under it, the pod must still find its files, as a container does.
    parent = str(cluster.repo.parent)
    if parent == "/":
        pytest.skip("the project folder sits at the root: nothing to mount over")
    code = "import os; print(os.path.exists('README.md'), os.listdir('/scratch'))"
    pod = python_pod(
        "shadow",
        code,
        extra_spec={"volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}]},
        container={
            "volumeMounts": [
                {"name": "a", "mountPath": parent},
                {"name": "b", "mountPath": "/scratch"},
            ]
        },
    )
    cluster.core.create_namespaced_pod(namespace, pod)
    done = cluster.wait_pod_phase(namespace, "shadow", ("Succeeded", "Failed"))
    assert done.status.phase == "Succeeded", cluster.logs(namespace, "shadow")
    assert "True []" in cluster.logs(namespace, "shadow")
