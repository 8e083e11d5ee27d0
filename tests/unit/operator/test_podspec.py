"""The worker pod builder: deterministic, owned, least privilege, template merged."""

from __future__ import annotations

import copy
import json

import operator_factories as factories
import pytest

from kubetune_contract import WORKER_SPEC_ENV, WorkerSpec
from kubetune_operator.model import JobView
from kubetune_operator.podspec import PodSettings, build_worker_pod, merge_security_context

SETTINGS = PodSettings(default_image="img:1", termination_grace_seconds=90)


def make_job(**spec: object) -> JobView:
    base: dict[str, object] = {
        "trainable": "examples.mnist:Train",
        "config": {"lr": 0.1},
        "stop": {"training_iteration": 10},
        "checkpoint": {"frequency": 2},
        "storage": {
            "uri": "s3://bucket/exp/",
            "endpointURL": "http://s3:9000",
            "secretRef": {"name": "creds"},
        },
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    }
    base.update(spec)
    return factories.job(base, name="mnist", namespace="team", uid="u-1", generation=3)


def env_of(pod: dict) -> dict[str, dict]:
    return {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}


def test_same_input_same_pod():
    assert build_worker_pod(make_job(), 2, SETTINGS) == build_worker_pod(make_job(), 2, SETTINGS)


def test_pod_identity_owner_and_labels():
    pod = build_worker_pod(make_job(), 2, SETTINGS)
    meta = pod["metadata"]
    assert meta["name"] == "mnist-worker-2" and meta["namespace"] == "team"
    owner = meta["ownerReferences"][0]
    assert owner["uid"] == "u-1" and owner["controller"] and owner["kind"] == "TrainableJob"
    assert meta["labels"]["kubetune.io/job-uid"] == "u-1"
    assert meta["labels"]["kubetune.io/attempt"] == "2"


def test_worker_container_and_spec():
    pod = build_worker_pod(make_job(), 1, SETTINGS)
    spec = pod["spec"]
    worker = spec["containers"][0]
    assert worker["name"] == "worker" and worker["image"] == "img:1"
    assert worker["command"] == ["kubetune-worker"]
    assert worker["resources"] == {"limits": {"nvidia.com/gpu": "1"}}  # canonical string
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["terminationGracePeriodSeconds"] == 90


def test_worker_spec_env_carries_the_job():
    env = env_of(build_worker_pod(make_job(restoreFrom="s3://b/x/checkpoint_000004"), 1, SETTINGS))
    ws = WorkerSpec(**json.loads(env[WORKER_SPEC_ENV]["value"]))
    assert ws.run_uri == "s3://bucket/exp/team/mnist"
    assert ws.run_id == "u-1" and ws.trainable == "examples.mnist:Train"
    assert ws.config == {"lr": 0.1} and ws.stop == {"training_iteration": 10}
    assert ws.restore_from == "s3://b/x/checkpoint_000004"
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://s3:9000"


def test_credentials_only_by_secret_reference():
    pod = build_worker_pod(make_job(), 1, SETTINGS)
    env = env_of(pod)
    ref = env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "creds", "key": "AWS_SECRET_ACCESS_KEY", "optional": False}
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert "value" not in env["AWS_ACCESS_KEY_ID"]


def test_no_secret_ref_means_pod_credentials():
    storage = {"uri": "s3://bucket/exp"}
    env = env_of(build_worker_pod(make_job(storage=storage), 1, SETTINGS))
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_ENDPOINT_URL" not in env


def test_template_merges_without_taking_over():
    template = {
        "metadata": {"labels": {"team": "a", "kubetune.io/job": "evil"}},
        "spec": {
            "nodeSelector": {"gpu": "a100"},
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "serviceAccountName": "trainer",
            "terminationGracePeriodSeconds": 600,
            "restartPolicy": "Always",
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [
                {
                    "name": "worker",
                    "env": [{"name": "PYTHONPATH", "value": "/src"}, {"name": WORKER_SPEC_ENV}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "image": "ignored-because-spec-image-wins",
                },
                {"name": "sidecar", "image": "busybox"},
            ],
        },
    }
    pod = build_worker_pod(make_job(template=template, image="mine:2"), 1, SETTINGS)
    spec = pod["spec"]
    assert pod["metadata"]["labels"]["team"] == "a"
    assert pod["metadata"]["labels"]["kubetune.io/job"] == "mnist"
    assert spec["nodeSelector"] == {"gpu": "a100"} and spec["serviceAccountName"] == "trainer"
    assert spec["terminationGracePeriodSeconds"] == 600
    assert spec["restartPolicy"] == "Never"
    worker, sidecar = spec["containers"]
    assert worker["image"] == "mine:2" and sidecar["name"] == "sidecar"
    env = {e["name"]: e for e in worker["env"]}
    assert env["PYTHONPATH"]["value"] == "/src"
    assert "value" in env[WORKER_SPEC_ENV]  # the operator's own value, not the template's
    assert worker["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]


# The restricted Pod Security Standard's four container/pod settings.
RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_restricted_defaults_without_a_template():
    spec = build_worker_pod(make_job(), 1, SETTINGS)["spec"]
    assert spec["securityContext"] == RESTRICTED_POD
    assert spec["containers"][0]["securityContext"] == RESTRICTED_CONTAINER
    assert "runAsUser" not in spec["securityContext"]  # the image's numeric USER is enough


@pytest.mark.parametrize(
    ("defaults", "theirs", "expected"),
    [
        (RESTRICTED_POD, None, RESTRICTED_POD),
        (RESTRICTED_POD, {}, RESTRICTED_POD),
        (
            RESTRICTED_POD,
            {"runAsUser": 1000, "fsGroup": 2000},
            {**RESTRICTED_POD, "runAsUser": 1000, "fsGroup": 2000},
        ),
        (RESTRICTED_POD, {"runAsNonRoot": False}, {**RESTRICTED_POD, "runAsNonRoot": False}),
        (
            RESTRICTED_POD,
            {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
            {
                "runAsNonRoot": True,
                "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
            },
        ),
        (RESTRICTED_POD, {"seccompProfile": None}, {"runAsNonRoot": True}),
        (
            RESTRICTED_CONTAINER,
            {"capabilities": {"add": ["NET_BIND_SERVICE"]}},
            {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
            },
        ),
        (
            RESTRICTED_CONTAINER,
            {"capabilities": {"drop": ["NET_RAW"]}},
            {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["NET_RAW"]}},
        ),
        (
            RESTRICTED_CONTAINER,
            {"capabilities": {"drop": None}},
            {"allowPrivilegeEscalation": False, "capabilities": {}},
        ),
        (
            RESTRICTED_CONTAINER,
            {"allowPrivilegeEscalation": True, "readOnlyRootFilesystem": True},
            {
                "allowPrivilegeEscalation": True,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
        ),
    ],
    ids=[
        "none",
        "empty",
        "adds-fields",
        "overrides-one-field",
        "replaces-seccomp-whole",
        "null-removes",
        "capabilities-add-keeps-drop",
        "capabilities-drop-replaced",
        "capabilities-drop-null",
        "container-fields-win",
    ],
)
def test_merge_security_context(defaults, theirs, expected):
    before = copy.deepcopy(defaults)
    assert merge_security_context(defaults, theirs) == expected
    assert defaults == before  # the module's defaults are never changed in place


def test_template_security_context_wins_field_by_field():
    template = {
        "spec": {
            "securityContext": {"runAsUser": 1000, "runAsNonRoot": False},
            "containers": [
                {"name": "worker", "securityContext": {"readOnlyRootFilesystem": True}},
                {"name": "sidecar", "image": "proxy", "securityContext": {"runAsUser": 7}},
            ],
            "initContainers": [{"name": "fetch", "image": "busybox"}],
        }
    }
    spec = build_worker_pod(make_job(template=template), 1, SETTINGS)["spec"]
    assert spec["securityContext"] == {
        "runAsNonRoot": False,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    worker, sidecar = spec["containers"]
    assert worker["securityContext"] == {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True}
    # Sidecars and init containers get the defaults too: one of them alone
    # would make restricted admission refuse the whole pod.
    assert sidecar["securityContext"] == {**RESTRICTED_CONTAINER, "runAsUser": 7}
    assert spec["initContainers"][0]["securityContext"] == RESTRICTED_CONTAINER
    assert template["spec"]["initContainers"][0] == {"name": "fetch", "image": "busybox"}


def test_security_defaults_are_not_shared_between_pods():
    first = build_worker_pod(make_job(), 1, SETTINGS)
    first["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"].append("X")
    first["spec"]["securityContext"]["seccompProfile"]["type"] = "Unconfined"
    second = build_worker_pod(make_job(), 1, SETTINGS)["spec"]
    assert second["containers"][0]["securityContext"] == RESTRICTED_CONTAINER
    assert second["securityContext"] == RESTRICTED_POD
